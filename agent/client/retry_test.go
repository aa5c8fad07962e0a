package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestRetryAfter: a 429 retry_later answer's Retry-After reaches the
// caller as APIError.RetryAfter, bounded by MaxRetryAfter; a header the
// agent cannot read asks for no wait.
func TestRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		header string
		want   time.Duration
	}{
		{"7", 7 * time.Second},
		{" 0 ", 0},
		{"", 0},
		{"-3", 0},
		{"1.5", 0},
		{"Wed, 21 Oct 2026 07:28:00 GMT", 0},
		{"3600", MaxRetryAfter},
		{"99999999999999999999999", MaxRetryAfter},
	} {
		ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tt.header != "" {
				w.Header().Set(wire.RetryAfterHeader, tt.header)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"code":"retry_later","message":"busy"}`))
		}))
		c := &Client{BaseURL: ts.URL, HTTP: ts.Client()}
		err := c.post(context.Background(), wire.PathEnroll, struct{}{}, &struct{}{})
		ts.Close()
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTooManyRequests || apiErr.Code != wire.CodeRetryLater || apiErr.RetryAfter != tt.want {
			t.Errorf("Retry-After %q: error %#v, want a 429 retry_later asking for %v", tt.header, err, tt.want)
		}
	}
}

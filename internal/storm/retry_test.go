package storm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestPostHonoursRetryAfter: a request answered 429 with Retry-After is
// sent again after the wait and counted as a retry, not as an error; past
// MaxRetries it is an error; a refusal without Retry-After is not retried.
func TestPostHonoursRetryAfter(t *testing.T) {
	var calls atomic.Int32
	busyFor := int32(2)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.URL.Path == "/refuse":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"code":"ek_untrusted","message":"no"}`))
		case n <= busyFor || r.URL.Path == "/busy":
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			_, _ = w.Write([]byte(`{"ok":true}`))
		}
	}))
	defer ts.Close()
	cfg := &Config{MaxRetries: 3, MaxRetryAfter: time.Second}
	c := ts.Client()
	ctx := context.Background()

	var out struct{ OK bool }
	retries, err := cfg.post(ctx, c, ts.URL+"/ok", struct{}{}, &out)
	if err != nil || retries != int(busyFor) || !out.OK {
		t.Errorf("after %d answers 429: retries %d, err %v, decoded %v; want %d retries and the answer", busyFor, retries, err, out.OK, busyFor)
	}

	calls.Store(0)
	retries, err = cfg.post(ctx, c, ts.URL+"/busy", struct{}{}, &out)
	if err == nil || retries != cfg.MaxRetries {
		t.Errorf("always 429: retries %d, err %v; want %d retries and an error", retries, err, cfg.MaxRetries)
	}

	retries, err = cfg.post(ctx, c, ts.URL+"/refuse", struct{}{}, &out)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || se.Code != "ek_untrusted" || retries != 0 {
		t.Errorf("403: retries %d, err %v; want no retry and a StatusError ek_untrusted", retries, err)
	}
}

package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestFailover: a verifier replica that cannot be reached sends the next
// request to the next replica, in turn; a refusal or the caller's
// cancellation does not.
func TestFailover(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // connections to it are refused
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"code":"host_not_admitted","message":"no"}`))
	}))
	defer refusing.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	defer up.Close()

	c := &Client{BaseURL: down.URL, Alternates: []string{refusing.URL, up.URL}, HTTP: http.DefaultClient}
	ctx := context.Background()
	if _, err := c.RenewIdentity(ctx); err == nil {
		t.Fatal("a request to a closed server succeeded")
	}
	if c.BaseURL != refusing.URL {
		t.Fatalf("after a transport error BaseURL = %s, want the next replica %s", c.BaseURL, refusing.URL)
	}
	var ae *APIError
	if _, err := c.RenewIdentity(ctx); !errors.As(err, &ae) || ae.Code != wire.CodeHostNotAdmitted {
		t.Fatalf("the refusing replica: %v", err)
	}
	if c.BaseURL != refusing.URL {
		t.Fatalf("a refusal moved BaseURL to %s", c.BaseURL)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.RenewIdentity(cancelled); err == nil || c.BaseURL != refusing.URL {
		t.Fatalf("a cancelled request: %v, BaseURL %s; want an error and no move", err, c.BaseURL)
	}

	// In turn: past the last alternate, back to the first endpoint.
	c = &Client{BaseURL: down.URL, Alternates: []string{down.URL + "/b"}, HTTP: http.DefaultClient}
	for _, want := range []string{down.URL + "/b", down.URL, down.URL + "/b"} {
		c.RenewIdentity(ctx)
		if c.BaseURL != want {
			t.Fatalf("BaseURL = %s, want %s", c.BaseURL, want)
		}
	}
	c = &Client{BaseURL: down.URL, HTTP: http.DefaultClient}
	c.RenewIdentity(ctx)
	if c.BaseURL != down.URL {
		t.Fatalf("without alternates BaseURL moved to %s", c.BaseURL)
	}
}

package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestFailover: a verifier replica that cannot be reached sends the next
// request to the next replica, in turn; a refusal or the caller's
// cancellation does not.
func TestFailover(t *testing.T) {
	down := httptest.NewTLSServer(http.NotFoundHandler())
	down.Close() // connections to it are refused
	refusing := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"code":"host_not_admitted","message":"no"}`))
	}))
	defer refusing.Close()
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	defer up.Close()
	// One CA for the three: httptest's.
	httpc := up.Client()

	c := &Client{BaseURL: down.URL, Alternates: []string{refusing.URL, up.URL}, HTTP: httpc}
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
	c = &Client{BaseURL: down.URL, Alternates: []string{down.URL + "/b"}, HTTP: httpc}
	for _, want := range []string{down.URL + "/b", down.URL, down.URL + "/b"} {
		c.RenewIdentity(ctx)
		if c.BaseURL != want {
			t.Fatalf("BaseURL = %s, want %s", c.BaseURL, want)
		}
	}
	c = &Client{BaseURL: down.URL, HTTP: httpc}
	c.RenewIdentity(ctx)
	if c.BaseURL != down.URL {
		t.Fatalf("without alternates BaseURL moved to %s", c.BaseURL)
	}
}

// TestNoCleartextFailover: a rogue DHCP server names a cleartext alternate
// and a man in the middle answers for the real endpoint with a certificate
// the agent's CA did not sign. The agent refuses the certificate, and never
// sends anything in clear: http:// endpoints are not tried at all.
func TestNoCleartextFailover(t *testing.T) {
	appliance := httptest.NewTLSServer(http.NotFoundHandler()) // the CA the agent carries
	defer appliance.Close()
	mitm := httptest.NewUnstartedServer(http.NotFoundHandler())
	mitm.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	mitm.StartTLS()
	defer mitm.Close()
	reached := false
	rogue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"cert":"AQID","not_after":"2030-01-01T00:00:00Z"}`))
	}))
	defer rogue.Close()

	c := &Client{BaseURL: mitm.URL, Alternates: []string{rogue.URL}, HTTP: appliance.Client()}
	for range 3 {
		if _, err := c.RenewIdentity(context.Background()); err == nil {
			t.Fatalf("an answer was taken from %s", c.BaseURL)
		}
	}
	if reached || c.BaseURL != mitm.URL {
		t.Fatalf("the agent reached the cleartext alternate (reached %v, BaseURL %s)", reached, c.BaseURL)
	}
	c = &Client{BaseURL: rogue.URL, HTTP: appliance.Client()}
	if _, err := c.RenewIdentity(context.Background()); !errors.Is(err, ErrNotHTTPS) || reached {
		t.Fatalf("an http:// endpoint: %v (reached %v), want ErrNotHTTPS before any request", err, reached)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mitm"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

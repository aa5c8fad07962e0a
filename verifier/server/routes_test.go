package server_test

import (
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestNoCAIdentityRoutes: without a CA the identity and boot-file routes do
// not exist. Unauthenticated requests get an answer (404), never a handler
// panic, and a server with boot files but no CA is refused.
func TestNoCAIdentityRoutes(t *testing.T) {
	f := newFixture(t, tpmtest.NewCA(t).Roots())
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, wire.PathIdentity},
		{http.MethodPost, wire.PathIdentityRenew},
		{http.MethodGet, wire.PathIdentityCRL},
		{http.MethodGet, wire.PathBoot + "kernel"},
	} {
		req, err := http.NewRequest(c.method, f.ts.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := f.ts.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (did the handler panic?)", c.method, c.path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s without a CA: %s, want 404", c.method, c.path, resp.Status)
		}
	}

	st := f.st
	_, err := server.New(server.Options{Roots: tpmtest.NewCA(t).Roots(), Policy: f.pol, Store: st,
		Boot: &server.BootOS{Kernel: "vmlinuz", Initrd: "initrd"}})
	if !errors.Is(err, server.ErrBootWithoutCA) {
		t.Fatalf("New with boot files and no CA: %v, want ErrBootWithoutCA", err)
	}
}

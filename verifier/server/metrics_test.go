package server_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestRefusalsAreCounted(t *testing.T) {
	ca := tpmtest.NewCA(t)
	pol, err := policy.Parse([]byte("name: x\nsecure_boot: {pk: {allow_any: true}, kek: {allow_any: true}, db: {allow_any: true}}\ncode_integrity: {allow_any_boot_app: true, allow_any_signer: true}\nfirmware: {allow_any: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	m := server.NewMetrics(reg)
	srv, err := server.New(server.Options{Roots: ca.Roots(), Policy: pol, Store: st, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for range 3 {
		resp, err := http.Post(ts.URL+wire.PathEnroll, "application/json", strings.NewReader("{not json"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Post(ts.URL+wire.PathQuote, "application/json", strings.NewReader(`{"session":"nope"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues(string(wire.CodeBadRequest))); got != 3 {
		t.Errorf("bad_request refusals = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.Refusals.WithLabelValues(string(wire.CodeUnknownSession))); got != 1 {
		t.Errorf("unknown_session refusals = %v, want 1", got)
	}
}

package server_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestOversizedFieldsRefused: the attestation API refuses a request with
// an EK certificate carrying trailing bytes (403 ek_untrusted) and one with
// a field over its limit (400 bad_request naming the field), and a quote
// with a field over its limit is refused without using up its session: the
// honest quote that follows is still admitted, and what is stored is the
// canonical EK certificate.
func TestOversizedFieldsRefused(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	f := newFixture(t, ca.Roots())
	h := newHost(t, tp)

	req := h.enrollRequest()
	req.EKCert = append(bytes.Clone(h.ek.Cert), 0, 0, 0, 0)
	status, body := f.post(t, wire.PathEnroll, req)
	wantError(t, status, body, http.StatusForbidden, wire.CodeEKUntrusted)

	req.EKCert = append(bytes.Clone(h.ek.Cert), make([]byte, 700<<10)...)
	status, body = f.post(t, wire.PathEnroll, req)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeBadRequest)
	if !strings.Contains(string(body), "ek_cert") {
		t.Errorf("refusal %s does not name the field", body)
	}

	enr := f.enroll(t, h.enrollRequest())
	q := h.answer(t, enr, raw)
	big := q
	big.Signature = append(bytes.Clone(q.Signature), make([]byte, wire.MaxTPMStructBytes)...)
	status, body = f.post(t, wire.PathQuote, big)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeBadRequest)
	if !strings.Contains(string(body), "signature") {
		t.Errorf("refusal %s does not name the field", body)
	}
	if res := f.quote(t, q); res.Verdict != wire.VerdictPass {
		t.Fatalf("honest quote after the refusal: %+v", res)
	}
	as := attestations(t, f.st)
	if len(as) != 1 || !bytes.Equal(as[0].Evidence.EKCert, h.ek.Cert) {
		t.Fatalf("stored %d attestations, want 1 with the canonical EK certificate", len(as))
	}
}

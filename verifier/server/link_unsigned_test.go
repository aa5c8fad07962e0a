package server_test

import (
	"net"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// A request whose quote signature does not verify must not bind its link:
// "the link is the TPM's word only if the quote's signature verified". A
// PCR sent twice fails evidence.pcr_selection before Verify looks at the
// signature; that failure is not Signed, so the unsigned MAC is not bound.
func TestUnverifiedQuoteBindsNoLink(t *testing.T) {
	_, raw, h, rec, f := linkHost(t)

	victim := net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}
	q := h.answer(t, f.enroll(t, h.enrollRequest()), raw)
	q.MAC = victim.String()                        // a MAC the TPM never quoted
	q.Signature = []byte("not a signature at all") // nothing here is signed
	q.PCRs = append(q.PCRs, q.PCRs[0])             // fails before the signature is checked

	res := f.quote(t, q)
	if res.Verdict != wire.VerdictFail {
		t.Fatalf("verdict %+v, want fail", res)
	}
	t.Logf("reasons: %+v", res.Reasons)
	for _, r := range rec.get() {
		t.Errorf("Recorded bound %s to host %s from a quote whose signature was never verified", r.link.MAC, r.host)
	}
}

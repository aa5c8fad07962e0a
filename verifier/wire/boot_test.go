package wire_test

import (
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// The handover and the boundary are read by another program (the production
// OS) and by TPM policies: their encodings are pinned.
func TestHandoverShape(t *testing.T) {
	b, err := json.Marshal(wire.Handover{HostID: "h", AttestationID: 42, Verdict: wire.VerdictPass, PolicyDigest: "d", Verifier: "https://10.24.0.1:8443"})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"host_id":"h","attestation_id":42,"verdict":"pass","policy_digest":"d","verifier":"https://10.24.0.1:8443"}`
	if string(b) != want {
		t.Errorf("handover %s, want %s", b, want)
	}
	var back wire.Handover
	if err := json.Unmarshal(b, &back); err != nil || back.AttestationID != 42 || back.Verifier != "https://10.24.0.1:8443" {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestBoundary(t *testing.T) {
	if wire.BoundaryPCR != 15 {
		t.Errorf("BoundaryPCR = %d: sealing policies and enrolled hosts expect 15", wire.BoundaryPCR)
	}
	if got, want := wire.BoundaryDigest(), sha256.Sum256([]byte("bootgate: credentials unsealed")); got != want {
		t.Errorf("BoundaryDigest = %x, want %x", got, want)
	}
}

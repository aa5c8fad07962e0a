package softtpm

import (
	"crypto"
	"crypto/sha256"
	"fmt"

	"github.com/bootgate/bootgate/verifier/eventlog"
)

// Replay computes the SHA-256 PCR values a raw TCG event log describes, as
// the verifier replays it (eventlog.ReplayBank: StartupLocality and H-CRTM
// events included), for SetPCRs. The result maps each of the NumPCRs PCRs to its
// value, zero for PCRs without events; an event for another PCR is an
// error.
func Replay(raw []byte) (map[int][]byte, error) {
	bank, err := eventlog.ReplayBank(raw, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("replay event log: %w", err)
	}
	out := make(map[int][]byte, NumPCRs)
	for i := range NumPCRs {
		out[i] = make([]byte, sha256.Size)
	}
	for i, v := range bank.PCRs {
		if i < 0 || i >= NumPCRs {
			return nil, fmt.Errorf("replay event log: an event for PCR %d", i)
		}
		out[i] = v
	}
	return out, nil
}

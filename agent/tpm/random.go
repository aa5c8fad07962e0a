package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Random returns n bytes from the TPM's random number generator.
func (t *TPM) Random(n int) ([]byte, error) {
	var out []byte
	for len(out) < n {
		rsp, err := tpm2.GetRandom{BytesRequested: uint16(min(n-len(out), 32))}.Execute(t.tr)
		if err != nil {
			return nil, fmt.Errorf("get random: %w", err)
		}
		if len(rsp.RandomBytes.Buffer) == 0 {
			return nil, fmt.Errorf("get random: the TPM returned no bytes")
		}
		out = append(out, rsp.RandomBytes.Buffer...)
	}
	return out[:n], nil
}

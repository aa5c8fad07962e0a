package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestRequestFieldLimits: each field at its limit passes, one byte (or
// entry) over is refused with a *FieldError naming it.
func TestRequestFieldLimits(t *testing.T) {
	n := func(k int) []byte { return make([]byte, k) }
	for _, tt := range []struct {
		name  string
		check func() error
		field string // "" for accepted
	}{
		{"enroll at the limits", (&wire.EnrollRequest{EKCert: n(wire.MaxEKCertBytes), EKPublic: n(wire.MaxTPMStructBytes),
			AK: wire.AKParams{Public: n(wire.MaxTPMStructBytes), CreateData: n(wire.MaxTPMStructBytes),
				CreateAttestation: n(wire.MaxTPMStructBytes), CreateSignature: n(wire.MaxTPMStructBytes)}}).Check, ""},
		{"EK certificate", (&wire.EnrollRequest{EKCert: n(wire.MaxEKCertBytes + 1)}).Check, "ek_cert"},
		{"EK public", (&wire.EnrollRequest{EKPublic: n(wire.MaxTPMStructBytes + 1)}).Check, "ek_public"},
		{"AK creation data", (&wire.EnrollRequest{AK: wire.AKParams{CreateData: n(wire.MaxTPMStructBytes + 1)}}).Check, "ak.create_data"},
		{"quote at the limits", (&wire.QuoteRequest{Quote: n(wire.MaxTPMStructBytes), PCRs: make([]wire.PCR, wire.MaxPCRs)}).Check, ""},
		{"quote", (&wire.QuoteRequest{Quote: n(wire.MaxTPMStructBytes + 1)}).Check, "quote"},
		{"too many PCRs", (&wire.QuoteRequest{PCRs: make([]wire.PCR, wire.MaxPCRs+1)}).Check, "pcrs"},
		{"PCR digest", (&wire.QuoteRequest{PCRs: []wire.PCR{{}, {Digest: n(wire.MaxDigestBytes + 1)}}}).Check, "pcrs[1].digest"},
		{"session", (&wire.QuoteRequest{Session: strings.Repeat("a", wire.MaxSessionBytes+1)}).Check, "session"},
		{"boundary quote", (&wire.QuoteRequest{Boundary: &wire.BoundaryQuote{Quote: n(wire.MaxTPMStructBytes + 1)}}).Check, "boundary.quote"},
		{"boundary PCRs", (&wire.QuoteRequest{Boundary: &wire.BoundaryQuote{PCRs: make([]wire.PCR, wire.MaxPCRs+1)}}).Check, "boundary.pcrs"},
		{"boundary PCR digest", (&wire.QuoteRequest{Boundary: &wire.BoundaryQuote{PCRs: []wire.PCR{{Digest: n(wire.MaxDigestBytes + 1)}}}}).Check, "boundary.pcrs[0].digest"},
		{"identity", (&wire.QuoteRequest{Identity: &wire.IdentityRequest{CertifyInfo: n(wire.MaxTPMStructBytes + 1)}}).Check, "identity.certify_info"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var fe *wire.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, wire.ErrFieldTooLarge) || fe.Field != tt.field || fe.Size <= fe.Limit {
				t.Fatalf("Check = %v, want a FieldError for %s", err, tt.field)
			}
		})
	}
}

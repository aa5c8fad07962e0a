package attest

import "github.com/google/go-tpm/tpm2"

// CanonicalAK and CanonicalPublic expose the canonical-encoding checks to
// the tests and benchmarks; SlowCanonicalAK skips the quick checks.
var CanonicalAK = canonicalAK

func CanonicalPublic(b []byte) error {
	_, err := canonical[tpm2.TPMTPublic]("TPMT_PUBLIC", b, quickPublic)
	return err
}

func SlowCanonicalPublic(b []byte) error {
	_, err := canonical[tpm2.TPMTPublic]("TPMT_PUBLIC", b, nil)
	return err
}

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

// CheckAKStructure checks b as one of the AK's structures ("public",
// "creation data", "attestation", "signature") twice: as canonicalAK does
// (quick check first) and by the exact check alone.
func CheckAKStructure(which string, b []byte) (quick, exact error) {
	never := func([]byte) bool { return false }
	switch which {
	case "public":
		return checkCanonical[tpm2.TPMTPublic](which, b, quickPublic), checkCanonical[tpm2.TPMTPublic](which, b, never)
	case "creation data":
		return checkCanonical[tpm2.TPMSCreationData](which, b, quickCreationData), checkCanonical[tpm2.TPMSCreationData](which, b, never)
	case "attestation":
		return checkCanonical[tpm2.TPMSAttest](which, b, quickAttest), checkCanonical[tpm2.TPMSAttest](which, b, never)
	case "signature":
		return checkCanonical[tpm2.TPMTSignature](which, b, quickSignature), checkCanonical[tpm2.TPMTSignature](which, b, never)
	}
	panic("unknown AK structure " + which)
}

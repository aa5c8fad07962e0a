// Package keytype names the type of a TPM key from its public area, the same
// way on the agent and in the verifier: "rsa2048", "ecc-p256", "ecc-p384".
package keytype

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Of names pub's key type and size.
func Of(pub *tpm2.TPMTPublic) string {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		if d, err := pub.Parameters.RSADetail(); err == nil {
			return fmt.Sprintf("rsa%d", d.KeyBits)
		}
		return "rsa"
	case tpm2.TPMAlgECC:
		d, err := pub.Parameters.ECCDetail()
		if err != nil {
			return "ecc"
		}
		switch d.CurveID {
		case tpm2.TPMECCNistP256:
			return "ecc-p256"
		case tpm2.TPMECCNistP384:
			return "ecc-p384"
		case tpm2.TPMECCNistP521:
			return "ecc-p521"
		}
		return fmt.Sprintf("ecc-%#04x", uint16(d.CurveID))
	}
	return fmt.Sprintf("alg-%#04x", uint16(pub.Type))
}

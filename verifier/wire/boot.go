package wire

import (
	"crypto/sha1"
	"crypto/sha256"
)

// BoundaryPCR is bootgate's own PCR, which firmware, shim,
// GRUB and the Linux EFI stub leave alone. The agent extends it only after
// a pass, in every allocated PCR bank: with BoundaryDigest when it has
// unsealed the credentials, and with the production OS it loads. The verifier refuses a quote with it moved: it
// was taken after bootgate handed the boot over (by the production OS, or by
// whoever runs code there and relays its TPM's quotes for another machine).
// A host attests again only after a reboot.
const BoundaryPCR = 15

// BoundaryDigest is what the agent extends into BoundaryPCR once it has
// unsealed its credentials, so that they cannot be unsealed again in this
// boot: SHA-256("bootgate: credentials unsealed").
func BoundaryDigest() [sha256.Size]byte {
	return sha256.Sum256([]byte(boundary))
}

// BoundaryDigestSHA1 is what the agent extends into BoundaryPCR of the
// SHA-1 bank along with BoundaryDigest (one extend covers every allocated
// bank): SHA-1(BoundaryDigest()). It is a marker, not a measurement: a
// collision gains nothing.
func BoundaryDigestSHA1() [sha1.Size]byte {
	d := BoundaryDigest()
	return sha1.Sum(d[:])
}

const boundary = "bootgate: credentials unsealed"

// Handover is what the agent hands the production OS about the attestation
// that admitted it, as JSON in HandoverPath of the initramfs it appends:
//
//	{"host_id": "…", "attestation_id": 42, "verdict": "pass",
//	 "policy_digest": "…", "verifier": "https://10.24.0.1:8443"}
//
// Credentials and the identity are handed over beside it, in
// HandoverCredentialsDir and HandoverIdentityPath.
type Handover struct {
	HostID        string `json:"host_id"`
	AttestationID int64  `json:"attestation_id"`
	Verdict       string `json:"verdict"`
	PolicyDigest  string `json:"policy_digest"`
	// Verifier is the attestation API's base URL the agent used; the OS
	// reaches the appliance there with its identity.
	Verifier string `json:"verifier"`
}

// Paths of the handover in the production OS's initramfs (relative to its
// root; no leading slash, as in a cpio archive).
const (
	HandoverPath           = "bootgate/attestation.json"
	HandoverIdentityPath   = "bootgate/identity.pem"     // the identity certificate and its chain, PEM
	HandoverApplianceCA    = "bootgate/appliance-ca.pem" // the appliance CA, PEM
	HandoverCredentialsDir = "bootgate/credentials"      // one file per credential, named as Credential.Name
)

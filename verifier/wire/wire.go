// Package wire is bootgate's protocol: every fact the agent, the
// production-OS image and the verifier appliance must agree on, defined
// once. It is the only verifier package the agent imports, and it imports
// the standard library only (internal/archtest checks both). It holds:
//
//   - the JSON messages of the attestation API and their limits (wire.go);
//   - the computation both sides must agree on byte for byte
//     (QualifyingData);
//   - the one error envelope of the attestation and admin APIs and the typed
//     refusal codes (Error, Code);
//   - the DHCP vendor option that tells the agent where to attest (Vendor,
//     ParseVendor);
//   - the boundary PCR and its digest (BoundaryPCR, BoundaryDigest);
//   - the handover to the production OS (Handover);
//   - the console events the agent and the production OS print
//     (EventMarker, Event).
//
// Binary fields are TPM wire-format structures or DER, carried as base64 by
// encoding/json. docs/api.md documents the endpoints, bodies and error codes.
package wire

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// API paths.
const (
	PathEnroll = "/v1/attest/enroll"
	PathQuote  = "/v1/attest/quote"
	// PathBoot is the prefix of the production OS files a passing host
	// fetches: PathBoot+"kernel" and PathBoot+"initrd".
	PathBoot = "/v1/boot/"
	// PathIdentity answers a host presenting its identity (mTLS) with what
	// the appliance knows of it (WhoAmI); 403 unless the host is admitted.
	PathIdentity = "/v1/identity"
	// PathIdentityRenew reissues the identity a host presents (mTLS; body
	// {}) for the same TPM-resident key while the host is admitted, so that
	// its production OS keeps an identity without attesting again (quotes
	// taken after the boot was handed over are refused). Answer: Identity.
	PathIdentityRenew = "/v1/identity/renew"
	// PathIdentityCRL serves the CRL of host identities (DER, signed by the
	// issuing CA; no client certificate needed): every identity of a host
	// that stopped being admitted, until it expires.
	PathIdentityCRL = "/v1/identity/crl"
)

// WhoAmI is the appliance's answer on PathIdentity.
type WhoAmI struct {
	HostID            string    `json:"host_id"`
	State             string    `json:"state"`
	LastAttestationID int64     `json:"last_attestation_id"`
	NotAfter          time.Time `json:"not_after"`
}

// MaxBodyBytes bounds every request body the verifier reads. A firmware event log
// is typically 7–100 KB; 1 MiB leaves room for unusual ones and nothing else.
const MaxBodyBytes = 1 << 20

// AKParams describes an attestation key so that the verifier can check its
// properties: it was created by the TPM (CreateAttestation is a TPMS_ATTEST of
// type creation signed by the key itself) with restricted-signing attributes.
type AKParams struct {
	Public            []byte `json:"public"`             // TPMT_PUBLIC
	CreateData        []byte `json:"create_data"`        // TPMS_CREATION_DATA
	CreateAttestation []byte `json:"create_attestation"` // TPMS_ATTEST
	CreateSignature   []byte `json:"create_signature"`   // TPMT_SIGNATURE
}

// EnrollRequest starts an attestation: the agent presents its endorsement key,
// its certificate from the TPM's NV index, and a fresh attestation key.
type EnrollRequest struct {
	EKCert   []byte   `json:"ek_cert,omitempty"` // DER; absent only for allowlisted EKs
	EKPublic []byte   `json:"ek_public"`         // TPMT_PUBLIC of the EK
	AK       AKParams `json:"ak"`
}

// EnrollResponse carries the activation challenge and the nonce to quote over.
type EnrollResponse struct {
	Session    string `json:"session"`
	HostID     string `json:"host_id"`
	Credential []byte `json:"credential"` // the TPM2B_ID_OBJECT's contents (no size prefix), as go-tpm's tpm2.CreateCredential makes them
	Secret     []byte `json:"secret"`     // the TPM2B_ENCRYPTED_SECRET's contents (no size prefix)
	Nonce      []byte `json:"nonce"`      // qualifying data for TPM2_Quote; single use
	PCRs       []int  `json:"pcrs"`       // PCRs to quote, of the bank PCRBank names
	// PCRBank names the PCR bank to quote and send: BankSHA1, or absent
	// (BankSHA256, what every agent quoted before the field existed). The
	// verifier names the bank its policy describes; an agent refuses a
	// bank it does not know.
	PCRBank   string    `json:"pcr_bank,omitempty"`
	ExpiresAt time.Time `json:"expires_at"` // the session and its nonce expire then
}

// PCR bank names of EnrollResponse.PCRBank and Credential.PCRBank.
const (
	BankSHA256 = "sha256"
	BankSHA1   = "sha1"
)

// ErrUnknownBank reports a PCR bank name that is neither BankSHA256 nor
// BankSHA1.
var ErrUnknownBank = errors.New("unknown PCR bank")

// ParseBank reads a PCR bank name of EnrollResponse.PCRBank or
// Credential.PCRBank: "" and BankSHA256 are crypto.SHA256, BankSHA1 is
// crypto.SHA1; any other wraps ErrUnknownBank.
func ParseBank(name string) (crypto.Hash, error) {
	switch name {
	case "", BankSHA256:
		return crypto.SHA256, nil
	case BankSHA1:
		return crypto.SHA1, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownBank, name)
}

// PCR is one PCR value of the bank the enrollment named (SHA-256 unless
// it named BankSHA1).
type PCR struct {
	Index  int    `json:"index"`
	Digest []byte `json:"digest"`
}

// QuoteRequest completes an attestation: the activated secret proves the AK
// lives in the EK's TPM, the quote proves the PCR values, the event log explains
// them.
type QuoteRequest struct {
	Session          string `json:"session"`
	ActivationSecret []byte `json:"activation_secret"`
	Quote            []byte `json:"quote"`     // TPMS_ATTEST
	Signature        []byte `json:"signature"` // TPMT_SIGNATURE
	PCRs             []PCR  `json:"pcrs"`
	EventLog         []byte `json:"event_log"` // raw TCG PC Client (crypto-agile) log
	// Identity asks for a host identity certificate for a TPM-resident key
	// the AK certified; it is issued only with a passing verdict.
	Identity *IdentityRequest `json:"identity,omitempty"`
	// MAC and IP are the link the agent attests from: the MAC of the
	// interface it leased its address on ("52:54:00:12:34:56"; six zero
	// bytes for an interface without one, such as loopback) and that IPv4
	// address in dotted form ("10.0.0.17"). The quote's qualifying data is
	// QualifyingData(nonce, MAC, IP), so the TPM signed them; ParseLink
	// reads them.
	MAC string `json:"mac"`
	IP  string `json:"ip"`
	// Boundary comes with a quote of any bank but SHA-256: a second quote,
	// by the same AK over the same qualifying data, of BoundaryPCR in the
	// SHA-256 bank, which every agent extends after a pass. The verifier
	// refuses a SHA-1 quote without it, or with that PCR moved (docs/policy.md).
	Boundary *BoundaryQuote `json:"boundary,omitempty"`
}

// BoundaryQuote is QuoteRequest.Boundary: a quote of BoundaryPCR in the
// SHA-256 bank and its value.
type BoundaryQuote struct {
	Quote     []byte `json:"quote"`     // TPMS_ATTEST
	Signature []byte `json:"signature"` // TPMT_SIGNATURE
	PCRs      []PCR  `json:"pcrs"`      // SHA-256 values
}

// MACLen is the length of the MAC in the qualifying data: an EUI-48.
const MACLen = 6

// ErrBadLink reports a MAC or IP of a QuoteRequest that is not a 6-byte MAC
// and an IPv4 address.
var ErrBadLink = errors.New("link is not a 6-byte MAC and an IPv4 address")

// ParseLink reads a QuoteRequest's MAC and IP: the MAC in any form
// net.ParseMAC accepts but of exactly MACLen bytes, the IP in dotted IPv4
// form (an IPv4-mapped IPv6 address is refused). Errors wrap ErrBadLink.
func ParseLink(mac, ip string) (net.HardwareAddr, netip.Addr, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != MACLen {
		return nil, netip.Addr{}, fmt.Errorf("%w: mac %q", ErrBadLink, mac)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return nil, netip.Addr{}, fmt.Errorf("%w: ip %q", ErrBadLink, ip)
	}
	return hw, addr, nil
}

// QualifyingData is the qualifying data (extraData) of the agent's TPM2_Quote:
//
//	SHA-256(nonce ‖ mac ‖ ip)
//
// nonce is the session's nonce exactly as EnrollResponse carried it (32
// bytes from this verifier; any length is hashed as is), mac the MACLen bytes
// of the attesting interface's MAC, ip the 4 bytes of its IPv4 address in
// network order. The result is 32 bytes, within TPM2B_DATA's limit for
// TPM2_Quote (TPM 2.0 Library Part 3, 18.4: qualifyingData is at most the
// size of the largest digest). It binds the attestation to its link: a quote
// relayed from another link, or taken over the bare nonce, does not verify
// for the relay's address. mac must be MACLen bytes and ip an IPv4 address
// (an IPv4-mapped IPv6 address is taken as its IPv4 address); otherwise the
// error wraps ErrBadLink.
func QualifyingData(nonce []byte, mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != MACLen {
		return nil, fmt.Errorf("%w: mac of %d bytes", ErrBadLink, len(mac))
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil, fmt.Errorf("%w: ip %v", ErrBadLink, ip)
	}
	v4 := ip.As4()
	h := sha256.New()
	h.Write(nonce)
	h.Write(mac)
	h.Write(v4[:])
	return h.Sum(nil), nil
}

// IdentityRequest is a key the AK certified over the session's nonce
// (TPM2_Certify).
type IdentityRequest struct {
	Public      []byte `json:"public"`       // the key's TPMT_PUBLIC
	CertifyInfo []byte `json:"certify_info"` // TPMS_ATTEST of type certify
	Signature   []byte `json:"signature"`    // TPMT_SIGNATURE by the AK
}

// Identity is a short-lived host identity certificate and its chain up to
// (not including) the appliance's attestation root.
type Identity struct {
	Cert     []byte    `json:"cert"` // DER
	Chain    [][]byte  `json:"chain"`
	NotAfter time.Time `json:"not_after"`
}

// Verdict values.
const (
	VerdictPass = "pass"
	VerdictFail = "fail"
)

// Reason is one failed rule, naming the offending event where there is one.
type Reason struct {
	Rule   string `json:"rule"`
	Event  int    `json:"event,omitempty"` // event number in the log; 0 when not tied to one event
	Detail string `json:"detail"`
}

// Result is the verifier's answer to a QuoteRequest whose evidence was
// cryptographically sound: the verdict of the policy, with its reasons.
type Result struct {
	// AttestationID is the stored attestation, 0 for a failure the
	// verifier counted on the host's incident without storing it (its
	// limit on a host's stored failures).
	AttestationID int64    `json:"attestation_id"`
	HostID        string   `json:"host_id"`
	Verdict       string   `json:"verdict"`
	Reasons       []Reason `json:"reasons,omitempty"`
	IncidentID    int64    `json:"incident_id,omitempty"`
	PolicyDigest  string   `json:"policy_digest"`
	// Boot names the production OS to boot; only on a pass, and only when
	// the appliance serves one.
	Boot *BootSpec `json:"boot,omitempty"`
	// Identity is the host's identity certificate; only on a pass with an
	// IdentityRequest.
	Identity *Identity `json:"identity,omitempty"`
	// Credentials are secrets sealed to the host's EK under a PCR policy
	// equal to the quoted values; only on a pass.
	Credentials []Credential `json:"credentials,omitempty"`
}

// Credential is one secret for TPM2_Import under the EK; its PolicyPCR
// policy lets only that TPM, in the attested boot state, unseal it.
type Credential struct {
	Name          string `json:"name"`
	Public        []byte `json:"public"`
	Duplicate     []byte `json:"duplicate"`
	EncryptedSeed []byte `json:"encrypted_seed"`
	PCRs          []int  `json:"pcrs"`
	// PCRBank is the bank of PCRs, as in EnrollResponse: absent for
	// SHA-256.
	PCRBank string `json:"pcr_bank,omitempty"`
}

// BootSpec names the production OS: where to fetch its files on the
// appliance and the SHA-256 each must have, and its kernel command line.
type BootSpec struct {
	Kernel  File   `json:"kernel"`
	Initrd  File   `json:"initrd"`
	Cmdline string `json:"cmdline"`
	// KernelSigner is the certificate (DER) whose Authenticode signature the
	// kernel must carry; absent when the appliance names none.
	KernelSigner []byte `json:"kernel_signer,omitempty"`
}

// File is one file of the production OS.
type File struct {
	Path   string `json:"path"` // on the appliance, e.g. /v1/boot/kernel
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

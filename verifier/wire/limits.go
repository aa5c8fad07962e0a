package wire

import (
	"errors"
	"fmt"
)

// Field limits of the attestation API's requests, in bytes of the decoded
// field (not of its base64). A TPM produces far smaller structures; each
// limit leaves room for the largest keys a TPM 2.0 holds (RSA 4096) and
// nothing else, so that no field of a request can make the appliance keep
// more than it needs.
const (
	// MaxEKCertBytes bounds an EK certificate (DER). Manufacturer EK
	// certificates are 0.8–1.6 KB; TPMs store them in NV indices of at most
	// a few KB.
	MaxEKCertBytes = 4096
	// MaxTPMStructBytes bounds each TPM structure of a request: a
	// TPMT_PUBLIC, TPMS_CREATION_DATA, TPMS_ATTEST or TPMT_SIGNATURE. The
	// largest, an RSA-4096 public area or signature, is under 700 bytes.
	MaxTPMStructBytes = 1024
	// MaxPCRs bounds the PCR values of a QuoteRequest: a TPM 2.0 bank has
	// 24 PCRs.
	MaxPCRs = 24
	// MaxDigestBytes bounds a PCR value: SHA-512's 64 bytes.
	MaxDigestBytes = 64
	// MaxSecretBytes bounds the activation secret. The verifier issues 32
	// bytes (a TPM2B_DIGEST holds at most 64); the limit is that of a TPM
	// structure so that a wrong answer of any size a TPM could produce (an
	// encrypted secret echoed back, say) is refused as a wrong answer
	// (activation_failed, which uses up the session), not as a malformed
	// request.
	MaxSecretBytes = MaxTPMStructBytes
	// MaxTokenBytes bounds the MAC and IP strings.
	MaxTokenBytes = 256
	// MaxSessionBytes bounds the session token: the enrollment it seals
	// (EK certificate, EK public area, AK parameters within the limits
	// above), the secret, nonce and PCRs, as base64 of JSON, sealed, in
	// base64 again, stay under it.
	MaxSessionBytes = 24 << 10
)

// ErrFieldTooLarge reports a request field over its limit; a *FieldError
// carries which field and how large it was.
var ErrFieldTooLarge = errors.New("request field over its limit")

// FieldError is an ErrFieldTooLarge naming the field (by its JSON name,
// "ak.public"), its size and its limit, in bytes or, for lists, entries.
type FieldError struct {
	Field string
	Size  int
	Limit int
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s is %d, over the limit of %d", ErrFieldTooLarge, e.Field, e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrFieldTooLarge) hold.
func (e *FieldError) Unwrap() error { return ErrFieldTooLarge }

type field struct {
	name  string
	size  int
	limit int
}

func checkFields(fs []field) error {
	for _, f := range fs {
		if f.size > f.limit {
			return &FieldError{Field: f.name, Size: f.size, Limit: f.limit}
		}
	}
	return nil
}

// Check reports the first field of r over its limit (a *FieldError), or
// nil. It checks sizes only; the verifier checks the contents.
func (r *EnrollRequest) Check() error {
	return checkFields([]field{
		{"ek_cert", len(r.EKCert), MaxEKCertBytes},
		{"ek_public", len(r.EKPublic), MaxTPMStructBytes},
		{"ak.public", len(r.AK.Public), MaxTPMStructBytes},
		{"ak.create_data", len(r.AK.CreateData), MaxTPMStructBytes},
		{"ak.create_attestation", len(r.AK.CreateAttestation), MaxTPMStructBytes},
		{"ak.create_signature", len(r.AK.CreateSignature), MaxTPMStructBytes},
	})
}

// Check reports the first field of r over its limit (a *FieldError), or
// nil. The event log is bounded by MaxBodyBytes. It checks sizes only.
func (r *QuoteRequest) Check() error {
	fs := []field{
		{"session", len(r.Session), MaxSessionBytes},
		{"activation_secret", len(r.ActivationSecret), MaxSecretBytes},
		{"quote", len(r.Quote), MaxTPMStructBytes},
		{"signature", len(r.Signature), MaxTPMStructBytes},
		{"pcrs", len(r.PCRs), MaxPCRs},
		{"mac", len(r.MAC), MaxTokenBytes},
		{"ip", len(r.IP), MaxTokenBytes},
	}
	if id := r.Identity; id != nil {
		fs = append(fs,
			field{"identity.public", len(id.Public), MaxTPMStructBytes},
			field{"identity.certify_info", len(id.CertifyInfo), MaxTPMStructBytes},
			field{"identity.signature", len(id.Signature), MaxTPMStructBytes})
	}
	if b := r.Boundary; b != nil {
		fs = append(fs,
			field{"boundary.quote", len(b.Quote), MaxTPMStructBytes},
			field{"boundary.signature", len(b.Signature), MaxTPMStructBytes},
			field{"boundary.pcrs", len(b.PCRs), MaxPCRs})
	}
	if err := checkFields(fs); err != nil {
		return err
	}
	for i, p := range r.PCRs { // at most MaxPCRs
		if len(p.Digest) > MaxDigestBytes {
			return &FieldError{Field: fmt.Sprintf("pcrs[%d].digest", i), Size: len(p.Digest), Limit: MaxDigestBytes}
		}
	}
	if b := r.Boundary; b != nil {
		for i, p := range b.PCRs { // at most MaxPCRs
			if len(p.Digest) > MaxDigestBytes {
				return &FieldError{Field: fmt.Sprintf("boundary.pcrs[%d].digest", i), Size: len(p.Digest), Limit: MaxDigestBytes}
			}
		}
	}
	return nil
}

package wire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
)

// The appliance's DHCP gate tells the agent where to attest in the vendor
// specific information option (43, RFC 2132 §8.4), as sub-options of
// type, length and value (one byte each for type and length):
//
//	1  VendorEndpoint       the attestation API's URL, text, 1–255 bytes
//	2  VendorCAFingerprint  SHA-256 of the appliance CA certificate (DER), 32 bytes
//	3  VendorAlternate      another replica's attestation API URL, text, 1–255
//	                        bytes; repeated, in the order to try them
//
// The verifier encodes it (Vendor.Marshal) and the agent decodes it
// (ParseVendor); docs/dhcp.md documents it for other DHCP servers.
const (
	VendorEndpoint      = 1
	VendorCAFingerprint = 2
	VendorAlternate     = 3
)

// MaxVendorAlternates bounds the alternate endpoints an option carries and
// an agent keeps.
const MaxVendorAlternates = 8

// ErrBadVendor reports vendor option data that is not a well-formed list of
// the appliance's sub-options, or a Vendor that cannot be encoded.
var ErrBadVendor = errors.New("malformed bootgate vendor option")

// Vendor is what the appliance's vendor option carries. Empty fields are
// left out of the option.
type Vendor struct {
	Endpoint      string
	CAFingerprint []byte // sha256.Size bytes, or none
	// Alternates are other replicas of the appliance (sharing its store
	// and session key), for an agent to try when Endpoint cannot be
	// reached: at most MaxVendorAlternates.
	Alternates []string
}

// Marshal encodes v as option 43's data: the endpoint sub-option, then the
// fingerprint sub-option, each only when set, then one sub-option per
// alternate. Without alternates the result is at most 2+255+2+32 bytes;
// with them, at most 255, what one option holds. The error wraps
// ErrBadVendor when the endpoint or an alternate is empty (alternates) or
// longer than 255 bytes, the fingerprint is not sha256.Size bytes, or there
// are more than MaxVendorAlternates alternates or more than 255 bytes with
// them.
func (v Vendor) Marshal() ([]byte, error) {
	if len(v.Endpoint) > 255 {
		return nil, fmt.Errorf("%w: endpoint of %d bytes (at most 255)", ErrBadVendor, len(v.Endpoint))
	}
	if len(v.Alternates) > MaxVendorAlternates {
		return nil, fmt.Errorf("%w: %d alternate endpoints (at most %d)", ErrBadVendor, len(v.Alternates), MaxVendorAlternates)
	}
	for _, a := range v.Alternates {
		if a == "" || len(a) > 255 {
			return nil, fmt.Errorf("%w: alternate endpoint of %d bytes (1 to 255)", ErrBadVendor, len(a))
		}
	}
	if len(v.CAFingerprint) != 0 && len(v.CAFingerprint) != sha256.Size {
		return nil, fmt.Errorf("%w: CA fingerprint of %d bytes (want %d)", ErrBadVendor, len(v.CAFingerprint), sha256.Size)
	}
	var b []byte
	if v.Endpoint != "" {
		b = append(append(b, VendorEndpoint, byte(len(v.Endpoint))), v.Endpoint...)
	}
	if len(v.CAFingerprint) > 0 {
		b = append(append(b, VendorCAFingerprint, sha256.Size), v.CAFingerprint...)
	}
	for _, a := range v.Alternates {
		b = append(append(b, VendorAlternate, byte(len(a))), a...)
	}
	if len(v.Alternates) > 0 && len(b) > 255 {
		return nil, fmt.Errorf("%w: %d bytes with the alternate endpoints (one option holds 255)", ErrBadVendor, len(b))
	}
	return b, nil
}

// ParseVendor decodes option 43's data as the appliance's sub-options. It
// reads b once, allocates at most len(b) bytes and never panics. Unknown
// sub-options are skipped (another vendor's DHCP server may add its own);
// a sub-option given twice keeps its last value, except alternates, which
// add up to MaxVendorAlternates (more are ignored). On error (wrapping
// ErrBadVendor: a truncated sub-option, or a fingerprint that is not
// sha256.Size bytes) it still returns what it read before it, and leaves
// out a malformed fingerprint: the caller may use the endpoint, but the
// option did not come from a well-behaved appliance.
func ParseVendor(b []byte) (Vendor, error) {
	var v Vendor
	var bad error
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return v, fmt.Errorf("%w: sub-option truncated", ErrBadVendor)
		}
		code, val := b[0], b[2:2+int(b[1])]
		switch code {
		case VendorEndpoint:
			v.Endpoint = string(val)
		case VendorAlternate:
			if len(val) > 0 && len(v.Alternates) < MaxVendorAlternates {
				v.Alternates = append(v.Alternates, string(val))
			}
		case VendorCAFingerprint:
			if len(val) == sha256.Size {
				v.CAFingerprint = bytes.Clone(val)
			} else {
				bad = fmt.Errorf("%w: CA fingerprint of %d bytes (want %d)", ErrBadVendor, len(val), sha256.Size)
			}
		}
		b = b[2+int(b[1]):]
	}
	return v, bad
}

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
//
// The verifier encodes it (Vendor.Marshal) and the agent decodes it
// (ParseVendor); docs/dhcp.md documents it for other DHCP servers.
const (
	VendorEndpoint      = 1
	VendorCAFingerprint = 2
)

// ErrBadVendor reports vendor option data that is not a well-formed list of
// the appliance's sub-options, or a Vendor that cannot be encoded.
var ErrBadVendor = errors.New("malformed bootgate vendor option")

// Vendor is what the appliance's vendor option carries. Empty fields are
// left out of the option.
type Vendor struct {
	Endpoint      string
	CAFingerprint []byte // sha256.Size bytes, or none
}

// Marshal encodes v as option 43's data: the endpoint sub-option, then the
// fingerprint sub-option, each only when set. The result is at most
// 2+255+2+32 bytes. The error wraps ErrBadVendor when the endpoint is longer
// than 255 bytes or the fingerprint is not sha256.Size bytes.
func (v Vendor) Marshal() ([]byte, error) {
	if len(v.Endpoint) > 255 {
		return nil, fmt.Errorf("%w: endpoint of %d bytes (at most 255)", ErrBadVendor, len(v.Endpoint))
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
	return b, nil
}

// ParseVendor decodes option 43's data as the appliance's sub-options. It
// reads b once, allocates at most len(b) bytes and never panics. Unknown
// sub-options are skipped (another vendor's DHCP server may add its own);
// a sub-option given twice keeps its last value. On error (wrapping
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

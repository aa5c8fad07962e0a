package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Errors of EK certificates, matched with errors.Is; a *ProfileError wraps
// ErrNotEKCertificate or ErrTPM12 and says which requirement failed.
var (
	// ErrNotEKCertificate: the certificate does not follow the TCG EK
	// Credential Profile for TPM Family 2.0: it certifies some other key.
	ErrNotEKCertificate = errors.New("not an EK certificate (TCG EK Credential Profile for TPM Family 2.0)")
	// ErrTPM12 is an EK certificate of a TPM 1.2; bootgate attests TPM 2.0.
	ErrTPM12 = errors.New("a TPM 1.2 EK certificate (bootgate attests TPM 2.0 only)")
)

// ProfileError says which requirement of the TCG EK Credential Profile an
// EK certificate fails. It wraps ErrNotEKCertificate, or ErrTPM12.
type ProfileError struct {
	Requirement string // e.g. "key usage", "extended key usage", "TPM specification"
	Detail      string
	err         error
}

func (e *ProfileError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.err, e.Requirement, e.Detail)
}

func (e *ProfileError) Unwrap() error { return e.err }

// Object identifiers of the TCG EK Credential Profile for TPM Family 2.0
// (version 2.5, section 3.2) and of the X.509 extensions it uses.
var (
	OIDEKCertificate    = asn1.ObjectIdentifier{2, 23, 133, 8, 1} // tcg-kp-EKCertificate
	OIDTPMManufacturer  = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	OIDTPMModel         = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	OIDTPMVersion       = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTPMSpecification = asn1.ObjectIdentifier{2, 23, 133, 2, 16}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirAttrs  = asn1.ObjectIdentifier{2, 5, 29, 9}
	// oidRSAESOAEP is the RSAES-OAEP key algorithm (RFC 4055, section
	// 1.2) that TPM 1.2 and older TPM 2.0 EK certificates use for a plain
	// RSA key; crypto/x509 leaves such a certificate without a public key.
	oidRSAESOAEP = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
)

// TPMAttributes are the TPM's manufacturer, model and firmware version as
// its EK certificate's subject alternative name gives them (EK Credential
// Profile section 3.2.9; TCG Vendor ID Registry for the manufacturer IDs).
// The values are as in the certificate: text from the TPM's vendor, shown
// only escaped.
type TPMAttributes struct {
	Manufacturer string `json:"manufacturer,omitempty"` // e.g. "id:49465800"
	Model        string `json:"model,omitempty"`        // e.g. "SLB 9670 TPM2.0"
	Version      string `json:"version,omitempty"`      // e.g. "id:073f"
}

// VendorID is the manufacturer as its four-character TCG vendor ID with
// trailing NULs and spaces removed ("IFX", "NTC", "STM", "GOOG"), decoded
// from the "id:" hex form; a manufacturer in another form is returned as is.
func (a TPMAttributes) VendorID() string {
	s, ok := strings.CutPrefix(a.Manufacturer, "id:")
	if !ok {
		return a.Manufacturer
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return a.Manufacturer
	}
	return strings.TrimRight(string(b), "\x00 ")
}

// ParseEKCertificate parses an EK certificate: DER, or as stored in TPM NV.
// An NV header is stripped (TCG PC Client Platform TPM Profile, section
// 7.3.2 and its TPM 1.2 predecessor: tag 0x1001, a certificate type, a
// 16-bit size, then optionally tag 0x1002 before the DER), and so are bytes
// after the DER certificate (NV indices are often padded). An RSA key under
// the RSAES-OAEP algorithm identifier, which crypto/x509 does not return, is
// recovered: its SubjectPublicKeyInfo holds a plain PKCS #1 RSAPublicKey
// (RFC 4055, section 1.2). Parsing says nothing of the profile
// (CheckEKProfile) or of the issuer.
func ParseEKCertificate(b []byte) (*x509.Certificate, error) {
	if len(b) > 5 && bytes.HasPrefix(b, []byte{0x10, 0x01, 0x00}) {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if len(b) < 5+n {
			return nil, fmt.Errorf("parse EK certificate: NV header gives %d bytes, %d present", n, len(b)-5)
		}
		b = bytes.TrimPrefix(b[5:5+n], []byte{0x10, 0x02})
	}
	var outer asn1.RawValue
	if _, err := asn1.Unmarshal(b, &outer); err != nil {
		return nil, fmt.Errorf("parse EK certificate: %w", err)
	}
	der := outer.FullBytes
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse EK certificate: %w", err)
	}
	if c.PublicKey != nil {
		return c, nil
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("parse EK certificate: malformed subject public key info")
	}
	if !spki.Algorithm.Algorithm.Equal(oidRSAESOAEP) {
		return nil, fmt.Errorf("parse EK certificate: unsupported public key algorithm %v", spki.Algorithm.Algorithm)
	}
	key, err := x509.ParsePKCS1PublicKey(spki.PublicKey.RightAlign())
	if err != nil {
		return nil, fmt.Errorf("parse EK certificate: RSAES-OAEP key: %w", err)
	}
	c.PublicKey, c.PublicKeyAlgorithm = key, x509.RSA
	return c, nil
}

// ProfileAllowance admits the EK certificates of one vendor CA family that
// lack an element of the profile while being EK certificates all the same.
// Each is matched on the issuer and documented with what it waives.
type ProfileAllowance struct {
	Name string // stable name, given in logs and errors
	// IssuerOrganization and IssuerCNPrefix match the issuing CA.
	IssuerOrganization string
	IssuerCNPrefix     string
	// NoKeyUsage admits a certificate without a key usage extension (the
	// profile requires keyEncipherment for RSA, keyAgreement for ECC).
	NoKeyUsage bool
}

// ProfileAllowances are the real vendors whose EK certificates need a
// waiver, each checked against certificates of real TPMs (testdata).
var ProfileAllowances = []ProfileAllowance{
	// Nuvoton's EKs under "NTC TPM EK Root CA 01/02" (NPCT42x, NPCT50x,
	// 2013-2016) carry the tcg-kp-EKCertificate EKU and the TPM attributes
	// but no key usage extension.
	{Name: "nuvoton-ntc-root-no-key-usage", IssuerOrganization: "Nuvoton Technology Corporation", IssuerCNPrefix: "NTC TPM EK Root CA", NoKeyUsage: true},
}

func (a ProfileAllowance) matches(c *x509.Certificate) bool {
	for _, o := range c.Issuer.Organization {
		if o == a.IssuerOrganization && strings.HasPrefix(c.Issuer.CommonName, a.IssuerCNPrefix) {
			return true
		}
	}
	return false
}

// CheckEKProfile checks that c is an endorsement-key certificate of a TPM
// 2.0 as the TCG EK Credential Profile for TPM Family 2.0 (section 3.2)
// describes it, and returns the TPM attributes of its subject alternative
// name. It requires:
//   - no TPM 1.2 specification in its subject directory attributes
//     (section 3.2.13; else a *ProfileError wrapping ErrTPM12);
//   - not a CA (basic constraints, section 3.2.10);
//   - a key usage of a decryption key: keyEncipherment for RSA, keyAgreement
//     for ECC, and no signing usage (section 3.2.8); an EK never signs, so a
//     signing key's certificate (a vTPM's AK certificate, say) is not one.
//     ProfileAllowances waive a missing key usage for named vendors;
//   - the extended key usage tcg-kp-EKCertificate (2.23.133.8.1, section
//     3.2.16) or, where a vendor omits the EKU, the TPM manufacturer, model
//     and version attributes (2.23.133.2.1-3) in a directoryName of the
//     subject alternative name (section 3.2.9). An EKU without
//     tcg-kp-EKCertificate is refused.
//
// Every other failure is a *ProfileError wrapping ErrNotEKCertificate.
func CheckEKProfile(c *x509.Certificate) (TPMAttributes, error) {
	fail := func(req, format string, args ...any) error {
		return &ProfileError{Requirement: req, Detail: fmt.Sprintf(format, args...), err: ErrNotEKCertificate}
	}
	attrs, err := sanTPMAttributes(c)
	if err != nil {
		return TPMAttributes{}, fail("subject alternative name", "%v", err)
	}
	if family, ok := tpmFamily(c); ok && family != "2.0" {
		return attrs, &ProfileError{Requirement: "TPM specification", Detail: fmt.Sprintf("the subject directory attributes name TPM family %q", family), err: ErrTPM12}
	}
	if c.BasicConstraintsValid && c.IsCA {
		return attrs, fail("basic constraints", "a CA certificate")
	}
	var allowance *ProfileAllowance
	for i := range ProfileAllowances {
		if ProfileAllowances[i].matches(c) {
			allowance = &ProfileAllowances[i]
		}
	}
	const signing = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	var want x509.KeyUsage
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		want = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey:
		want = x509.KeyUsageKeyAgreement
	default:
		return attrs, fail("public key", "%T is not an RSA or ECC key", c.PublicKey)
	}
	switch {
	case c.KeyUsage&signing != 0:
		return attrs, fail("key usage", "the key usage (%s) includes signing: an EK is a decryption key, and this certificate is for a signing key", keyUsageNames(c.KeyUsage))
	case c.KeyUsage == 0 && allowance != nil && allowance.NoKeyUsage:
	case c.KeyUsage&want == 0:
		return attrs, fail("key usage", "the key usage (%s) lacks %s", keyUsageNames(c.KeyUsage), keyUsageNames(want))
	}
	hasEKU := false
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(OIDEKCertificate) {
			hasEKU = true
		}
	}
	switch {
	case hasEKU:
	case len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0:
		return attrs, fail("extended key usage", "the extended key usage does not include tcg-kp-EKCertificate (2.23.133.8.1)")
	case attrs.Manufacturer == "" || attrs.Model == "" || attrs.Version == "":
		return attrs, fail("extended key usage", "neither tcg-kp-EKCertificate (2.23.133.8.1) nor the TPM manufacturer, model and version in the subject alternative name")
	}
	return attrs, nil
}

// sanTPMAttributes reads the TPM attributes from the directoryNames of the
// subject alternative name; a certificate without one has none.
func sanTPMAttributes(c *x509.Certificate) (TPMAttributes, error) {
	var a TPMAttributes
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) > 0 {
			return a, errors.New("malformed")
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 4 {
				continue // not a directoryName
			}
			var rdns pkix.RDNSequence
			if rest, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil || len(rest) > 0 {
				return a, errors.New("malformed directoryName")
			}
			for _, rdn := range rdns {
				for _, atv := range rdn {
					s, ok := atv.Value.(string)
					if !ok {
						continue
					}
					switch {
					case atv.Type.Equal(OIDTPMManufacturer):
						a.Manufacturer = s
					case atv.Type.Equal(OIDTPMModel):
						a.Model = s
					case atv.Type.Equal(OIDTPMVersion):
						a.Version = s
					}
				}
			}
		}
	}
	return a, nil
}

// tpmFamily reads the TPM specification family ("2.0", "1.2") from the
// subject directory attributes, if the certificate has one.
func tpmFamily(c *x509.Certificate) (string, bool) {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectDirAttrs) {
			continue
		}
		var attrs []struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}
		if _, err := asn1.Unmarshal(ext.Value, &attrs); err != nil {
			return "", false
		}
		for _, a := range attrs {
			if !a.Type.Equal(oidTPMSpecification) || len(a.Values) == 0 {
				continue
			}
			var spec struct {
				Family   string
				Level    int
				Revision int
			}
			if _, err := asn1.Unmarshal(a.Values[0].FullBytes, &spec); err == nil {
				return spec.Family, true
			}
		}
	}
	return "", false
}

func keyUsageNames(u x509.KeyUsage) string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if u&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

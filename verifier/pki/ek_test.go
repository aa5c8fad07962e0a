package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"
)

// TestParseOAEPKey: the RSA key of an older Nuvoton EK, under the
// RSAES-OAEP algorithm identifier, is recovered.
func TestParseOAEPKey(t *testing.T) {
	b, err := os.ReadFile("testdata/ekcerts/leaf-nuvoton-rsa2048-npct42x-ntcroot02.der")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseEKCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok || k.N.BitLen() != 2048 || k.E != 65537 {
		t.Fatalf("public key %T, want an RSA-2048 key", c.PublicKey)
	}
	attrs, err := CheckEKProfile(c)
	if err != nil || attrs.VendorID() != "WEC" {
		t.Fatalf("CheckEKProfile = %+v, %v", attrs, err)
	}
}

func sanWith(t *testing.T, attrs ...pkix.AttributeTypeAndValue) pkix.Extension {
	t.Helper()
	rdn, err := asn1.Marshal(pkix.RDNSequence{attrs})
	if err != nil {
		t.Fatal(err)
	}
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: rdn}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: true, Value: v}
}

// TestCheckEKProfile: synthetic certificates for each requirement.
func TestCheckEKProfile(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	eccKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test TPM CA", Organization: []string{"Test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	tpmAttrs := sanWith(t,
		pkix.AttributeTypeAndValue{Type: OIDTPMManufacturer, Value: "id:49465800"},
		pkix.AttributeTypeAndValue{Type: OIDTPMModel, Value: "SLB9672"},
		pkix.AttributeTypeAndValue{Type: OIDTPMVersion, Value: "id:000F0000"})
	partial := sanWith(t, pkix.AttributeTypeAndValue{Type: OIDTPMManufacturer, Value: "id:49465800"})
	for _, c := range []struct {
		name    string
		key     any
		tmpl    x509.Certificate
		wantReq string // "" accepts
	}{
		{"EKU and SAN", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}, ExtraExtensions: []pkix.Extension{tpmAttrs}}, ""},
		{"ECC EK", &eccKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyAgreement, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}}, ""},
		{"no EKU, TPM attributes in the SAN", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment, ExtraExtensions: []pkix.Extension{tpmAttrs}}, ""},
		{"no EKU, partial TPM attributes", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment, ExtraExtensions: []pkix.Extension{partial}}, "extended key usage"},
		{"no EKU, no SAN: a TLS certificate", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment}, "extended key usage"},
		{"serverAuth EKU", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, ExtraExtensions: []pkix.Extension{tpmAttrs}}, "extended key usage"},
		{"signing key with the EK EKU", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}, ExtraExtensions: []pkix.Extension{tpmAttrs}}, "key usage"},
		{"decryption and signing", &rsaKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}}, "key usage"},
		{"no key usage, no allowance", &rsaKey.PublicKey, x509.Certificate{UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}}, "key usage"},
		{"ECC key with keyEncipherment", &eccKey.PublicKey, x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}}, "key usage"},
		{"a CA", &rsaKey.PublicKey, x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment, UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDEKCertificate}}, "basic constraints"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl := c.tmpl
			tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(2), ca.NotBefore, ca.NotAfter
			der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, c.key, caKey)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseEKCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			_, err = CheckEKProfile(cert)
			var pe *ProfileError
			switch {
			case c.wantReq == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.wantReq != "" && (!errors.Is(err, ErrNotEKCertificate) || !errors.As(err, &pe) || pe.Requirement != c.wantReq):
				t.Fatalf("got %v, want a ProfileError on %s", err, c.wantReq)
			}
		})
	}
}

package softtpm

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files of a manufacturer's directory (SaveManufacturer, LoadManufacturer).
const (
	ManufacturerCert = "manufacturer.pem"     // the root certificate: give it to the appliance's ek.roots
	ManufacturerKey  = "manufacturer-key.pem" // its private key (PKCS #8), mode 0600
)

// Manufacturer is a test TPM manufacturer: an ECDSA P-256 root that issues
// EK certificates as the TCG EK Credential Profile describes them.
type Manufacturer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	// Model is the TPM model its EK certificates name (default
	// DefaultModel).
	Model string
}

// DefaultModel is the TPM model a Manufacturer's EK certificates name
// unless it says otherwise.
const DefaultModel = "bootgate softtpm"

// NewManufacturer makes a root named name, valid from an hour ago for ten
// years.
func NewManufacturer(name string) (*Manufacturer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate manufacturer key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"bootgate load tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create manufacturer certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Manufacturer{key: key, cert: cert}, nil
}

// Cert is the manufacturer's root certificate.
func (m *Manufacturer) Cert() *x509.Certificate { return m.cert }

// Save writes ManufacturerCert and ManufacturerKey into dir (created).
func (m *Manufacturer) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(m.key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ManufacturerKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ManufacturerCert), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.cert.Raw}), 0o644)
}

// LoadManufacturer reads a manufacturer that Save wrote into dir.
func LoadManufacturer(dir string) (*Manufacturer, error) {
	read := func(name, typ string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			return nil, fmt.Errorf("%s: no %s PEM block", name, typ)
		}
		return blk.Bytes, nil
	}
	certDER, err := read(ManufacturerCert, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load manufacturer: %w", err)
	}
	keyDER, err := read(ManufacturerKey, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("load manufacturer: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("load manufacturer: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("load manufacturer: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("load manufacturer: the key is not the certificate's ECDSA key")
	}
	return &Manufacturer{key: key, cert: cert}, nil
}

// OIDs of the TCG EK Credential Profile.
var (
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1} // tcg-kp-EKCertificate
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// IssueEKCert certifies an endorsement key as a TPM manufacturer does
// (TCG EK Credential Profile 2.x, its EK certificate profile): no subject, a
// critical subjectAltName holding the TPM's manufacturer, model (m.Model)
// and version in a directory name, the tcg-kp-EKCertificate extended key
// usage, and the key usage of the key's type (keyAgreement for ECC,
// keyEncipherment for RSA). It returns the certificate's DER.
func (m *Manufacturer) IssueEKCert(pub crypto.PublicKey) ([]byte, error) {
	rdn, err := asn1.Marshal(pkix.RDNSequence{{
		{Type: oidTPMManufacturer, Value: "id:424F4F54"}, // "BOOT"
		{Type: oidTPMModel, Value: cmp.Or(m.Model, DefaultModel)},
		{Type: oidTPMVersion, Value: "id:00010002"},
	}})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: rdn}})
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageKeyAgreement
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage = x509.KeyUsageKeyEncipherment
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              usage,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificate},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.cert, pub, m.key)
	if err != nil {
		return nil, fmt.Errorf("issue EK certificate: %w", err)
	}
	return der, nil
}

// serial is a random positive 127-bit serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

// CertChain is the manufacturer's root, as attest.NewRoots takes it.
func (m *Manufacturer) CertChain() []*x509.Certificate { return []*x509.Certificate{m.cert} }

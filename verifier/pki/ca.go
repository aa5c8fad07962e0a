package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Files of an attestation CA directory.
const (
	RootCertFile    = "root.pem"
	RootKeyFile     = "root-key.pem"
	IssuingCertFile = "issuing.pem"
	IssuingKeyFile  = "issuing-key.pem"
)

// CA issues host identity certificates, only after a passing attestation.
// It has a root, whose key can be kept offline once the issuing CA exists
// (delete root-key.pem; rotating the issuing CA then needs it back), and an
// issuing CA whose key the appliance holds.
type CA struct {
	Root    *x509.Certificate
	issuing *x509.Certificate
	key     crypto.Signer
}

// InitCA creates a root and an issuing CA in dir, unless they exist.
func InitCA(dir string, validity time.Duration) error {
	if _, err := os.Stat(filepath.Join(dir, IssuingCertFile)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	rootTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "bootgate attestation root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	issKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	issTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "bootgate attestation issuing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
	issDER, err := x509.CreateCertificate(rand.Reader, issTmpl, root, &issKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	for _, f := range []struct {
		name string
		blk  func() (*pem.Block, error)
		mode os.FileMode
	}{
		{RootCertFile, func() (*pem.Block, error) { return &pem.Block{Type: "CERTIFICATE", Bytes: rootDER}, nil }, 0o644},
		{RootKeyFile, func() (*pem.Block, error) { return keyBlock(rootKey) }, 0o600},
		{IssuingCertFile, func() (*pem.Block, error) { return &pem.Block{Type: "CERTIFICATE", Bytes: issDER}, nil }, 0o644},
		{IssuingKeyFile, func() (*pem.Block, error) { return keyBlock(issKey) }, 0o600},
	} {
		blk, err := f.blk()
		if err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), pem.EncodeToMemory(blk), f.mode); err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
	}
	return nil
}

func keyBlock(k *ecdsa.PrivateKey) (*pem.Block, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, err
}

// LoadCA reads the root certificate and the issuing CA from dir; the root
// key is not needed.
func LoadCA(dir string) (*CA, error) {
	read := func(name, typ string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			return nil, fmt.Errorf("%s: no %s", name, typ)
		}
		return blk.Bytes, nil
	}
	rootDER, err := read(RootCertFile, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	issDER, err := read(IssuingCertFile, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyDER, err := read(IssuingKeyFile, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	iss, err := x509.ParseCertificate(issDER)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("load CA: the issuing key cannot sign")
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("load CA: the issuing CA is not signed by the root: %w", err)
	}
	return &CA{Root: root, issuing: iss, key: signer}, nil
}

// Issue makes a host identity certificate for pub, naming hostID, valid for
// validity (capped by the issuing CA's own lifetime).
func (c *CA) Issue(pub crypto.PublicKey, hostID string, validity time.Duration) (cert []byte, chain [][]byte, notAfter time.Time, err error) {
	now := time.Now()
	notAfter = now.Add(validity)
	if notAfter.After(c.issuing.NotAfter) {
		notAfter = c.issuing.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hostID, OrganizationalUnit: []string{"bootgate host"}},
		URIs:         []*url.URL{{Scheme: "bootgate", Host: "host", Path: "/" + hostID}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.issuing, pub, c.key)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("issue identity: %w", err)
	}
	return der, [][]byte{c.issuing.Raw}, notAfter, nil
}

// Pool is what TLS servers trust for client identities: the root.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// HostID reads the host ID from a verified identity certificate.
func HostID(cert *x509.Certificate) string { return cert.Subject.CommonName }

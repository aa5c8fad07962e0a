package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
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

// InitCA creates a root and an issuing CA in dir, unless they exist. It
// holds dir's LockFile exclusively while it checks and creates, and writes
// each file whole (renamed into place), the issuing certificate last: of
// several appliances sharing dir and starting together, one creates the
// CA and the others load it.
func InitCA(dir string, validity time.Duration) error {
	err := initOnce(dir, IssuingCertFile, func() ([]pemFile, error) {
		now := time.Now()
		root, rootKey, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "bootgate attestation root"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1}, nil, nil)
		if err != nil {
			return nil, err
		}
		iss, issKey, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "bootgate attestation issuing CA"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}, root, rootKey)
		if err != nil {
			return nil, err
		}
		return []pemFile{
			{name: RootCertFile, cert: root}, {name: RootKeyFile, key: rootKey},
			{name: IssuingKeyFile, key: issKey}, {name: IssuingCertFile, cert: iss},
		}, nil
	})
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	return nil
}

// LoadCA reads the root certificate and the issuing CA from dir, under a
// shared lock on its LockFile if it has one; the root key is not needed.
// It refuses an issuing key that does not belong to the issuing
// certificate, and an issuing certificate the root did not sign.
func LoadCA(dir string) (*CA, error) {
	unlock, err := rlockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	defer unlock()
	read := func(name, typ string) ([]byte, error) { return readPEM(filepath.Join(dir, name), typ) }
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
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(iss.PublicKey) {
		return nil, fmt.Errorf("load CA: %s is not the key of %s (in %s)", IssuingKeyFile, IssuingCertFile, dir)
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("load CA: the issuing CA is not signed by the root: %w", err)
	}
	return &CA{Root: root, issuing: iss, key: signer}, nil
}

// Identity is an issued host identity certificate.
type Identity struct {
	DER      []byte
	Chain    [][]byte // the issuing CA
	Serial   *big.Int
	NotAfter time.Time
}

// Issue makes a host identity certificate for pub, naming hostID, valid for
// validity (capped by the issuing CA's own lifetime).
func (c *CA) Issue(pub crypto.PublicKey, hostID string, validity time.Duration) (*Identity, error) {
	now := time.Now()
	notAfter := now.Add(validity)
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
		return nil, fmt.Errorf("issue identity: %w", err)
	}
	return &Identity{DER: der, Chain: [][]byte{c.issuing.Raw}, Serial: tmpl.SerialNumber, NotAfter: notAfter}, nil
}

// Pool is what TLS servers trust for client identities: the root.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// HostID reads the host ID from a verified identity certificate.
func HostID(cert *x509.Certificate) string { return cert.Subject.CommonName }

// Revoked is one entry of a CRL.
type Revoked struct {
	Serial *big.Int
	Time   time.Time
}

// CRL makes a certificate revocation list of host identities, signed by the
// issuing CA, valid from now until nextUpdate; number must grow with every
// CRL issued.
func (c *CA) CRL(revoked []Revoked, number *big.Int, now, nextUpdate time.Time) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, r := range revoked {
		entries[i] = x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.Time}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: number, ThisUpdate: now, NextUpdate: nextUpdate, RevokedCertificateEntries: entries,
	}, c.issuing, c.key)
	if err != nil {
		return nil, fmt.Errorf("make CRL: %w", err)
	}
	return der, nil
}

// Package keys creates and loads bootgate's own Secure Boot test keys.
//
// A key directory holds, for each [Spec], three files named after Spec.Name:
//
//	NAME.key  the RSA-2048 private key, PEM "PRIVATE KEY" (PKCS #8), mode 0600
//	NAME.pem  the self-signed X.509 certificate, PEM
//	NAME.der  the same certificate, DER (what EFI signature lists carry)
//
// The keys are RSA-2048 because that is what OVMF (EDK2) verifies Authenticode
// signatures and authenticated variable updates with; certificates are valid for
// ten years. PKCS #8 keys are read by go-uefi as well as by OpenSSL tools such as
// sbsign.
package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/bootgate/bootgate/internal/atomicfile"
)

// KeyBits is the RSA modulus size of every key: OVMF verifies RSA-2048 only.
const KeyBits = 2048

// Validity is how long a generated certificate is valid.
const Validity = 10 * 365 * 24 * time.Hour

// backdate is subtracted from NotBefore so that a guest whose clock lags the
// build host's still sees a valid certificate.
const backdate = time.Hour

// OwnerGUID is the EFI signature owner (SignatureOwner) that bootgate writes into
// the signature lists of PK, KEK and db.
const OwnerGUID = "5d0ac0a4-6b4b-4e1c-8f3a-62b0a1f1b007"

// Spec names one key pair of the Secure Boot hierarchy.
type Spec struct {
	// Name is the file stem in the key directory.
	Name string
	// CommonName is the certificate's subject (and issuer) CN.
	CommonName string
	// CodeSigning marks keys that sign boot applications (EFI images, kernels).
	CodeSigning bool
}

// The key pairs bootgate uses. PK signs KEK updates (and itself), KEK signs db
// updates, DB signs the agent UKI and the production kernel, and OtherDB signs a
// boot application that firmware accepts but bootgate's policy does not trust.
var (
	PK      = Spec{Name: "PK", CommonName: "bootgate test PK"}
	KEK     = Spec{Name: "KEK", CommonName: "bootgate test KEK"}
	DB      = Spec{Name: "db", CommonName: "bootgate test db", CodeSigning: true}
	OtherDB = Spec{Name: "other-db", CommonName: "other vendor db", CodeSigning: true}
)

// All returns every key pair bootgate needs, in enrolment order of authority.
func All() []Spec { return []Spec{PK, KEK, DB, OtherDB} }

// Pair is a private key and its self-signed certificate.
type Pair struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// Paths returns the key, PEM certificate and DER certificate paths of s in dir.
func (s Spec) Paths(dir string) (key, certPEM, certDER string) {
	base := filepath.Join(dir, s.Name)
	return base + ".key", base + ".pem", base + ".der"
}

// Generate creates a new RSA-2048 key and a self-signed certificate for s, valid
// from shortly before now for [Validity].
func Generate(s Spec, now time.Time) (*Pair, error) {
	key, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", s.Name, err)
	}
	cert, err := SelfSign(s, key, now)
	if err != nil {
		return nil, err
	}
	return &Pair{Key: key, Cert: cert}, nil
}

// SelfSign issues a self-signed certificate for key with s's subject. The
// certificate is a CA (as `openssl req -x509` makes them) so that it can anchor a
// chain; code-signing keys also carry the codeSigning extended key usage.
func SelfSign(s Spec, key *rsa.PrivateKey, now time.Time) (*x509.Certificate, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("%s: serial number: %w", s.Name, err)
	}
	notBefore := now.Add(-backdate).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CommonName},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(Validity),
		SignatureAlgorithm:    x509.SHA256WithRSA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if s.CodeSigning {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("%s: create certificate: %w", s.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: parse new certificate: %w", s.Name, err)
	}
	return cert, nil
}

// Status says what [Ensure] did for one key pair.
type Status string

// The outcomes of [Ensure].
const (
	Kept      Status = "kept"      // all three files existed and were consistent
	Created   Status = "created"   // a new key and certificate were written
	Certified Status = "certified" // the key existed; a new certificate was issued for it
	Completed Status = "completed" // a missing PEM or DER form of the certificate was rewritten
)

// Ensure makes sure dir holds a key pair for every spec, creating what is
// missing and keeping what exists: an existing key is never replaced. It returns
// the pairs and what was done for each, in the order of specs.
func Ensure(dir string, specs []Spec, now time.Time) ([]*Pair, []Status, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create key directory: %w", err)
	}
	pairs := make([]*Pair, 0, len(specs))
	statuses := make([]Status, 0, len(specs))
	for _, s := range specs {
		p, st, err := ensure(dir, s, now)
		if err != nil {
			return nil, nil, err
		}
		pairs = append(pairs, p)
		statuses = append(statuses, st)
	}
	return pairs, statuses, nil
}

func ensure(dir string, s Spec, now time.Time) (*Pair, Status, error) {
	keyPath, pemPath, derPath := s.Paths(dir)
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, "", err
	}
	havePEM, err := exists(pemPath)
	if err != nil {
		return nil, "", err
	}
	haveDER, err := exists(derPath)
	if err != nil {
		return nil, "", err
	}

	switch {
	case !haveKey && !havePEM && !haveDER:
		p, err := Generate(s, now)
		if err != nil {
			return nil, "", err
		}
		if err := Write(dir, s, p); err != nil {
			return nil, "", err
		}
		return p, Created, nil
	case !haveKey:
		return nil, "", fmt.Errorf("%s: certificate without private key in %s; remove it to generate a new pair", s.Name, dir)
	}

	key, err := LoadKey(keyPath)
	if err != nil {
		return nil, "", err
	}
	var cert *x509.Certificate
	switch {
	case havePEM:
		cert, err = LoadCertPEM(pemPath)
	case haveDER:
		cert, err = LoadCertDER(derPath)
	}
	if err != nil {
		return nil, "", err
	}
	p := &Pair{Key: key, Cert: cert}
	status := Kept
	if cert == nil {
		if p.Cert, err = SelfSign(s, key, now); err != nil {
			return nil, "", err
		}
		status = Certified
	} else if !havePEM || !haveDER {
		status = Completed
	}
	if err := p.check(s); err != nil {
		return nil, "", err
	}
	if status == Kept {
		// Both forms exist: they must be the same certificate.
		der, err := LoadCertDER(derPath)
		if err != nil {
			return nil, "", err
		}
		if !der.Equal(p.Cert) {
			return nil, "", fmt.Errorf("%s: %s and %s hold different certificates", s.Name, pemPath, derPath)
		}
		return p, Kept, nil
	}
	if err := writeCert(dir, s, p.Cert); err != nil {
		return nil, "", err
	}
	return p, status, nil
}

// Write stores p's key and certificate (PEM and DER) in dir under s's name,
// replacing files atomically.
func Write(dir string, s Spec, p *Pair) error {
	keyPath, _, _ := s.Paths(dir)
	der, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		return fmt.Errorf("%s: encode key: %w", s.Name, err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeCert(dir, s, p.Cert)
}

func writeCert(dir string, s Spec, cert *x509.Certificate) error {
	_, pemPath, derPath := s.Paths(dir)
	if err := atomicfile.Write(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return err
	}
	return atomicfile.Write(derPath, cert.Raw, 0o644)
}

// Load reads s's key pair from dir and checks that key and certificate belong
// together.
func Load(dir string, s Spec) (*Pair, error) {
	keyPath, pemPath, _ := s.Paths(dir)
	key, err := LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	cert, err := LoadCertPEM(pemPath)
	if err != nil {
		return nil, err
	}
	p := &Pair{Key: key, Cert: cert}
	if err := p.check(s); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadKey reads an RSA-2048 private key from a PEM file (PKCS #8 or PKCS #1).
func LoadKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ParseKey decodes an RSA-2048 private key from PEM (PKCS #8 or PKCS #1).
func ParseKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS #8 key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, not RSA", k)
		}
		key = rk
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS #1 key: %w", err)
		}
		key = k
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// LoadCertPEM reads the first certificate of a PEM file.
func LoadCertPEM(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: parse certificate: %w", path, err)
	}
	return cert, nil
}

// LoadCertDER reads a DER-encoded certificate.
func LoadCertDER(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: parse certificate: %w", path, err)
	}
	return cert, nil
}

// IsSelfSigned reports whether cert's issuer is its subject and its signature
// verifies with its own public key.
func IsSelfSigned(cert *x509.Certificate) bool {
	if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return false
	}
	return cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil
}

// check verifies that p's key is RSA-2048, that the certificate is self-signed
// and certifies that key, and that its subject is the one s expects.
func (p *Pair) check(s Spec) error {
	if err := checkKey(p.Key); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	pub, ok := p.Cert.PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&p.Key.PublicKey) {
		return fmt.Errorf("%s: certificate does not match the private key", s.Name)
	}
	if !IsSelfSigned(p.Cert) {
		return fmt.Errorf("%s: certificate is not self-signed", s.Name)
	}
	if p.Cert.Subject.CommonName != s.CommonName {
		return fmt.Errorf("%s: certificate subject CN is %q, want %q", s.Name, p.Cert.Subject.CommonName, s.CommonName)
	}
	return nil
}

func checkKey(key *rsa.PrivateKey) error {
	if key == nil {
		return errors.New("no key")
	}
	if n := key.N.BitLen(); n != KeyBits {
		return fmt.Errorf("RSA key has %d bits; OVMF needs %d", n, KeyBits)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat: %w", err)
	}
}

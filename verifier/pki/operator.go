package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Files of an operator CA directory.
const (
	OperatorCAFile    = "operators-ca.pem"
	OperatorCAKeyFile = "operators-ca-key.pem"
)

// operatorURIHost is the host part of the URI that names an operator in
// their certificate: bootgate://operator/NAME.
const operatorURIHost = "operator"

var operatorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Operators issues and checks the certificates of the people who use the
// admin API. It is a CA of its own, apart from the attestation CA, so that no
// host identity can ever pass for an operator.
type Operators struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey // nil when loaded only to verify
}

// InitOperators creates the operator CA in dir, unless it exists.
func InitOperators(dir string, validity time.Duration) error {
	if _, err := os.Stat(filepath.Join(dir, OperatorCAFile)); err == nil {
		return nil
	}
	now := time.Now()
	ca, key, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "bootgate operator CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}, nil, nil)
	if err != nil {
		return fmt.Errorf("init operator CA: %w", err)
	}
	if err := writePEM(dir, []pemFile{{name: OperatorCAFile, cert: ca}, {name: OperatorCAKeyFile, key: key}}); err != nil {
		return fmt.Errorf("init operator CA: %w", err)
	}
	return nil
}

// LoadOperators reads the operator CA from dir; with withKey it also reads
// its key, which issuing needs and verifying does not.
func LoadOperators(dir string, withKey bool) (*Operators, error) {
	der, err := readPEM(filepath.Join(dir, OperatorCAFile), "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load operator CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("load operator CA: %w", err)
	}
	o := &Operators{cert: cert}
	if withKey {
		der, err := readPEM(filepath.Join(dir, OperatorCAKeyFile), "PRIVATE KEY")
		if err != nil {
			return nil, fmt.Errorf("load operator CA: %w", err)
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("load operator CA key: %w", err)
		}
		key, ok := k.(*ecdsa.PrivateKey)
		if !ok || !key.PublicKey.Equal(cert.PublicKey) {
			return nil, errors.New("load operator CA: the key does not belong to the certificate")
		}
		o.key = key
	}
	return o, nil
}

// Issue makes a client certificate and key (PEM) naming the operator.
func (o *Operators) Issue(name string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if o.key == nil {
		return nil, nil, errors.New("issue operator certificate: the operator CA was loaded without its key")
	}
	if !operatorName.MatchString(name) {
		return nil, nil, fmt.Errorf("issue operator certificate: %q is not a valid operator name (lower-case letters, digits, . _ -)", name)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(o.cert.NotAfter) {
		notAfter = o.cert.NotAfter
	}
	cert, key, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{"bootgate operator"}},
		URIs:        []*url.URL{{Scheme: "bootgate", Host: operatorURIHost, Path: "/" + name}},
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, o.cert, o.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue operator certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Verify checks that chain (as a TLS client presented it, leaf first) is an
// operator certificate of this CA, valid now for client authentication, and
// returns the operator's name.
func (o *Operators) Verify(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("no client certificate: the admin API needs an operator certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(o.cert)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("not an operator certificate of this appliance: %w", err)
	}
	for _, u := range leaf.URIs {
		if u.Scheme == "bootgate" && u.Host == operatorURIHost {
			if name := u.Path[min(1, len(u.Path)):]; operatorName.MatchString(name) && name == leaf.Subject.CommonName {
				return name, nil
			}
		}
	}
	return "", errors.New("the certificate names no operator")
}

// readPEM reads the first PEM block of a file, which must be of type typ.
func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s: no %s", filepath.Base(path), typ)
	}
	return blk.Bytes, nil
}

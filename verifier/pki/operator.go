package pki

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Files of an operator CA directory.
const (
	OperatorCAFile    = "operators-ca.pem"
	OperatorCAKeyFile = "operators-ca-key.pem"
	// IssuedDir keeps a copy of every operator certificate issued, by serial.
	IssuedDir = "issued"
	// RevokedFile lists revoked operator certificates: one serial (hex) per
	// line, then the operator's name. The admin API rereads it when it
	// changes.
	RevokedFile = "revoked"
)

// operatorURIHost is the host part of the URI that names an operator in
// their certificate: bootgate://operator/NAME.
const operatorURIHost = "operator"

var operatorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Operators issues and checks the certificates of the people who use the
// admin API. It is a CA of its own, apart from the attestation CA, so that no
// host identity can ever pass for an operator.
type Operators struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey // nil when loaded only to verify

	mu      sync.Mutex
	revoked map[string]bool // serials
	stamp   string          // the revocation list's size and time when read
}

// InitOperators creates the operator CA in dir, unless it exists, as
// InitCA does: under dir's LockFile, the key first, the certificate last.
func InitOperators(dir string, validity time.Duration) error {
	err := initOnce(dir, OperatorCAFile, func() ([]pemFile, error) {
		now := time.Now()
		ca, key, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "bootgate operator CA"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}, nil, nil)
		if err != nil {
			return nil, err
		}
		return []pemFile{{name: OperatorCAKeyFile, key: key}, {name: OperatorCAFile, cert: ca}}, nil
	})
	if err != nil {
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
	o := &Operators{dir: dir, cert: cert}
	if _, err := o.isRevoked(""); err != nil {
		return nil, fmt.Errorf("load operator CA: %w", err)
	}
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
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.MkdirAll(filepath.Join(o.dir, IssuedDir), 0o700); err != nil {
		return nil, nil, fmt.Errorf("issue operator certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.dir, IssuedDir, cert.SerialNumber.Text(16)+".pem"), certPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("issue operator certificate: keep a copy: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// IssuedOperator is a certificate the operator CA issued.
type IssuedOperator struct {
	Name     string    `json:"name"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	Revoked  bool      `json:"revoked"`
}

// Issued lists the certificates the operator CA issued, by name.
func (o *Operators) Issued() ([]IssuedOperator, error) {
	entries, err := os.ReadDir(filepath.Join(o.dir, IssuedDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	var out []IssuedOperator
	for _, e := range entries {
		der, err := readPEM(filepath.Join(o.dir, IssuedDir, e.Name()), "CERTIFICATE")
		if err != nil {
			return nil, fmt.Errorf("list operators: %w", err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("list operators: %s: %w", e.Name(), err)
		}
		serial := c.SerialNumber.Text(16)
		revoked, err := o.isRevoked(serial)
		if err != nil {
			return nil, err
		}
		out = append(out, IssuedOperator{Name: c.Subject.CommonName, Serial: serial, NotAfter: c.NotAfter, Revoked: revoked})
	}
	slices.SortFunc(out, func(a, b IssuedOperator) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.NotAfter.Compare(b.NotAfter))
	})
	return out, nil
}

// Revoke revokes every certificate issued to the operator that is not
// revoked yet and returns their serials. The admin API refuses them from its
// next request on.
func (o *Operators) Revoke(name string) ([]string, error) {
	issued, err := o.Issued()
	if err != nil {
		return nil, err
	}
	var lines []byte
	var serials []string
	for _, op := range issued {
		if op.Name == name && !op.Revoked {
			serials = append(serials, op.Serial)
			lines = fmt.Appendf(lines, "%s %s\n", op.Serial, op.Name)
		}
	}
	if len(serials) == 0 {
		return nil, fmt.Errorf("revoke: no unrevoked certificate was issued to %q", name)
	}
	f, err := os.OpenFile(filepath.Join(o.dir, RevokedFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	if _, err := f.Write(lines); err != nil {
		f.Close()
		return nil, fmt.Errorf("revoke: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("revoke: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	return serials, nil
}

// isRevoked reports whether the serial is on the revocation list, rereading
// the list when its size or time changed. An unreadable list fails closed.
func (o *Operators) isRevoked(serial string) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	path := filepath.Join(o.dir, RevokedFile)
	fi, err := os.Stat(path)
	stamp := "none"
	switch {
	case err == nil:
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	case !errors.Is(err, fs.ErrNotExist):
		return true, fmt.Errorf("operator revocation list: %w", err)
	}
	if stamp != o.stamp {
		revoked := map[string]bool{}
		if stamp != "none" {
			b, err := os.ReadFile(path)
			if err != nil {
				return true, fmt.Errorf("operator revocation list: %w", err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
					revoked[strings.ToLower(f[0])] = true
				}
			}
		}
		o.revoked, o.stamp = revoked, stamp
	}
	return o.revoked[serial], nil
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
	if revoked, err := o.isRevoked(leaf.SerialNumber.Text(16)); err != nil || revoked {
		if err == nil {
			err = fmt.Errorf("operator certificate %s of %q is revoked", leaf.SerialNumber.Text(16), leaf.Subject.CommonName)
		}
		return "", err
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

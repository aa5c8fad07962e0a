package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// newCert makes an ECDSA P-256 key and a certificate for it from tmpl,
// signed by parent with parentKey, or self-signed when parent is nil.
func newCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial()
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// pemFile is a certificate (mode 0644) or a private key (mode 0600) to write.
type pemFile struct {
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// writePEM writes files into dir, creating it.
func writePEM(dir string, files []pemFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range files {
		blk, mode := &pem.Block{Type: "CERTIFICATE"}, os.FileMode(0o644)
		if f.key != nil {
			der, err := x509.MarshalPKCS8PrivateKey(f.key)
			if err != nil {
				return err
			}
			blk, mode = &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600
		} else {
			blk.Bytes = f.cert.Raw
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), pem.EncodeToMemory(blk), mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

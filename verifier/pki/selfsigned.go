// Package pki makes the appliance's certificates (attestation CA, operator
// CA, TLS) and reads TPM endorsement-key certificates: ParseEKCertificate and
// CheckEKProfile (TCG EK Credential Profile for TPM Family 2.0).
package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files written by WriteServerTLS.
const (
	CAFile        = "ca.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// WriteServerTLS creates a CA and a server certificate for hosts (IP addresses
// or DNS names) in dir: the agent trusts the CA (it is built into its
// initramfs), the API serves the certificate. The CA key is not kept: this CA
// signs this one certificate only. Existing files are not overwritten.
func WriteServerTLS(dir string, hosts []string, validity time.Duration) error {
	for _, f := range []string{CAFile, ServerFile, ServerKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("write server TLS: %s exists", filepath.Join(dir, f))
		}
	}
	now := time.Now()
	ca, caKey, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "bootgate appliance CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity), KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}, nil, nil)
	if err != nil {
		return fmt.Errorf("write server TLS: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "bootgate appliance"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, key, err := newCert(tmpl, ca, caKey)
	if err != nil {
		return fmt.Errorf("write server TLS: %w", err)
	}
	if err := writePEM(dir, []pemFile{{name: CAFile, cert: ca}, {name: ServerFile, cert: cert}, {name: ServerKeyFile, key: key}}); err != nil {
		return fmt.Errorf("write server TLS: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

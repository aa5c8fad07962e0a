package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, chain, notAfter, err := ca.Issue(&key.PublicKey, "host-1", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		ic, _ := x509.ParseCertificate(c)
		inter.AddCert(ic)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("identity does not chain to the root: %v", err)
	}
	if HostID(cert) != "host-1" || !notAfter.Equal(cert.NotAfter) || notAfter.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Errorf("host %q, not after %v (capped by the issuing CA's hour?)", HostID(cert), notAfter)
	}
	// The root key can go offline: issuing needs only the issuing CA.
	if err := os.Remove(filepath.Join(dir, RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err != nil {
		t.Fatalf("without the root key: %v", err)
	}
}

// BenchmarkIssue is what an identity adds to an admitted host's attestation:
// one certificate signed by the issuing CA.
func BenchmarkIssue(b *testing.B) {
	dir := b.TempDir()
	if err := InitCA(dir, time.Hour); err != nil {
		b.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := ca.Issue(&key.PublicKey, "host", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	id, err := ca.Issue(&key.PublicKey, "host-1", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	der, chain, notAfter := id.DER, id.Chain, id.NotAfter
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SerialNumber.Cmp(id.Serial) != 0 {
		t.Errorf("serial %x, certificate's %x", id.Serial, cert.SerialNumber)
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
		if _, err := ca.Issue(&key.PublicKey, "host", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOperators(t *testing.T) {
	dir := t.TempDir()
	if err := InitOperators(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ops, err := LoadOperators(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ops.Issue("alice", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verifyOnly, err := LoadOperators(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parsePEMCert(t, certPEM)
	if name, err := verifyOnly.Verify([]*x509.Certificate{leaf}, time.Now()); err != nil || name != "alice" {
		t.Fatalf("operator certificate: %q, %v", name, err)
	}
	if leaf.NotAfter.After(time.Now().Add(time.Hour + time.Minute)) {
		t.Errorf("operator certificate outlives its CA: %v", leaf.NotAfter)
	}
	if _, err := verifyOnly.Verify([]*x509.Certificate{leaf}, time.Now().Add(2*time.Hour)); err == nil {
		t.Error("an expired operator certificate verified")
	}
	if _, err := verifyOnly.Verify(nil, time.Now()); err == nil {
		t.Error("no certificate verified")
	}

	// Revoking alice: the running verifier refuses her from then on, bob
	// stays, and the list shows both.
	bobPEM, _, err := ops.Issue("bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if serials, err := ops.Revoke("alice"); err != nil || len(serials) != 1 || serials[0] != leaf.SerialNumber.Text(16) {
		t.Fatalf("revoke alice: %v %v", serials, err)
	}
	if _, err := verifyOnly.Verify([]*x509.Certificate{leaf}, time.Now()); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a revoked operator verified: %v", err)
	}
	if name, err := verifyOnly.Verify([]*x509.Certificate{parsePEMCert(t, bobPEM)}, time.Now()); err != nil || name != "bob" {
		t.Errorf("bob after alice's revocation: %q %v", name, err)
	}
	if _, err := ops.Revoke("alice"); err == nil {
		t.Error("revoked alice twice")
	}
	issued, err := verifyOnly.Issued()
	if err != nil || len(issued) != 2 || issued[0].Name != "alice" || !issued[0].Revoked || issued[1].Name != "bob" || issued[1].Revoked {
		t.Errorf("issued: %+v %v", issued, err)
	}
	if _, _, err := verifyOnly.Issue("bob", time.Hour); err == nil {
		t.Error("issued without the CA key")
	}
	for _, bad := range []string{"", "Alice", "../x", "a b"} {
		if _, _, err := ops.Issue(bad, time.Hour); err == nil {
			t.Errorf("issued for name %q", bad)
		}
	}

	// A host identity from the attestation CA is no operator certificate.
	caDir := t.TempDir()
	if err := InitCA(caDir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := ca.Issue(&key.PublicKey, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hostCert, _ := x509.ParseCertificate(id.DER)
	issuing, _ := x509.ParseCertificate(id.Chain[0])
	if _, err := verifyOnly.Verify([]*x509.Certificate{hostCert, issuing}, time.Now()); err == nil {
		t.Error("a host identity verified as an operator")
	}
	// Another appliance's operator CA is not this one's.
	other := t.TempDir()
	if err := InitOperators(other, time.Hour); err != nil {
		t.Fatal(err)
	}
	otherOps, _ := LoadOperators(other, true)
	foreign, _, _ := otherOps.Issue("alice", time.Hour)
	if _, err := verifyOnly.Verify([]*x509.Certificate{parsePEMCert(t, foreign)}, time.Now()); err == nil {
		t.Error("another CA's operator verified")
	}

	// An unreadable revocation list fails closed.
	if err := os.Remove(filepath.Join(dir, RevokedFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, RevokedFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyOnly.Verify([]*x509.Certificate{parsePEMCert(t, bobPEM)}, time.Now()); err == nil {
		t.Error("verified with an unreadable revocation list")
	}
}

func parsePEMCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInitCATogether: appliances sharing a CA directory start together.
// In each of 50 new directories two callers InitCA and LoadCA at once:
// neither fails, both load the same CA, and its key is the certificate's.
func TestInitCATogether(t *testing.T) {
	for round := range 50 {
		dir := filepath.Join(t.TempDir(), "pki")
		var cas [2]*CA
		var errs [2]error
		var wg sync.WaitGroup
		for i := range cas {
			wg.Go(func() {
				if errs[i] = InitCA(dir, time.Hour); errs[i] == nil {
					cas[i], errs[i] = LoadCA(dir)
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, caller %d: %v", round, i, err)
			}
		}
		a, b := cas[0], cas[1]
		if !a.issuing.Equal(b.issuing) || !a.Root.Equal(b.Root) {
			t.Fatalf("round %d: the callers loaded different CAs (issuing serials %x and %x)", round, a.issuing.SerialNumber, b.issuing.SerialNumber)
		}
		for i, ca := range cas {
			if !ca.key.Public().(*ecdsa.PublicKey).Equal(ca.issuing.PublicKey) {
				t.Fatalf("round %d, caller %d: the issuing key is not the issuing certificate's", round, i)
			}
		}
	}
}

// TestLoadCAMismatchedKey: a directory whose issuing key is not its issuing
// certificate's is refused, naming both files.
func TestLoadCAMismatchedKey(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if err := InitCA(d, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(other, IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, IssuingKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCA(dir)
	if err == nil || !strings.Contains(err.Error(), IssuingKeyFile) || !strings.Contains(err.Error(), IssuingCertFile) {
		t.Fatalf("LoadCA with another CA's issuing key: %v, want a refusal naming %s and %s", err, IssuingKeyFile, IssuingCertFile)
	}
}

// TestInitCAKeepsACompleteCA: a second InitCA leaves the CA as it is; one
// finding an incomplete directory (no issuing certificate: a crash during
// the first) makes the whole CA anew.
func TestInitCAKeepsACompleteCA(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	first, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := InitCA(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	again, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.issuing.Equal(first.issuing) {
		t.Fatal("a second InitCA replaced the issuing CA")
	}
	if err := os.Remove(filepath.Join(dir, IssuingCertFile)); err != nil {
		t.Fatal(err)
	}
	if err := InitCA(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	remade, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("after InitCA over an incomplete directory: %v", err)
	}
	if remade.Root.Equal(first.Root) {
		t.Error("the root was kept with a new issuing CA, want a whole new CA")
	}
}

// TestInitOperatorsTogether: as TestInitCATogether, for the operator CA,
// which appliances with an admin API create at start too.
func TestInitOperatorsTogether(t *testing.T) {
	for round := range 20 {
		dir := filepath.Join(t.TempDir(), "operators")
		var ops [2]*Operators
		var errs [2]error
		var wg sync.WaitGroup
		for i := range ops {
			wg.Go(func() {
				if errs[i] = InitOperators(dir, time.Hour); errs[i] == nil {
					ops[i], errs[i] = LoadOperators(dir, true) // checks the key is the certificate's
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, caller %d: %v", round, i, err)
			}
		}
		if !ops[0].cert.Equal(ops[1].cert) {
			t.Fatalf("round %d: the callers loaded different operator CAs", round)
		}
	}
}

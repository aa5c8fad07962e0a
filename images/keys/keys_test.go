package keys

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/foxboron/go-uefi/efi/signature"
)

func TestEnsureCreatesSelfSignedRSA2048(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pairs, statuses, err := Ensure(dir, All(), now)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range All() {
		if statuses[i] != Created {
			t.Errorf("%s: status %q, want %q", s.Name, statuses[i], Created)
		}
		keyPath, pemPath, derPath := s.Paths(dir)
		p, err := Load(dir, s)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		der, err := LoadCertDER(derPath)
		if err != nil {
			t.Fatal(err)
		}
		if !der.Equal(p.Cert) || !der.Equal(pairs[i].Cert) {
			t.Errorf("%s: DER, PEM and returned certificates differ", s.Name)
		}
		c := p.Cert
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok || pub.N.BitLen() != 2048 || p.Key.N.BitLen() != 2048 {
			t.Errorf("%s: want an RSA-2048 key and certificate", s.Name)
		}
		if !IsSelfSigned(c) {
			t.Errorf("%s: not self-signed", s.Name)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("%s: CheckSignatureFrom itself: %v", s.Name, err)
		}
		if c.Subject.CommonName != s.CommonName || c.Issuer.CommonName != s.CommonName {
			t.Errorf("%s: subject %q issuer %q, want %q", s.Name, c.Subject.CommonName, c.Issuer.CommonName, s.CommonName)
		}
		if c.SignatureAlgorithm != x509.SHA256WithRSA {
			t.Errorf("%s: signature algorithm %v", s.Name, c.SignatureAlgorithm)
		}
		if got := c.NotAfter.Sub(c.NotBefore); got != Validity {
			t.Errorf("%s: validity %v, want %v", s.Name, got, Validity)
		}
		if c.NotBefore.After(now) || c.NotAfter.Before(now.AddDate(9, 11, 0)) {
			t.Errorf("%s: validity %v..%v does not cover ten years from %v", s.Name, c.NotBefore, c.NotAfter, now)
		}
		hasCodeSigning := len(c.ExtKeyUsage) == 1 && c.ExtKeyUsage[0] == x509.ExtKeyUsageCodeSigning
		if hasCodeSigning != s.CodeSigning {
			t.Errorf("%s: ext key usage %v", s.Name, c.ExtKeyUsage)
		}
		if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode %v, %v", s.Name, st.Mode(), err)
		}
		if _, err := os.Stat(pemPath); err != nil {
			t.Error(err)
		}
	}
}

func TestEnsureKeepsExisting(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	first, _, err := Ensure(dir, All(), now)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, _, derPath := DB.Paths(dir)
	keyBefore, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	// A lost DER form is rewritten from the PEM form, not reissued.
	if err := os.Remove(derPath); err != nil {
		t.Fatal(err)
	}
	second, statuses, err := Ensure(dir, All(), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range All() {
		want := Kept
		if s == DB {
			want = Completed
		}
		if statuses[i] != want {
			t.Errorf("%s: status %q, want %q", s.Name, statuses[i], want)
		}
		if !first[i].Cert.Equal(second[i].Cert) {
			t.Errorf("%s: certificate changed", s.Name)
		}
	}
	keyAfter, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(keyBefore, keyAfter) {
		t.Error("db key was replaced")
	}

	// A certificate without its key is an error, not a silent replacement.
	orphan := t.TempDir()
	_, pemPath, _ := PK.Paths(orphan)
	_, pkPEM, _ := PK.Paths(dir)
	b, err := os.ReadFile(pkPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pemPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Ensure(orphan, []Spec{PK}, now); err == nil {
		t.Error("Ensure accepted a certificate without a key")
	}
}

func TestLoadRejectsMismatchedPair(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Ensure(dir, []Spec{PK, KEK}, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, kekPEM, _ := KEK.Paths(dir)
	_, pkPEM, _ := PK.Paths(dir)
	b, err := os.ReadFile(kekPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pkPEM, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, PK); err == nil {
		t.Error("Load accepted PK's key with KEK's certificate")
	}
}

func TestSignatureDatabaseRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pairs, _, err := Ensure(dir, []Spec{DB, OtherDB}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := SignatureDatabase(pairs[0].Cert, pairs[1].Cert)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := signature.ReadSignatureDatabase(bytes.NewReader(db.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	certs, other, err := DatabaseCerts(&parsed)
	if err != nil {
		t.Fatal(err)
	}
	if other != 0 || len(certs) != 2 || !certs[0].Equal(pairs[0].Cert) || !certs[1].Equal(pairs[1].Cert) {
		t.Errorf("round trip: %d certificates, %d other entries", len(certs), other)
	}
	if _, err := SignatureDatabase(); err == nil {
		t.Error("empty signature database accepted")
	}
}

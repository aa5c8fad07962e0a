package boot

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/foxboron/go-uefi/authenticode"
)

// stub is a real PE image to sign: systemd's EFI stub (Debian package
// systemd-boot-efi, which the project's dependency script installs).
const stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

func signer(t *testing.T, cn string) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

func TestVerifyKernel(t *testing.T) {
	img, err := os.ReadFile(stub)
	if err != nil {
		t.Skipf("no PE image to sign: %v", err)
	}
	key, cert := signer(t, "production OS signer")
	_, other := signer(t, "someone else")
	pe, err := authenticode.Parse(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pe.Sign(key, cert); err != nil {
		t.Fatal(err)
	}
	signed := pe.Bytes()
	if err := verifyPE(signed, cert); err != nil {
		t.Fatalf("signed image refused: %v", err)
	}
	altered := bytes.Clone(signed)
	altered[0x400] ^= 0xff // inside the first section
	for name, tc := range map[string]struct {
		img  []byte
		cert *x509.Certificate
	}{
		"unsigned":     {img, cert},
		"other signer": {signed, other},
		"altered":      {altered, cert},
		"not a PE":     {[]byte("MZ but nothing else"), cert},
	} {
		if err := verifyPE(tc.img, tc.cert); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
}

package roca

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootgate/bootgate/internal/roca/rocatest"
)

// TestFingerprints anchors the computed subgroups to the first values of
// the published detector's table.
func TestFingerprints(t *testing.T) {
	for i, want := range []int64{6, 30, 126, 1026, 5658, 107286, 199410, 8388606} {
		if fingerprints[i].Cmp(big.NewInt(want)) != 0 {
			t.Errorf("fingerprint mod %d = %v, want %d", primes[i], fingerprints[i], want)
		}
	}
}

// vulnerablePrime makes a prime of the vulnerable form k·M + (65537^a mod M),
// M the product of the detector's primes (and 2), as the Infineon generator
// did; bits is the prime's approximate size.
func vulnerablePrime(t *testing.T, bits int) *big.Int {
	t.Helper()
	m := big.NewInt(2)
	for _, p := range primes {
		m.Mul(m, big.NewInt(p))
	}
	for range 100000 {
		a, err := rand.Int(rand.Reader, big.NewInt(1<<40))
		if err != nil {
			t.Fatal(err)
		}
		// k in [3·2^(bits-2)/M, 2^bits/M): p has bits bits and its two top
		// bits set, so that a product of two has exactly 2·bits bits.
		lo := new(big.Int).Div(new(big.Int).Lsh(big.NewInt(3), uint(bits-2)), m)
		hi := new(big.Int).Div(new(big.Int).Lsh(big.NewInt(1), uint(bits)), m)
		k, err := rand.Int(rand.Reader, new(big.Int).Sub(hi, lo))
		if err != nil {
			t.Fatal(err)
		}
		k.Add(k, lo)
		p := new(big.Int).Exp(big.NewInt(65537), a, m)
		p.Add(p, k.Mul(k, m))
		if p.ProbablyPrime(20) {
			return p
		}
	}
	t.Fatal("no prime found")
	return nil
}

// TestVulnerable detects freshly made moduli of the vulnerable form, and the
// test vector other packages' tests use, and passes real EKs and Go keys.
func TestVulnerable(t *testing.T) {
	n := new(big.Int).Mul(vulnerablePrime(t, 1024), vulnerablePrime(t, 1024))
	if n.BitLen() != 2048 {
		t.Fatalf("modulus of %d bits", n.BitLen())
	}
	if !Vulnerable(n) {
		t.Fatalf("a modulus of the vulnerable form is not detected")
	}
	if err := Check(&rsa.PublicKey{N: n, E: 65537}); err != ErrVulnerable {
		t.Fatalf("Check = %v, want ErrVulnerable", err)
	}
	if os.Getenv("ROCA_WRITE_VECTOR") != "" {
		if err := os.WriteFile("testdata/vulnerable-modulus.hex", []byte(n.Text(16)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !Vulnerable(rocatest.Modulus(t)) {
		t.Fatalf("the test vector is not detected")
	}

	// Real EK certificates of TPMs made after the fix, and fresh keys.
	certs, err := filepath.Glob("../../verifier/pki/testdata/ekcerts/leaf-*.der")
	if err != nil || len(certs) == 0 {
		t.Fatalf("no EK certificates: %v", err)
	}
	for _, f := range certs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(b)
		if err != nil || c.PublicKey == nil {
			continue // RSAES-OAEP keys: verifier/pki recovers them
		}
		if err := Check(c.PublicKey); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
	for range 5 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if Vulnerable(k.N) {
			t.Errorf("a fresh Go key is reported vulnerable")
		}
	}
	if Vulnerable(nil) || Vulnerable(big.NewInt(0)) {
		t.Errorf("nil or zero reported vulnerable")
	}
}

// Package rocatest gives tests a known ROCA-vulnerable RSA modulus.
package rocatest

import (
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Modulus returns a known-vulnerable RSA-2048 modulus for tests: the
// product of two primes of the form k·M + (65537^a mod M), made with the
// package's test (ROCA_WRITE_VECTOR=1 go test ./internal/roca remakes it).
func Modulus(t testing.TB) *big.Int {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "testdata", "vulnerable-modulus.hex"))
	if err != nil {
		t.Fatalf("roca test vector: %v", err)
	}
	n, ok := new(big.Int).SetString(strings.TrimSpace(string(b)), 16)
	if !ok {
		t.Fatal("roca test vector: not hex")
	}
	return n
}

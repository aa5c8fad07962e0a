package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Extend moves the PCR in every allocated bank, not only in SHA-256: a
// boundary extended after a pass must show in a quote of either bank.
func TestExtendCoversEveryBank(t *testing.T) {
	tp := tpmtest.Simulator(t, tpmtest.NewCA(t))
	before256, err := tp.BankPCRs(crypto.SHA256, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	before1, err := tp.BankPCRs(crypto.SHA1, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	d := wire.BoundaryDigest()
	if err := tp.Extend(wire.BoundaryPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	after256, err := tp.BankPCRs(crypto.SHA256, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	after1, err := tp.BankPCRs(crypto.SHA1, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	want256 := sha256.Sum256(append(bytes.Clone(before256[wire.BoundaryPCR]), d[:]...))
	if !bytes.Equal(after256[wire.BoundaryPCR], want256[:]) {
		t.Errorf("SHA-256 PCR %d = %x, want %x", wire.BoundaryPCR, after256[wire.BoundaryPCR], want256)
	}
	b1 := wire.BoundaryDigestSHA1()
	want1 := sha1.Sum(append(bytes.Clone(before1[wire.BoundaryPCR]), b1[:]...))
	if !bytes.Equal(after1[wire.BoundaryPCR], want1[:]) {
		t.Errorf("SHA-1 PCR %d = %x, want %x (the SHA-1 bank must move too)", wire.BoundaryPCR, after1[wire.BoundaryPCR], want1)
	}
}

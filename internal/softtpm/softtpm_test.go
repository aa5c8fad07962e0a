package softtpm_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/seal"
	"github.com/bootgate/bootgate/verifier/wire"
)

// newTPM manufactures a software TPM whose PCRs hold the replay of the
// recorded rhel8-uefi log, and returns it with that log.
func newTPM(t *testing.T, m *softtpm.Manufacturer) (*softtpm.TPM, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "eventlogs", "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := softtpm.Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := softtpm.New(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.SetPCRs(pcrs); err != nil {
		t.Fatal(err)
	}
	return tp, raw
}

func enrollRequest(tp *softtpm.TPM) *wire.EnrollRequest {
	pub, cd, att, sig := tp.AKParams()
	return &wire.EnrollRequest{EKCert: tp.EKCert(), EKPublic: tp.EKPublic(),
		AK: wire.AKParams{Public: pub, CreateData: cd, CreateAttestation: att, CreateSignature: sig}}
}

var quoted = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// TestVerifierAcceptsSoftTPM runs the verifier's own checks on what a
// software TPM answers: EK provenance and AK creation, credential
// activation, quote and event log, identity key certification, and the
// unsealing of a secret sealed to the quoted PCRs.
func TestVerifierAcceptsSoftTPM(t *testing.T) {
	m, err := softtpm.NewManufacturer("softtpm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	tp, raw := newTPM(t, m)
	roots := attest.NewRoots(m.CertChain(), nil)
	enr, err := roots.Enroll(enrollRequest(tp), time.Now())
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	secret, cred, encSecret, err := enr.Challenge(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.ActivateCredential(cred, encSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("activated %x, want %x", got, secret)
	}
	nonce := make([]byte, 32)
	mac, ip := net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("127.1.0.1")
	qd, err := wire.QualifyingData(nonce, mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	quote, sig, err := tp.Quote(qd, quoted)
	if err != nil {
		t.Fatal(err)
	}
	q := &wire.QuoteRequest{ActivationSecret: got, Quote: quote, Signature: sig, EventLog: raw, MAC: mac.String(), IP: ip.String()}
	for _, i := range quoted {
		q.PCRs = append(q.PCRs, wire.PCR{Index: i, Digest: tp.PCR(i)})
	}
	exp := attest.Expected{Secret: secret, Nonce: nonce, PCRs: quoted, Unlogged: attest.DefaultUnlogged, Fresh: []int{wire.BoundaryPCR}}
	if _, err := enr.Verify(exp, q, attest.DirectLogs); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	certify, csig, err := tp.CertifyIdentity(nonce)
	if err != nil {
		t.Fatal(err)
	}
	key, err := enr.VerifyIdentityKey(&wire.IdentityRequest{Public: tp.IdentityPublic(), CertifyInfo: certify, Signature: csig}, nonce)
	if err != nil {
		t.Fatalf("VerifyIdentityKey: %v", err)
	}
	if !tp.IdentityKey().Equal(key) {
		t.Fatal("the certified key is not the identity key")
	}

	sealed := map[int][]byte{}
	for _, p := range q.PCRs {
		if p.Index != 10 {
			sealed[p.Index] = p.Digest
		}
	}
	blob, err := seal.Seal(rand.Reader, tp.EKPublic(), sealed, []byte("bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := tp.Unseal(blob.Public, blob.Duplicate, blob.EncryptedSeed, blob.PCRs)
	if err != nil || string(v) != "bootstrap" {
		t.Fatalf("Unseal = %q, %v", v, err)
	}

	// What a TPM refuses, softtpm refuses.
	other, _ := newTPM(t, m)
	if _, err := other.ActivateCredential(cred, encSecret); !errors.Is(err, softtpm.ErrIntegrity) {
		t.Errorf("another TPM's ActivateCredential: %v, want ErrIntegrity", err)
	}
	if _, err := other.Unseal(blob.Public, blob.Duplicate, blob.EncryptedSeed, blob.PCRs); !errors.Is(err, softtpm.ErrIntegrity) {
		t.Errorf("another TPM's Unseal: %v, want ErrIntegrity", err)
	}
	if err := tp.Extend(wire.BoundaryPCR, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Unseal(blob.Public, blob.Duplicate, blob.EncryptedSeed, blob.PCRs); !errors.Is(err, softtpm.ErrPolicy) {
		t.Errorf("Unseal after the boundary: %v, want ErrPolicy", err)
	}
}

// TestManufacturerSaveLoad: a saved manufacturer loads with the same key.
func TestManufacturerSaveLoad(t *testing.T) {
	m, err := softtpm.NewManufacturer("softtpm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	l, err := softtpm.LoadManufacturer(dir)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := softtpm.New(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.NewRoots(m.CertChain(), nil).Enroll(enrollRequest(tp), time.Now()); err != nil {
		t.Fatalf("an EK of the loaded manufacturer: %v", err)
	}
}

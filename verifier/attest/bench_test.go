package attest_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// evidence is one attestation's worth of real TPM evidence: a simulated TPM
// with an EK certificate from a test manufacturer, the rhel8 firmware log
// (34 KB, 82 events) replayed into its PCRs, a fresh ECC AK, its activation
// and a quote over PCRs 0-15.
type evidence struct {
	ca     *tpmtest.CA
	roots  *attest.Roots
	enroll wire.EnrollRequest
	exp    attest.Expected
	quote  wire.QuoteRequest
	policy *policy.Policy
}

func newEvidence(tb testing.TB) *evidence {
	tb.Helper()
	ca := tpmtest.NewCA(tb)
	tp := tpmtest.Simulator(tb, ca)
	raw := tpmtest.ReplayLog(tb, tp, "rhel8-uefi.bin")
	ek, ak := ekAndAK(tb, tp)
	if ek.Cert == nil {
		tb.Fatal("the simulator's EK has no certificate")
	}
	e := &evidence{ca: ca, roots: ca.Roots()}
	e.enroll = wire.EnrollRequest{EKCert: ek.Cert, EKPublic: ek.Public, AK: ak.Params()}
	enr, err := e.roots.Enroll(&e.enroll, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	secret, cred, encSecret, err := enr.Challenge(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	act, err := ak.ActivateCredential(ek, cred, encSecret)
	if err != nil {
		tb.Fatal(err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	mac, ip := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}, netip.MustParseAddr("10.23.1.17")
	qd, err := wire.QualifyingData(nonce, mac, ip)
	if err != nil {
		tb.Fatal(err)
	}
	q, sig, err := ak.Quote(qd, server.DefaultPCRs)
	if err != nil {
		tb.Fatal(err)
	}
	vals, err := tp.PCRs(server.DefaultPCRs)
	if err != nil {
		tb.Fatal(err)
	}
	e.exp = attest.Expected{Secret: secret, Nonce: nonce, PCRs: server.DefaultPCRs}
	e.quote = wire.QuoteRequest{ActivationSecret: act, Quote: q, Signature: sig, EventLog: raw, MAC: mac.String(), IP: ip.String()}
	for _, i := range server.DefaultPCRs {
		e.quote.PCRs = append(e.quote.PCRs, wire.PCR{Index: i, Digest: vals[i]})
	}
	bank, err := eventlog.Replay(raw)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		tb.Fatal(err)
	}
	learned, _, err := policy.Learn("bench", st, policy.LearnOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	y, err := learned.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	if e.policy, err = policy.Parse(y); err != nil {
		tb.Fatal(err)
	}
	return e
}

// verifyOnce is the whole verification of one attestation: EK chain and AK
// checks, credential generation, activation secret, quote signature, nonce,
// PCR digest and selection, event-log replay and boot state, policy.
func (e *evidence) verifyOnce(tb testing.TB, logs attest.LogVerifier) {
	enr, err := e.roots.Enroll(&e.enroll, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, _, err := enr.Challenge(rand.Reader); err != nil {
		tb.Fatal(err)
	}
	v, err := enr.Verify(e.exp, &e.quote, logs)
	if err != nil {
		tb.Fatal(err)
	}
	if f := e.policy.Evaluate(v.State); len(f) != 0 {
		tb.Fatalf("policy failed: %v", f)
	}
}

func TestBenchmarkEvidenceVerifies(t *testing.T) {
	e := newEvidence(t)
	e.verifyOnce(t, attest.DirectLogs)
	e.verifyOnce(t, eventlog.NewCache(8, 0))
}

// BenchmarkVerifyAttestation measures the full verification of one
// attestation from precomputed evidence. "cold" verifies the event log from
// scratch; "shared-log" is a fleet whose hosts share the log (the cache hits).
func BenchmarkVerifyAttestation(b *testing.B) {
	e := newEvidence(b)
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.verifyOnce(b, attest.DirectLogs)
		}
	})
	b.Run("shared-log", func(b *testing.B) {
		cache := eventlog.NewCache(1024, 0)
		e.verifyOnce(b, cache)
		b.ReportAllocs()
		for b.Loop() {
			e.verifyOnce(b, cache)
		}
	})
}

// BenchmarkCryptoFloor is the unavoidable cryptography of one attestation,
// the yardstick for BenchmarkVerifyAttestation: the EK certificate's
// signature, the AK's creation signature, the credential encryption to the
// EK, the quote's signature and hashing the event log.
func BenchmarkCryptoFloor(b *testing.B) {
	e := newEvidence(b)
	ekCert, err := x509.ParseCertificate(e.enroll.EKCert)
	if err != nil {
		b.Fatal(err)
	}
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](e.enroll.EKPublic)
	if err != nil {
		b.Fatal(err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		b.Fatal(err)
	}
	akT, err := tpm2.Unmarshal[tpm2.TPMTPublic](e.enroll.AK.Public)
	if err != nil {
		b.Fatal(err)
	}
	akKey, err := tpm2.Pub(*akT)
	if err != nil {
		b.Fatal(err)
	}
	ak := akKey.(*ecdsa.PublicKey)
	name, _ := tpm2.ObjectName(akT)
	createSig := ecdsaSig(b, e.enroll.AK.CreateSignature)
	quoteSig := ecdsaSig(b, e.quote.Signature)
	secret := make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		if err := ekCert.CheckSignatureFrom(e.ca.Cert()); err != nil {
			b.Fatal(err)
		}
		h := sha256.Sum256(e.enroll.AK.CreateAttestation)
		if !ecdsa.Verify(ak, h[:], createSig.r, createSig.s) {
			b.Fatal("creation signature")
		}
		if _, _, err := tpm2.CreateCredential(rand.Reader, kem, name.Buffer, secret); err != nil {
			b.Fatal(err)
		}
		h = sha256.Sum256(e.quote.Quote)
		if !ecdsa.Verify(ak, h[:], quoteSig.r, quoteSig.s) {
			b.Fatal("quote signature")
		}
		_ = sha256.Sum256(e.quote.EventLog)
	}
}

type rs struct{ r, s *big.Int }

func ecdsaSig(tb testing.TB, b []byte) rs {
	tb.Helper()
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](b)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := sig.Signature.ECDSA()
	if err != nil {
		tb.Fatal(err)
	}
	return rs{new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)}
}

package server_test

import (
	"context"
	"crypto"
	"net/http"
	"strings"
	"testing"
	"time"

	legacytpm2 "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// sha1Policy learns goodLog's policy in the SHA-1 bank (pcr_bank: sha1).
func sha1Policy(t *testing.T) *policy.Policy {
	t.Helper()
	raw := tpmtest.EventLog(t, goodLog)
	bank, err := eventlog.ReplayBank(raw, crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		t.Fatal(err)
	}
	learned, _, err := policy.Learn(goodLog, st, policy.LearnOptions{AllowSHA1: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := learned.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(b)
	if err != nil || p.Bank() != crypto.SHA1 {
		t.Fatalf("parse learned SHA-1 policy (%v): %v\n%s", p.Bank(), err, b)
	}
	return p
}

// A pcr_bank: sha1 policy: the verifier names the bank, the agent quotes
// it, the log's SHA-1 digests are replayed against it, and the
// credentials are sealed to the SHA-1 PCRs, which the boundary then moves.
func TestSHA1BankOnline(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	if _, err := tp.ReplayEventLogSHA1(raw); err != nil {
		t.Skipf("the simulator has no SHA-1 bank to replay into: %v", err)
	}
	pol := sha1Policy(t)
	f := newFixture(t, ca.Roots(), func(o *server.Options) { o.Policy = pol })
	agent, rec := recordedAgent(f)
	rep, err := agent.Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if !strings.Contains(string(rec.answers[wire.PathEnroll]), `"pcr_bank":"sha1"`) {
		t.Errorf("the enrollment answer does not name the SHA-1 bank: %s", rec.answers[wire.PathEnroll])
	}
	res := rep.Result
	if res.Verdict != wire.VerdictPass || len(res.Credentials) == 0 {
		t.Fatalf("verdict %s, reasons %+v, %d credentials", res.Verdict, res.Reasons, len(res.Credentials))
	}
	a := attestations(t, f.st)[0]
	for _, p := range a.Evidence.PCRs {
		if len(p.Digest) != crypto.SHA1.Size() {
			t.Fatalf("PCR %d sent as %d bytes, not SHA-1", p.Index, len(p.Digest))
		}
	}
	ek, err := tp.ReloadEK(rep.EK)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.CloseEK(ek)
	c := res.Credentials[0]
	blob := &tpm.SealedBlob{Public: c.Public, Duplicate: c.Duplicate, EncryptedSeed: c.EncryptedSeed, PCRs: c.PCRs, Bank: crypto.SHA1}
	if c.PCRBank != wire.BankSHA1 {
		t.Fatalf("credential sealed to bank %q", c.PCRBank)
	}
	if _, err := tp.Unseal(ek, blob); err != nil {
		t.Fatalf("unseal in the attested state: %v", err)
	}
	b1 := wire.BoundaryDigestSHA1()
	if err := tp.ExtendSHA1(wire.BoundaryPCR, b1[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Unseal(ek, blob); err == nil {
		t.Fatal("unsealed again after the SHA-1 boundary moved")
	}
	// A quote after the boundary is refused as one.
	rep, err = f.agent().Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if rep.Result.Verdict == wire.VerdictPass || !hasRule(rep.Result.Reasons, "evidence.boundary") {
		t.Errorf("after the boundary: verdict %s, reasons %+v", rep.Result.Verdict, rep.Result.Reasons)
	}
}

// A log without the policy's bank fails by one rule, naming the bank; the
// default (SHA-256) policy is unchanged.
func TestBankMismatchOnline(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	l, err := eventlogtest.Parse(tpmtest.EventLog(t, goodLog))
	if err != nil {
		t.Fatal(err)
	}
	raw := l.Only(tpm2.TPMAlgSHA256).Bytes() // the good log without its SHA-1 digests
	if _, err := tp.ReplayEventLog(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.ReplayEventLogSHA1(tpmtest.EventLog(t, goodLog)); err != nil {
		t.Skipf("the simulator has no SHA-1 bank to replay into: %v", err)
	}
	f := newFixture(t, ca.Roots(), func(o *server.Options) { o.Policy = sha1Policy(t) })
	rep, err := f.agent().Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	rs := rep.Result.Reasons
	if rep.Result.Verdict == wire.VerdictPass || len(rs) != 1 || !strings.Contains(rs[0].Detail, "SHA-1") {
		t.Errorf("verdict %s, reasons %+v; want one reason naming the SHA-1 bank", rep.Result.Verdict, rs)
	}
}

// recordedAgent is the fixture's agent with its exchanges recorded.
func recordedAgent(f *fixture) (*client.Client, *recorder) {
	rec := &recorder{rt: f.ts.Client().Transport, requests: map[string][]byte{}, answers: map[string][]byte{}}
	agent := f.agent()
	agent.HTTP = &http.Client{Transport: rec, Timeout: 30 * time.Second}
	return agent, rec
}

// The default policy (SHA-256) names no bank: the enrollment answer is
// what it was before banks could be named, and the agent quotes SHA-256.
func TestDefaultBankUnchanged(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	f := newFixture(t, ca.Roots())
	agent, rec := recordedAgent(f)
	rep, err := agent.Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if rep.Result.Verdict != wire.VerdictPass || strings.Contains(string(rec.answers[wire.PathEnroll]), "pcr_bank") {
		t.Errorf("verdict %s; enrollment answer %s", rep.Result.Verdict, rec.answers[wire.PathEnroll])
	}
	for _, c := range rep.Result.Credentials {
		if c.PCRBank != "" {
			t.Errorf("credential %s names bank %q", c.Name, c.PCRBank)
		}
	}
}

// TestBoundaryQuoteTakenBeforeHandover: a host takes its SHA-256 boundary
// quote while PCR 15 is still zero, lets the boot be handed over (marked in
// SHA-256 only, as an older agent does), then takes the SHA-1 quote over
// the same session. The boundary quote is older than the main quote: it
// cannot vouch for it, and the attestation fails evidence.boundary.
func TestBoundaryQuoteTakenBeforeHandover(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	if _, err := tp.ReplayEventLogSHA1(raw); err != nil {
		t.Skipf("no SHA-1 bank: %v", err)
	}
	f := newFixture(t, ca.Roots())
	f.srv.SetPolicy(sha1Policy(t))
	h := newHost(t, tp)
	enr := f.enroll(t, h.enrollRequest())
	secret := h.activate(t, enr)
	qd := local(t, enr.Nonce)
	bq, bsig, err := h.ak.QuoteBank(qd, crypto.SHA256, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	b := wire.BoundaryDigest()
	if err := tp.ExtendBank(crypto.SHA256, wire.BoundaryPCR, b[:]); err != nil {
		t.Fatal(err)
	}
	// A handover takes seconds; here, the TPM's clock moves on at least a
	// tick before the main quote (within 5 s of waiting: not a measure).
	battest, err := legacytpm2.DecodeAttestationData(bq)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		rc, err := tpm2.ReadClock{}.Execute(tp.Transport())
		if err != nil {
			t.Fatal(err)
		}
		if rc.CurrentTime.ClockInfo.Clock > battest.ClockInfo.Clock {
			break
		}
		if i == 1000 {
			t.Fatal("the TPM's clock did not move in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	quote, sig, err := h.ak.QuoteBank(qd, crypto.SHA1, enr.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.BankPCRs(crypto.SHA1, enr.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	q := wire.QuoteRequest{Session: enr.Session, ActivationSecret: secret, Quote: quote, Signature: sig, EventLog: raw,
		MAC: loopbackMAC.String(), IP: loopbackIP.String(),
		Boundary: &wire.BoundaryQuote{Quote: bq, Signature: bsig, PCRs: []wire.PCR{{Index: wire.BoundaryPCR, Digest: make([]byte, 32)}}}}
	for _, i := range enr.PCRs {
		q.PCRs = append(q.PCRs, wire.PCR{Index: i, Digest: vals[i]})
	}
	res := f.quote(t, q)
	if res.Verdict == wire.VerdictPass || len(res.Credentials) != 0 || len(res.Reasons) == 0 || res.Reasons[0].Rule != "evidence.boundary" {
		t.Fatalf("boundary quote taken before the handover, SHA-1 quote after it: verdict %s, %d credentials, reasons %+v; want a fail by evidence.boundary",
			res.Verdict, len(res.Credentials), res.Reasons)
	}
}

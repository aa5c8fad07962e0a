package server_test

import (
	"context"
	"testing"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/wire"
)

// A policy put in force with SetPolicy decides the next attestation, and
// is the one recorded with it.
func TestSetPolicyDecidesTheNextAttestation(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	f := newFixture(t, ca.Roots())
	rep, err := f.agent().Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result.Verdict != wire.VerdictPass {
		t.Fatalf("before the reload: %s %v", rep.Result.Verdict, rep.Result.Reasons)
	}

	// The policy learned from another machine's log refuses this one.
	other := tpmtest.EventLog(t, "cos-101-amd-sev")
	bank, err := eventlog.Replay(other)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Verify(other, bank)
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := policy.Learn("other", st, policy.LearnOptions{AllowSecureBootOff: true, AllowEmptyKeys: true, AllowUnverifiedBootApps: true, AllowAnyBootApp: true, AllowDebug: true})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(pol)
	rep, err = f.agent().Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result.Verdict != wire.VerdictFail || rep.Result.PolicyDigest != pol.Digest() {
		t.Fatalf("after the reload: %s under policy %s, want a fail under %s", rep.Result.Verdict, rep.Result.PolicyDigest, pol.Digest())
	}
}

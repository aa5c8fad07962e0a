package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// switchAfterEnroll is a transport that, once an enrollment is answered,
// runs switchPolicy: the operator changes the policy between the agent's
// enrollment and its quote.
type switchAfterEnroll struct {
	rt           http.RoundTripper
	switchPolicy func()
	done         bool
}

func (s *switchAfterEnroll) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.rt.RoundTrip(r)
	if err == nil && r.URL.Path == wire.PathEnroll && !s.done {
		s.done = true
		s.switchPolicy()
	}
	return resp, err
}

// A host that enrolled under a SHA-256 policy and quotes after the policy
// switched to SHA-1 is told to enroll again: no verdict, no incident,
// nothing stored. Enrolling again, it quotes the new bank and passes.
func TestBankSwitchBetweenEnrollAndQuote(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	if _, err := tp.ReplayEventLogSHA1(raw); err != nil {
		t.Skipf("the simulator has no SHA-1 bank to replay into: %v", err)
	}
	f := newFixture(t, ca.Roots())
	sha1 := sha1Policy(t)
	agent := f.agent()
	agent.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &switchAfterEnroll{
		rt: f.ts.Client().Transport, switchPolicy: func() { f.srv.SetPolicy(sha1) },
	}}
	rep, err := agent.Attest(context.Background(), tp, raw)
	var apiErr *client.APIError
	if err == nil {
		t.Fatalf("Attest after the switch: verdict %s, reasons %+v; want enroll_again", rep.Result.Verdict, rep.Result.Reasons)
	}
	if !errors.As(err, &apiErr) || apiErr.Code != wire.CodeEnrollAgain {
		t.Fatalf("Attest after the switch: %v; want %s", err, wire.CodeEnrollAgain)
	}
	if in := incidents(t, f.st); len(in) != 0 {
		t.Errorf("incidents %+v after a bank switch", in)
	}
	if as := attestations(t, f.st); len(as) != 0 {
		t.Errorf("%d attestations stored for a quote of the old bank", len(as))
	}
	// The agent's retry enrolls under the new bank.
	rep, err = agent.Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest again: %v", err)
	}
	if rep.Result.Verdict != wire.VerdictPass {
		t.Errorf("enrolled again: verdict %s, reasons %+v", rep.Result.Verdict, rep.Result.Reasons)
	}
}

package server_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// pausing is the store, with a pause after the next admission state read:
// the test lets another attestation of the host through meanwhile.
type pausing struct {
	*store.SQLite
	mu      sync.Mutex
	pause   bool
	reads   int // after the pause was set
	read    chan struct{}
	release chan struct{}
}

func (p *pausing) AdmissionState(ctx context.Context, id string) (admission.State, error) {
	in, err := p.SQLite.AdmissionState(ctx, id)
	p.mu.Lock()
	pause := p.pause
	p.pause = false
	p.reads++
	p.mu.Unlock()
	if pause {
		close(p.read)
		<-p.release
	}
	return in, err
}

// TestPassRacingAFailure: two sessions of one TPM after its incident was
// remediated. Session A's clean quote reads the admission state (remediated:
// it may pass), then session B's failing quote is recorded and reopens the
// incident, then A's decision is applied. A must see that the state it
// decided on changed, decide again and fail (incident.unresolved): the host
// never ends admitted, with an identity, while its incident is open.
func TestPassRacingAFailure(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	dir := t.TempDir()
	if err := pki.InitCA(filepath.Join(dir, "pki"), time.Hour); err != nil {
		t.Fatal(err)
	}
	idCA, err := pki.LoadCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	var p *pausing
	f := newFixture(t, ca.Roots(), func(o *server.Options) {
		p = &pausing{SQLite: o.Store.(*store.SQLite), read: make(chan struct{}), release: make(chan struct{})}
		o.Store = p
		o.CA = idCA
	})
	bad := append([]byte{}, raw...)
	bad[len(bad)-1] ^= 1
	agent := f.agent()
	rep, err := agent.Attest(context.Background(), tp, bad)
	if err != nil || rep.Result.Verdict != wire.VerdictFail {
		t.Fatalf("first: %v %+v", err, rep)
	}
	if err := f.st.Act(context.Background(), rep.Result.IncidentID, "alice", store.IncidentAction{Kind: "remediate", Text: "fixed the log collection"}); err != nil {
		t.Fatal(err)
	}
	// Session B: a failing answer, made before A holds the TPM's object slots.
	eks, err := tp.EKs()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	hb := &host{tp: tp, ek: eks[0], ak: ak}
	enrB := f.enroll(t, hb.enrollRequest())
	qB := hb.answer(t, enrB, bad)
	if err := ak.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ek := range eks {
		if err := tp.CloseEK(ek); err != nil {
			t.Fatal(err)
		}
	}
	p.mu.Lock()
	p.pause, p.reads = true, 0
	p.mu.Unlock()
	idAgent := f.agent()
	idAgent.Identity = true
	done := make(chan *wire.Result, 1)
	go func() {
		rep, err := idAgent.Attest(context.Background(), tp, raw)
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		if rep.IdentityKey != nil {
			rep.IdentityKey.Close()
		}
		done <- &rep.Result
	}()
	select {
	case <-p.read:
	case a := <-done:
		t.Fatalf("A finished without reading: %+v", a)
	case <-time.After(60 * time.Second):
		t.Fatal("A never read")
	}
	if resB := f.quote(t, qB); resB.Verdict != wire.VerdictFail {
		t.Fatalf("B: %+v", resB)
	}
	close(p.release)
	a := <-done
	if a == nil {
		t.FailNow()
	}
	h, err := f.st.Host(context.Background(), a.HostID)
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.st.UnresolvedIncident(context.Background(), a.HostID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("A: verdict %s identity %v reasons %v; host %s; incident %+v", a.Verdict, a.Identity != nil, a.Reasons, h.State, in)
	if in == nil || in.State != store.IncidentOpen || h.State != store.HostQuarantined {
		t.Errorf("host %s, incident %+v; want quarantined with its incident reopened", h.State, in)
	}
	if a.Verdict != wire.VerdictFail || a.Identity != nil || a.Credentials != nil || !hasRule(a.Reasons, admission.RuleIncidentUnresolved) || a.IncidentID != in.ID {
		t.Errorf("A = %+v, want a fail for %s attached to incident %d, no identity, no credentials", a, admission.RuleIncidentUnresolved, in.ID)
	}
	if in.Failures != 3 {
		t.Errorf("incident has %d failures, want 3 (the first, B's, A's)", in.Failures)
	}
	p.mu.Lock()
	reads := p.reads
	p.mu.Unlock()
	if reads != 3 {
		t.Errorf("%d admission state reads, want 3 (A, B, A again after the conflict)", reads)
	}
}

// conflicting is the store, whose Apply always finds the state changed.
type conflicting struct {
	*store.SQLite
	mu      sync.Mutex
	applies int
}

func (c *conflicting) Apply(context.Context, admission.Decision, admission.Revision, *store.Attestation, store.Host) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applies++
	return 0, fmt.Errorf("apply: %w", admission.ErrConflict)
}

// TestSecondConflictFailsClosed: the handler decides again once after a
// conflict; a second conflict is an internal error, and nothing is
// recorded or granted.
func TestSecondConflictFailsClosed(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	var c *conflicting
	f := newFixture(t, ca.Roots(), func(o *server.Options) {
		c = &conflicting{SQLite: o.Store.(*store.SQLite)}
		o.Store = c
	})
	_, err := f.agent().Attest(context.Background(), tp, raw)
	wantAPIError(t, err, http.StatusInternalServerError, wire.CodeInternal)
	c.mu.Lock()
	applies := c.applies
	c.mu.Unlock()
	if applies != 2 {
		t.Errorf("Apply called %d times, want 2", applies)
	}
	wantNothingStored(t, f.st)
}

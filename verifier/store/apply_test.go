package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
)

// decide reads host's admission state and decides on an attestation with
// the given policy failures.
func decide(t *testing.T, s *DB, host string, failures []wire.Reason) (admission.Decision, admission.Revision) {
	t.Helper()
	st, err := s.AdmissionState(context.Background(), host)
	if err != nil {
		t.Fatalf("AdmissionState: %v", err)
	}
	return admission.Decide(admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Policy: failures, State: st}), st.Revision
}

// testApplyRechecks is the race of a pass and a failure of one host on the
// SQLite store: the pass is decided on the remediated incident, the failure
// reopens it first, and the pass's Apply is refused with ErrConflict,
// writes nothing, and decided again it fails with incident.unresolved.
func testApplyRechecks(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	fail := []wire.Reason{{Rule: "secure-boot", Detail: "off"}}

	if st, err := s.AdmissionState(ctx, "h1"); err != nil || st.Host != admission.HostUnknown || st.Incident != nil || st.HostID != "h1" {
		t.Fatalf("AdmissionState of an unknown host = %+v, %v", st, err)
	}
	d, rev := decide(t, s, "h1", fail)
	inc, err := s.Apply(ctx, d, rev, attestation("h1", "", 1), Host{EKType: "rsa"})
	if err != nil || inc == 0 {
		t.Fatalf("Apply first failure = %d, %v", inc, err)
	}
	if err := s.Act(ctx, inc, "alice", IncidentAction{Kind: "remediate", Text: "firmware setting restored"}); err != nil {
		t.Fatal(err)
	}

	passD, passRev := decide(t, s, "h1", nil) // A reads: remediated, it may pass
	if !passD.Admitted() {
		t.Fatalf("decision on a remediated host: %+v", passD)
	}
	failD, failRev := decide(t, s, "h1", fail) // B reads and records first
	if _, err := s.Apply(ctx, failD, failRev, attestation("h1", "", 2), Host{EKType: "rsa"}); err != nil {
		t.Fatal(err)
	}
	before := counts(t, s)
	a := attestation("h1", "", 3)
	if _, err := s.Apply(ctx, passD, passRev, a, Host{EKType: "rsa"}); !errors.Is(err, admission.ErrConflict) {
		t.Fatalf("Apply on a changed state: %v, want ErrConflict", err)
	}
	if a.ID != 0 || a.Verdict != "" {
		t.Errorf("a refused Apply changed the attestation: %+v", a)
	}
	if after := counts(t, s); len(after) != len(before) || after["attestations"] != before["attestations"] || after["outbox"] != before["outbox"] {
		t.Errorf("a refused Apply wrote: %v → %v", before, after)
	}

	again, rev := decide(t, s, "h1", nil)
	if again.Admitted() || again.Reasons[0].Rule != admission.RuleIncidentUnresolved {
		t.Fatalf("decision after the reopening: %+v", again)
	}
	if got, err := s.Apply(ctx, again, rev, a, Host{EKType: "rsa"}); err != nil || got != inc {
		t.Fatalf("Apply again = %d, %v; want incident %d", got, err, inc)
	}
	if a.ID == 0 || a.Verdict != wire.VerdictFail || a.Reasons[0].Rule != admission.RuleIncidentUnresolved {
		t.Errorf("applied attestation %+v", a)
	}
	h, err := s.Host(ctx, "h1")
	if err != nil || h.State != HostQuarantined {
		t.Fatalf("host %+v, %v; want quarantined", h, err)
	}
	in, err := s.UnresolvedIncident(ctx, "h1")
	if err != nil || in == nil || in.ID != inc || in.State != IncidentOpen || in.Failures != 3 {
		t.Fatalf("incident %+v, %v; want %d open with 3 failures", in, err, inc)
	}
	alerts, err := s.PendingAlerts(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, al := range alerts {
		var ev struct{ Type string }
		if err := json.Unmarshal(al.Event, &ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Type)
	}
	want := []string{admission.AlertOpened, admission.AlertRemediated, admission.AlertReopened}
	if len(kinds) != len(want) || kinds[0] != want[0] || kinds[1] != want[1] || kinds[2] != want[2] {
		t.Errorf("alerts %v, want %v", kinds, want)
	}

	// Remediated again, a fresh pass closes the incident and admits.
	if err := s.Act(ctx, inc, "alice", IncidentAction{Kind: "remediate", Text: "firmware setting restored, twice"}); err != nil {
		t.Fatal(err)
	}
	d, rev = decide(t, s, "h1", nil)
	if got, err := s.Apply(ctx, d, rev, attestation("h1", "", 4), Host{EKType: "rsa"}); err != nil || got != 0 {
		t.Fatalf("Apply pass = %d, %v", got, err)
	}
	if in, err := s.UnresolvedIncident(ctx, "h1"); err != nil || in != nil {
		t.Errorf("unresolved incident after the pass: %+v, %v", in, err)
	}
	if h, err := s.Host(ctx, "h1"); err != nil || h.State != HostAdmitted {
		t.Errorf("host %+v, %v; want admitted", h, err)
	}
}

// testApplyRefusesAnotherHostsDecision: a Decision applies only to the
// attestation of its host.
func testApplyRefusesAnotherHostsDecision(t *testing.T, open opener) {
	s := open(t)
	d, rev := decide(t, s, "h1", nil)
	if _, err := s.Apply(context.Background(), d, rev, attestation("h2", "", 1), Host{}); err == nil {
		t.Fatal("Apply of h1's decision to h2's attestation succeeded")
	}
}

// testConcurrentApplyTwoHandles is two appliances on one database deciding
// on failures of the same hosts at once: each reads the admission state,
// decides, and applies, retrying on ErrConflict. Every failure changes the
// state (the incident's failure count), so two Applies based on one
// revision must never both succeed; in the end each host has one incident
// that counts every applied failure, and no Apply failed otherwise (a
// duplicate incident, a serialization error that was not retried).
func testConcurrentApplyTwoHandles(t *testing.T, loc string) {
	stores := []*DB{openAt(t, loc), openAt(t, loc)}
	for _, s := range stores {
		storeEveryFailure(t, s) // this counts stored attestations
	}
	ctx := context.Background()
	const (
		hosts   = 4
		workers = 2 // per store
		each    = 10
	)
	fail := []wire.Reason{{Rule: "secure-boot", Detail: "off"}}
	type applied struct {
		host string
		rev  admission.Revision
	}
	var (
		mu        sync.Mutex
		done      []applied
		conflicts int
		wg        sync.WaitGroup
	)
	errs := make(chan error, hosts*workers*len(stores))
	for h := range hosts {
		host := fmt.Sprintf("h%d", h)
		for w := range workers * len(stores) {
			s := stores[w%len(stores)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; n < each; {
					st, err := s.AdmissionState(ctx, host)
					if err != nil {
						errs <- err
						return
					}
					d := admission.Decide(admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Policy: fail, State: st})
					_, err = s.Apply(ctx, d, st.Revision, attestation(host, "", n), Host{EKType: "rsa"})
					mu.Lock()
					switch {
					case err == nil:
						done = append(done, applied{host, st.Revision})
						n++
					case errors.Is(err, admission.ErrConflict):
						conflicts++
					}
					mu.Unlock()
					if err != nil && !errors.Is(err, admission.ErrConflict) {
						errs <- fmt.Errorf("apply on %s: %w", host, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[applied]bool{}
	for _, a := range done {
		if seen[a] {
			t.Errorf("two Applies on %s succeeded based on one revision %q", a.host, a.rev)
		}
		seen[a] = true
	}
	want := workers * len(stores) * each
	for h := range hosts {
		host := fmt.Sprintf("h%d", h)
		in, err := stores[0].UnresolvedIncident(ctx, host)
		if err != nil || in == nil || in.Failures != want {
			t.Errorf("incident of %s = %+v, %v; want one with %d failures", host, in, err, want)
			continue
		}
		ids, err := stores[1].IncidentAttestations(ctx, in.ID)
		if err != nil || len(ids) != want {
			t.Errorf("incident of %s has %d attestations, %v; want %d", host, len(ids), err, want)
		}
	}
	var incidents int
	if err := stores[0].read.QueryRowContext(ctx, `SELECT COUNT(*) FROM incidents`).Scan(&incidents); err != nil || incidents != hosts {
		t.Errorf("%d incidents, %v; want %d", incidents, err, hosts)
	}
	t.Logf("%d applied, %d conflicts retried", len(done), conflicts)
}

// testQuarantineRacesIdentities: one appliance records identities for an
// admitted host while another quarantines it. However they interleave,
// once the quarantine has committed no identity of the host is valid:
// those recorded before are revoked by it, those after are recorded
// revoked (ErrNotAdmitted).
func testQuarantineRacesIdentities(t *testing.T, loc string) {
	issuer, operator := openAt(t, loc), openAt(t, loc)
	ctx := context.Background()
	a := attestation("h1", wire.VerdictPass, 0)
	if _, err := issuer.Record(ctx, a, Host{}); err != nil {
		t.Fatal(err)
	}
	const identities = 60
	now := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, identities+1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range identities {
			err := issuer.RecordIdentity(ctx, IdentityRecord{Serial: fmt.Sprintf("%04x", i), HostID: "h1", Issued: now, NotAfter: now.Add(time.Hour)})
			if err != nil && !errors.Is(err, ErrNotAdmitted) {
				errs <- err
			}
		}
	}()
	go func() {
		defer wg.Done()
		if err := operator.Quarantine(ctx, "h1", "alice"); err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range identities {
		serial := fmt.Sprintf("%04x", i)
		if ok, err := operator.IdentityValid(ctx, serial); err != nil || ok {
			t.Errorf("identity %s of the quarantined host: valid %v, %v", serial, ok, err)
		}
	}
}

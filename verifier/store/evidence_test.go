package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
)

// blobStats returns the number and total size of the evidence blobs.
func blobStats(t testing.TB, s *DB) (n int, size int64) {
	t.Helper()
	if err := s.read.QueryRowContext(context.Background(),
		`SELECT COUNT(*), COALESCE(SUM(length(bytes)), 0) FROM evidence_blobs`).Scan(&n, &size); err != nil {
		t.Fatal(err)
	}
	return n, size
}

// testEvidenceStoredOnce: hosts booting one firmware send one event log;
// it is stored once, and every attestation reads back the bytes it was
// recorded with.
func testEvidenceStoredOnce(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	log := noise(1, 34<<10)
	const hosts = 50
	var want []*Attestation
	for i := range hosts {
		a := fullAttestation(fmt.Sprintf("host-%03d", i), wire.VerdictPass, i, log)
		record(t, s, a)
		want = append(want, a)
	}
	// A host's second boot: its EK certificate is stored once too.
	again := fullAttestation("host-000", wire.VerdictPass, hosts, log)
	record(t, s, again)
	want = append(want, again)

	n, size := blobStats(t, s)
	// One log, one boot state, one EK certificate per host.
	if wantN := 2 + hosts; n != wantN {
		t.Errorf("%d evidence blobs, want %d", n, wantN)
	}
	if max := int64(len(log) + len(again.BootState) + hosts*1024); size != max {
		t.Errorf("evidence blobs hold %d bytes, want %d", size, max)
	}
	for _, a := range want {
		got, err := s.Attestation(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Evidence.EventLog, log) || !bytes.Equal(got.Evidence.EKCert, a.Evidence.EKCert) ||
			!bytes.Equal(got.BootState, a.BootState) || !bytes.Equal(got.Evidence.Quote, a.Evidence.Quote) {
			t.Errorf("attestation %d does not read back as recorded", a.ID)
		}
	}
}

// junkFailure records one failure of host at baseTime+n seconds with a
// log of junk of its own, deciding and applying as the attestation API
// does, and returns the attestation.
func junkFailure(t *testing.T, s *DB, host string, n, size int) *Attestation {
	t.Helper()
	d, rev := decide(t, s, host, []wire.Reason{{Rule: "evidence.event_log", Detail: "junk"}})
	a := fullAttestation(host, "", n, noise(uint64(n)+1000, size))
	if _, err := s.Apply(context.Background(), d, rev, a, Host{EKType: "rsa"}); err != nil {
		t.Fatalf("Apply failure %d: %v", n, err)
	}
	return a
}

// testFailuresBounded is the attack of a trusted TPM attesting in a loop
// with junk in its log: 1000 failures within an hour. Each is decided and
// counted on the host's incident, but only DefaultLimits.StoredFailures are
// stored with their evidence, and what the store holds grows by far less
// than one junk log per failure. The first failure, a pass, a failure that
// reopens the incident and a failure after the window are stored. A host
// failing once every window stores DefaultLimits.IncidentFailures on its
// incident, and no more.
func testFailuresBounded(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	const (
		failures = 1000
		logSize  = 64 << 10
	)
	lim := DefaultLimits
	base := storedBytes(t, s)
	var first *Attestation
	for i := range failures {
		// Three seconds apart: the 1000 fit in one hour's window.
		a := junkFailure(t, s, "looping", 3*i, logSize)
		if i == 0 {
			first = a
		}
		if stored := a.ID != 0; stored != (i < lim.StoredFailures) {
			t.Fatalf("failure %d stored = %v (attestation %d), want %v", i, stored, a.ID, i < lim.StoredFailures)
		}
		if a.Verdict != wire.VerdictFail {
			t.Fatalf("failure %d: verdict %q", i, a.Verdict)
		}
	}
	grown := storedBytes(t, s) - base
	t.Logf("%d junk failures of %d KiB: the store grew by %d KiB (%d bytes per failure)", failures, logSize>>10, grown>>10, grown/failures)
	if bound := int64(2 * lim.StoredFailures * logSize); grown > bound {
		t.Errorf("the store grew by %d bytes, want at most %d (twice the stored failures' logs)", grown, bound)
	}
	_, size := blobStats(t, s)
	if want := int64(lim.StoredFailures*logSize + 1024 + 2000); size != want {
		t.Errorf("evidence blobs hold %d bytes, want %d", size, want)
	}
	in, err := s.UnresolvedIncident(ctx, "looping")
	if err != nil || in == nil {
		t.Fatalf("UnresolvedIncident = %+v, %v", in, err)
	}
	if in.Failures != failures || in.Unrecorded != failures-lim.StoredFailures || in.FirstAttestationID != first.ID {
		t.Errorf("incident: %d failures, %d unrecorded, first attestation %d; want %d, %d, %d",
			in.Failures, in.Unrecorded, in.FirstAttestationID, failures, failures-lim.StoredFailures, first.ID)
	}
	if want := baseTime().Add(3 * (failures - 1) * time.Second).UTC(); !in.Updated.Equal(want) {
		t.Errorf("incident updated %v, want the last failure's time %v", in.Updated, want)
	}
	if ids, err := s.IncidentAttestations(ctx, in.ID); err != nil || len(ids) != lim.StoredFailures {
		t.Errorf("incident attestations %v, %v; want %d", ids, err, lim.StoredFailures)
	}
	if got, err := s.Attestation(ctx, first.ID); err != nil || !bytes.Equal(got.Evidence.EventLog, first.Evidence.EventLog) {
		t.Errorf("the first failure's evidence: %v", err)
	}
	h, err := s.Host(ctx, "looping")
	if err != nil || h.State != HostQuarantined || h.LastVerdict != wire.VerdictFail {
		t.Errorf("host %+v, %v", h, err)
	}

	// A pass (recorded unchecked: the incident is open) is stored.
	pass := fullAttestation("looping", wire.VerdictPass, 3*failures, nil)
	record(t, s, pass)
	// Remediated, the incident reopens with a failure: stored, though the
	// window is full.
	if err := s.Act(ctx, in.ID, "local:root", IncidentAction{Kind: "remediate", Text: "firmware reflashed and its settings restored"}); err != nil {
		t.Fatal(err)
	}
	if a := junkFailure(t, s, "looping", 3*failures+1, 100); a.ID == 0 {
		t.Error("the failure that reopened the incident was not stored")
	}
	if a := junkFailure(t, s, "looping", 3*failures+2, 100); a.ID != 0 {
		t.Error("a failure beyond the limit after the reopening was stored")
	}
	// Another host is not limited by this one.
	if a := junkFailure(t, s, "other", 3*failures+2, 100); a.ID == 0 {
		t.Error("another host's first failure was not stored")
	}
	// A window later, failures are stored again.
	later := 3*failures + 2 + int(lim.FailureWindow/time.Second)
	if a := junkFailure(t, s, "looping", later, 100); a.ID == 0 {
		t.Error("a failure after the window was not stored")
	}
	if in, err := s.UnresolvedIncident(ctx, "looping"); err != nil || in.Failures != failures+3 || in.Unrecorded != failures-lim.StoredFailures+1 {
		t.Errorf("incident after reopening: %+v, %v", in, err)
	}

	// A host failing in every window: its incident stores
	// DefaultLimits.IncidentFailures, whatever the windows.
	stored := 0
	for i := range 2 * lim.IncidentFailures {
		if a := junkFailure(t, s, "slow", i*int(lim.FailureWindow/time.Second), 100); a.ID != 0 {
			stored++
		}
	}
	if in, err := s.UnresolvedIncident(ctx, "slow"); err != nil || stored != lim.IncidentFailures ||
		in.Failures != 2*lim.IncidentFailures || in.Unrecorded != lim.IncidentFailures {
		t.Errorf("one failure an hour: %d stored, incident %+v, %v; want %d stored", stored, in, err, lim.IncidentFailures)
	}
}

// testLimitsInvalid: limits and retention out of bounds are refused and
// change nothing.
func testLimitsInvalid(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	valid := Limits{StoredFailures: 2, FailureWindow: time.Hour, IncidentFailures: 3}
	if err := s.SetLimits(valid); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Limits{{}, {StoredFailures: 0, FailureWindow: time.Hour, IncidentFailures: 1}, {StoredFailures: -1, FailureWindow: time.Hour, IncidentFailures: 1},
		{StoredFailures: MaxStoredFailures + 1, FailureWindow: time.Hour, IncidentFailures: 1}, {StoredFailures: 1, FailureWindow: 0, IncidentFailures: 1},
		{StoredFailures: 1, FailureWindow: -time.Second, IncidentFailures: 1}, {StoredFailures: 1, FailureWindow: time.Hour},
		{StoredFailures: 1, FailureWindow: time.Hour, IncidentFailures: MaxStoredFailures + 1}} {
		if err := s.SetLimits(l); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetLimits(%+v) = %v, want ErrInvalid", l, err)
		}
	}
	if got := s.limits(); got != valid {
		t.Errorf("limits after refused changes: %+v", got)
	}
	record(t, s, attestation("h", wire.VerdictFail, 0))
	for _, r := range []Retention{{}, {MaxAge: time.Hour}, {Batch: 1}, {MaxAge: -time.Hour, Batch: 1}, {MaxAge: time.Hour, Batch: MaxPruneBatch + 1}} {
		if _, err := s.Prune(ctx, baseTime().Add(1000*time.Hour), r); !errors.Is(err, ErrInvalid) {
			t.Errorf("Prune(%+v) = %v, want ErrInvalid", r, err)
		}
	}
	if c := counts(t, s); c["attestations"] != 1 {
		t.Errorf("after refused prunes: %v", c)
	}
}

// testRetention: Prune deletes old attestations and the blobs only they
// referenced, a batch at a time, and keeps each host's latest attestation
// and latest pass, every incident's first and last, and all that an
// unresolved incident holds.
func testRetention(t *testing.T, open opener) {
	s := open(t)
	storeEveryFailure(t, s)
	ctx := context.Background()
	day := 24 * 3600
	shared := noise(1, 4096)
	own := func(n int) []byte { return noise(uint64(n)+77, 512) }

	// "fleet": passes every day for 100 days, each with a log of its own
	// but for the last, which shares the fleet's log.
	var fleet []*Attestation
	for d := range 100 {
		log := own(d)
		if d == 99 {
			log = shared
		}
		a := fullAttestation("fleet", wire.VerdictPass, d*day, log)
		record(t, s, a)
		fleet = append(fleet, a)
	}
	// "passed-once": one pass 200 days ago, then failures 150 days ago
	// that opened an incident, closed after remediation by a pass 120 days
	// ago.
	old := fullAttestation("passed-once", wire.VerdictPass, -100*day, shared)
	record(t, s, old)
	var closedFails []*Attestation
	for i := range 3 {
		a := fullAttestation("passed-once", wire.VerdictFail, -50*day+i, own(1000+i))
		record(t, s, a)
		closedFails = append(closedFails, a)
	}
	in, err := s.UnresolvedIncident(ctx, "passed-once")
	if err != nil || in == nil {
		t.Fatal(in, err)
	}
	if err := s.Act(ctx, in.ID, "local:root", IncidentAction{Kind: "remediate", Text: "firmware reflashed and its settings restored"}); err != nil {
		t.Fatal(err)
	}
	closing := fullAttestation("passed-once", wire.VerdictPass, -20*day, shared)
	record(t, s, closing)
	// "failing": an unresolved incident whose failures are all old.
	var openFails []*Attestation
	for i := range 3 {
		a := fullAttestation("failing", wire.VerdictFail, -50*day+i, own(2000+i))
		record(t, s, a)
		openFails = append(openFails, a)
	}

	now := baseTime().Add(time.Duration(99*day) * time.Second)
	r := Retention{MaxAge: DefaultRetention.MaxAge, Batch: 4}
	var total Pruned
	for range 100 {
		p, err := s.Prune(ctx, now, r)
		if err != nil {
			t.Fatal(err)
		}
		if p.Attestations > r.Batch {
			t.Fatalf("one Prune deleted %d attestations, batch %d", p.Attestations, r.Batch)
		}
		total.Attestations += p.Attestations
		total.Blobs += p.Blobs
		if p.Attestations < r.Batch {
			break
		}
	}
	kept := map[int64]string{
		fleet[99].ID:      "fleet's latest",
		closing.ID:        "passed-once's latest and latest pass",
		closedFails[0].ID: "the closed incident's first",
		closedFails[2].ID: "the closed incident's last",
		openFails[0].ID:   "the unresolved incident's",
		openFails[1].ID:   "the unresolved incident's",
		openFails[2].ID:   "the unresolved incident's",
	}
	// fleet's passes from day 9 on are younger than 90 days.
	for d := 9; d < 99; d++ {
		kept[fleet[d].ID] = "younger than the retention"
	}
	deleted := []*Attestation{old, closedFails[1]}
	for d := range 9 {
		deleted = append(deleted, fleet[d])
	}
	for id, why := range kept {
		if _, err := s.Attestation(ctx, id); err != nil {
			t.Errorf("attestation %d (%s): %v", id, why, err)
		}
	}
	for _, a := range deleted {
		if _, err := s.Attestation(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("attestation %d of %s at %v not deleted: %v", a.ID, a.HostID, a.Time, err)
		}
	}
	if total.Attestations != len(deleted) {
		t.Errorf("deleted %d attestations, want %d", total.Attestations, len(deleted))
	}
	// Blobs: the deleted passes' own logs (9), closedFails[1]'s log; the
	// shared log stays (fleet's latest, closing), as do the EK
	// certificates and the boot state.
	if total.Blobs != 10 {
		t.Errorf("deleted %d blobs, want 10", total.Blobs)
	}
	var dangling int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM evidence_blobs b WHERE NOT EXISTS (
		SELECT 1 FROM attestations a WHERE b.sha256 IN (a.event_log_sha256, a.ek_cert_sha256, a.boot_state_sha256))`).Scan(&dangling); err != nil || dangling != 0 {
		t.Errorf("%d blobs referenced by no attestation, %v", dangling, err)
	}
	closed, err := s.Incidents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range closed {
		ids, err := s.IncidentAttestations(ctx, in.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := 3
		if in.State == IncidentClosed {
			want = 2 // its first and last
		}
		if len(ids) != want {
			t.Errorf("incident %d (%s) holds attestations %v, want %d", in.ID, in.State, ids, want)
		}
	}
	// Pruning again deletes nothing.
	if p, err := s.Prune(ctx, now, r); err != nil || p != (Pruned{}) {
		t.Errorf("Prune again = %+v, %v", p, err)
	}
	// Applying after pruning re-stores a deleted log.
	a := fullAttestation("fleet", wire.VerdictPass, 100*day, own(0))
	record(t, s, a)
	if got, err := s.Attestation(ctx, a.ID); err != nil || !bytes.Equal(got.Evidence.EventLog, own(0)) {
		t.Errorf("a log stored again after pruning: %v", err)
	}
}

// TestMigrateInlineEvidence: attestations recorded before evidence was
// stored by its hash keep their inline evidence through the migration and
// read back exactly (nil and empty parts apart); a new attestation of the
// same log stores it in evidence_blobs; and retention deletes the old
// rows, inline evidence and all, like any other.
func TestMigrateInlineEvidence(t *testing.T) {
	path := legacyDB(t, "testdata/legacy_v2.sql")
	func() {
		db, err := sql.Open("sqlite", fileURI(path))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		execFile(t, db, "testdata/inline_evidence_v5.sql")
	}()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	log := []byte{0, 0, 0, 0, 3, 0, 0, 0, 0xff, 0, 0, 0, 0}
	a, err := s.Attestation(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := Evidence{
		EKCert: []byte{0x30, 0x82, 0x01}, EKType: "rsa2048", EKPublic: []byte{0, 1}, AK: wire.AKParams{Public: []byte{0, 1}},
		Nonce: []byte("nonce"), Quote: []byte{0xff, 0x54, 0x43, 0x47}, Signature: []byte{0, 0x14},
		PCRs: []wire.PCR{{Index: 0, Digest: make([]byte, 32)}}, EventLog: log,
	}
	if diff := cmp.Diff(want, a.Evidence); diff != "" || string(a.BootState) != `{"secure_boot":true}` {
		t.Errorf("inline evidence (-want +got):\n%s\nboot state %q", diff, a.BootState)
	}
	b, err := s.Attestation(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if b.Evidence.EKCert != nil || b.Evidence.EventLog == nil || len(b.Evidence.EventLog) != 0 || b.BootState != nil {
		t.Errorf("nil and empty inline parts read back as %+v, boot state %v", b.Evidence, b.BootState)
	}
	if n, _ := blobStats(t, s); n != 0 {
		t.Errorf("the migration stored %d blobs, want none (inline evidence stays)", n)
	}

	// The same log again, a year on: stored as a blob.
	c := attestation("old", wire.VerdictPass, 366*24*3600)
	c.Evidence.EventLog = log
	record(t, s, c)
	if n, size := blobStats(t, s); n != 1 || size != int64(len(log)) {
		t.Errorf("evidence blobs after a new attestation: %d, %d bytes", n, size)
	}
	// Retention deletes the legacy rows but the newest (the host's latest
	// attestation and pass).
	p, err := s.Prune(ctx, c.Time, DefaultRetention)
	if err != nil || p.Attestations != 3 || p.Blobs != 0 {
		t.Errorf("Prune = %+v, %v; want the 3 legacy attestations", p, err)
	}
	if got, err := s.Attestation(ctx, c.ID); err != nil || !bytes.Equal(got.Evidence.EventLog, log) {
		t.Errorf("the new attestation after pruning: %v", err)
	}
}

// testStormOneLogTwoHandles: hosts applying at once from two handles on
// one database, all with one event log new to it, all succeed and store
// it once.
func testStormOneLogTwoHandles(t *testing.T, loc string) {
	stores := []*DB{openAt(t, loc), openAt(t, loc)}
	ctx := context.Background()
	log := noise(3, 34<<10)
	const hosts = 64
	errs := make(chan error, hosts)
	for i := range hosts {
		go func() {
			s := stores[i%2]
			host := fmt.Sprintf("host-%03d", i)
			st, err := s.AdmissionState(ctx, host)
			if err != nil {
				errs <- err
				return
			}
			d := admission.Decide(admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: st})
			_, err = s.Apply(ctx, d, st.Revision, fullAttestation(host, "", i, log), Host{EKType: "rsa"})
			errs <- err
		}()
	}
	for range hosts {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	var n int
	if err := stores[0].read.QueryRowContext(ctx, `SELECT COUNT(*) FROM evidence_blobs WHERE sha256 = ?`, blobRef(log)).Scan(&n); err != nil || n != 1 {
		t.Errorf("the log is stored %d times, %v", n, err)
	}
	if c := counts(t, stores[0]); c["attestations"] != hosts {
		t.Errorf("%d attestations, want %d", c["attestations"], hosts)
	}
}

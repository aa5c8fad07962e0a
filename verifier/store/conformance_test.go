package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// opener opens a fresh, empty store that is closed when the test ends.
type opener func(t *testing.T) *DB

// backend is a database the store runs on: fresh makes an empty database
// and returns its location for Open (a file path, a postgres:// URL).
type backend struct {
	name  string
	fresh func(t testing.TB) string
}

var backends = []backend{
	{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "bootgate.db") }},
	{"postgres", func(t testing.TB) string { return pgtest.DB(t) }},
}

// openAt opens the store at loc and closes it when the test ends.
func openAt(t testing.TB, loc string) *DB {
	t.Helper()
	s, err := Open(context.Background(), loc)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func (b backend) open(t *testing.T) *DB { t.Helper(); return openAt(t, b.fresh(t)) }

// conformance is what every backend of the store does, one behaviour per
// entry; TestConformance runs each on every backend. Behaviours that need
// two handles on one database (two appliances) take the backend.
var conformance = []struct {
	name string
	run  func(t *testing.T, open opener)
}{
	{"apply/rechecks the state it was based on", testApplyRechecks},
	{"apply/refuses another host's decision", testApplyRefusesAnotherHostsDecision},
	{"record/incident lifecycle", testRecordIncidentLifecycle},
	{"record/attestation round trip", testAttestationRoundTrip},
	{"record/reasons with invalid UTF-8", testReasonsInvalidUTF8},
	{"record/NUL and invalid UTF-8 in every text written", testHostileText},
	{"record/invalid input changes nothing", testRecordInvalidInput},
	{"record/host state from verdict", testRecordStateDefaultsFromVerdict},
	{"record/canceled context", testRecordCanceledContext},
	{"record/concurrent", testConcurrentRecords},
	{"record/TPM", testTPMRecorded},
	{"evidence/stored once by its hash", testEvidenceStoredOnce},
	{"evidence/failures per host bounded", testFailuresBounded},
	{"evidence/invalid limits change nothing", testLimitsInvalid},
	{"retention/prune", testRetention},
	{"hosts/not found", testNotFound},
	{"hosts/quarantine", testQuarantine},
	{"query/summary and pages", testSummaryAndPages},
	{"identities", testIdentities},
	{"audit/append-only", testAuditAppendOnly},
	{"alerts/outbox", testAlerts},
	{"migrations/current and idempotent", testMigrations},
	{"sessions/single use", testConsumeSession},
	{"sessions/expired rows deleted", testSessionsExpire},
	{"sessions/invalid input", testConsumeSessionInvalid},
	{"leases/claim, decline, release, bind host", testLeaseTables},
}

// shared is what two appliances on one database do: each entry gets the
// location of a fresh database, which it opens more than once.
var shared = []struct {
	name string
	run  func(t *testing.T, loc string)
}{
	{"apply/concurrent from two handles", testConcurrentApplyTwoHandles},
	{"identities/quarantine racing identity records", testQuarantineRacesIdentities},
	{"sessions/single use across two handles", testConsumeSessionTwoHandles},
	{"sessions/single use across clocks 90 s apart", testConsumeSessionClockSkew},
	{"alerts/one handle at a time claims the outbox", testClaimAlertsTwoHandles},
	{"evidence/one log from two handles at once", testStormOneLogTwoHandles},
	{"leases/one host bound to two MACs at once from two handles", testBindHostTwoHandles},
}

// testClaimAlertsTwoHandles: of two handles on one database, one at a time
// holds the claim on the outbox's head; its own claims renew, the other's
// lapse at their end, and then the other takes the alerts over.
func testClaimAlertsTwoHandles(t *testing.T, loc string) {
	a, b := openAt(t, loc), openAt(t, loc)
	ctx := context.Background()
	for i, h := range []string{"h1", "h2", "h3"} {
		record(t, a, attestation(h, wire.VerdictFail, i))
	}
	if _, err := a.ClaimAlerts(ctx, 0, time.Minute); err == nil {
		t.Error("ClaimAlerts with limit 0: no error")
	}
	got, err := a.ClaimAlerts(ctx, 10, time.Minute)
	if err != nil || len(got) != 3 || got[0].ID >= got[1].ID || got[1].ID >= got[2].ID {
		t.Fatalf("A: ClaimAlerts = %+v, %v; want 3, oldest first", got, err)
	}
	if other, err := b.ClaimAlerts(ctx, 10, time.Minute); err != nil || len(other) != 0 {
		t.Errorf("B: ClaimAlerts during A's claim = %+v, %v; want none", other, err)
	}
	if err := a.AlertDelivered(ctx, got[0].ID); err != nil {
		t.Fatal(err)
	}
	if again, err := a.ClaimAlerts(ctx, 10, time.Minute); err != nil || len(again) != 2 || again[0].ID != got[1].ID {
		t.Errorf("A: ClaimAlerts renewing its claim = %+v, %v; want the 2 undelivered", again, err)
	}
	if other, err := b.ClaimAlerts(ctx, 1, time.Minute); err != nil || len(other) != 0 {
		t.Errorf("B: ClaimAlerts(1) during A's claim = %+v, %v; want none", other, err)
	}
	// Two minutes on, A's claim has lapsed (A stopped): B takes over.
	b.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	over, err := b.ClaimAlerts(ctx, 10, time.Minute)
	if err != nil || len(over) != 2 || over[0].ID != got[1].ID {
		t.Fatalf("B: ClaimAlerts after A's claim lapsed = %+v, %v; want the 2 undelivered", over, err)
	}
	if mine, err := a.ClaimAlerts(ctx, 10, time.Minute); err != nil || len(mine) != 0 {
		t.Errorf("A: ClaimAlerts during B's claim = %+v, %v; want none", mine, err)
	}
}

func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.run(t, b.open) })
			}
			for _, c := range shared {
				t.Run(c.name, func(t *testing.T) { c.run(t, b.fresh(t)) })
			}
		})
	}
}

// testAuditAppendOnly: operator actions are audited in order, newest
// first, and the database itself refuses to change or delete an entry.
func testAuditAppendOnly(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	for _, target := range []string{"a", "b"} {
		if err := s.RecordAction(ctx, "local:root", "operator-issue", target, "detail"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordAction(ctx, "", "operator-issue", "c", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("RecordAction with no actor: %v, want ErrInvalid", err)
	}
	got, err := s.ListAudit(ctx, 0, 0)
	if err != nil || len(got) != 2 || got[0].Target != "b" || got[1].Target != "a" || got[0].Actor != "local:root" {
		t.Fatalf("ListAudit = %+v, %v", got, err)
	}
	if older, err := s.ListAudit(ctx, got[0].ID, 0); err != nil || len(older) != 1 || older[0].Target != "a" {
		t.Errorf("ListAudit before %d = %+v, %v", got[0].ID, older, err)
	}
	for _, q := range []string{`UPDATE audit SET actor = 'mallory'`, `DELETE FROM audit`} {
		if _, err := s.write.ExecContext(ctx, q); err == nil {
			t.Errorf("%s: succeeded on the append-only audit log", q)
		}
	}
	if after, err := s.ListAudit(ctx, 0, 0); err != nil || len(after) != 2 || after[0].Actor != "local:root" {
		t.Errorf("audit log after the refused changes: %+v, %v", after, err)
	}
}

// testAlerts: a failure queues an alert in its own transaction; delivered
// alerts leave the pending list.
func testAlerts(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	record(t, s, attestation("h1", wire.VerdictFail, 0))
	record(t, s, attestation("h2", wire.VerdictFail, 1))
	pending, err := s.PendingAlerts(ctx, 10)
	if err != nil || len(pending) != 2 {
		t.Fatalf("PendingAlerts = %+v, %v; want 2", pending, err)
	}
	if pending[0].ID >= pending[1].ID || pending[0].Time.IsZero() {
		t.Errorf("pending alerts not oldest first: %+v", pending)
	}
	if one, err := s.PendingAlerts(ctx, 1); err != nil || len(one) != 1 || one[0].ID != pending[0].ID {
		t.Errorf("PendingAlerts(1) = %+v, %v", one, err)
	}
	if err := s.AlertDelivered(ctx, pending[0].ID); err != nil {
		t.Fatal(err)
	}
	left, err := s.PendingAlerts(ctx, 10)
	if err != nil || len(left) != 1 || left[0].ID != pending[1].ID || string(left[0].Event) != string(pending[1].Event) {
		t.Errorf("after delivery: %+v, %v", left, err)
	}
}

// testMigrations: a new database is at SchemaVersion in goose's table and
// the fence, and migrating it again changes nothing.
func testMigrations(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	if !current(ctx, s.write) {
		t.Fatalf("a new %s database is not at schema version %d", s.d.name, SchemaVersion())
	}
	record(t, s, attestation("h1", wire.VerdictFail, 0))
	if err := migrateOn(ctx, s.write); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM incidents`).Scan(&n); err != nil || n != 1 {
		t.Errorf("incidents after migrating again = %d, %v", n, err)
	}
	if _, err := s.write.ExecContext(ctx, `UPDATE schema_version SET version = ?`, SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if err := migrateOn(ctx, s.write); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("migrate a newer database: %v, want ErrSchemaTooNew", err)
	}
}

// sessionTime is a fixed clock for the session tests.
var sessionTime = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bootgate/bootgate/verifier/wire"
)

// openTest opens a store on a fresh file and closes it when the test ends.
func openTest(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootgate.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, path
}

// baseTime returns a fixed, non-UTC attestation time.
func baseTime() time.Time {
	return time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))
}

// attestation returns a minimal attestation of host at baseTime+n seconds.
func attestation(host, verdict string, n int) *Attestation {
	a := &Attestation{
		HostID:       host,
		Time:         baseTime().Add(time.Duration(n) * time.Second),
		Verdict:      verdict,
		PolicyName:   "default",
		PolicyDigest: "sha256:00",
		Evidence: Evidence{
			EKType: "rsa",
			AK:     wire.AKParams{Public: []byte{0x00, 0x01}},
			Nonce:  []byte{0x02},
		},
	}
	if verdict == wire.VerdictFail {
		a.Reasons = []wire.Reason{{Rule: "secure-boot", Detail: fmt.Sprintf("failure %d", n)}}
	}
	return a
}

// record records a and fails the test on error.
func record(t *testing.T, s *DB, a *Attestation) int64 {
	t.Helper()
	inc, err := s.Record(context.Background(), a, Host{ID: a.HostID, EKType: "rsa", EKIssuer: "CN=Test EK CA"})
	if err != nil {
		t.Fatalf("Record(%s, %s): %v", a.HostID, a.Verdict, err)
	}
	if a.ID == 0 {
		t.Fatalf("Record(%s, %s) left a.ID 0", a.HostID, a.Verdict)
	}
	return inc
}

// storeEveryFailure lifts s's limit on stored failures as far as it goes,
// for tests that count stored failures of one host.
func storeEveryFailure(t testing.TB, s *DB) {
	t.Helper()
	if err := s.SetLimits(Limits{StoredFailures: MaxStoredFailures, FailureWindow: time.Nanosecond, IncidentFailures: MaxStoredFailures}); err != nil {
		t.Fatal(err)
	}
}

// counts returns the number of rows of each table.
func counts(t *testing.T, s *DB) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, table := range []string{"hosts", "attestations", "incidents", "incident_attestations"} {
		var n int
		if err := s.read.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		m[table] = n
	}
	return m
}

// snapshot is everything observable in a store, for before/after comparison.
type snapshot struct {
	Counts    map[string]int
	Hosts     []Host
	Incidents []Incident
	Links     map[int64][]int64
}

func takeSnapshot(t *testing.T, s *DB) snapshot {
	t.Helper()
	ctx := context.Background()
	hosts, err := s.Hosts(ctx)
	if err != nil {
		t.Fatalf("Hosts: %v", err)
	}
	incidents, err := s.Incidents(ctx)
	if err != nil {
		t.Fatalf("Incidents: %v", err)
	}
	links := map[int64][]int64{}
	for _, in := range incidents {
		ids, err := s.IncidentAttestations(ctx, in.ID)
		if err != nil {
			t.Fatalf("IncidentAttestations(%d): %v", in.ID, err)
		}
		links[in.ID] = ids
	}
	return snapshot{Counts: counts(t, s), Hosts: hosts, Incidents: incidents, Links: links}
}

func testRecordIncidentLifecycle(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()

	pass1 := attestation("host-a", wire.VerdictPass, 0)
	if inc := record(t, s, pass1); inc != 0 {
		t.Fatalf("pass returned incident %d, want 0", inc)
	}
	if in, err := s.Incidents(ctx); err != nil || len(in) != 0 {
		t.Fatalf("Incidents after pass = %v, %v; want none", in, err)
	}

	fail1 := attestation("host-a", wire.VerdictFail, 1)
	incA := record(t, s, fail1)
	if incA == 0 {
		t.Fatal("first failure returned incident 0")
	}
	fail2 := attestation("host-a", wire.VerdictFail, 2)
	if got := record(t, s, fail2); got != incA {
		t.Fatalf("second failure returned incident %d, want %d (attach)", got, incA)
	}

	h, err := s.Host(ctx, "host-a")
	if err != nil {
		t.Fatalf("Host: %v", err)
	}
	wantHost := Host{
		ID:                "host-a",
		EKType:            "rsa",
		EKIssuer:          "CN=Test EK CA",
		State:             HostQuarantined,
		FirstSeen:         pass1.Time,
		LastSeen:          fail2.Time,
		LastVerdict:       wire.VerdictFail,
		LastAttestationID: fail2.ID,
	}
	if diff := cmp.Diff(wantHost, *h); diff != "" {
		t.Errorf("host after two failures (-want +got):\n%s", diff)
	}

	ids, err := s.IncidentAttestations(ctx, incA)
	if err != nil {
		t.Fatalf("IncidentAttestations: %v", err)
	}
	if diff := cmp.Diff([]int64{fail1.ID, fail2.ID}, ids); diff != "" {
		t.Errorf("incident attestations (-want +got):\n%s", diff)
	}

	failB := attestation("host-b", wire.VerdictFail, 3)
	incB := record(t, s, failB)
	if incB == 0 || incB == incA {
		t.Fatalf("host-b failure returned incident %d, want a new one (host-a has %d)", incB, incA)
	}

	pass2 := attestation("host-a", wire.VerdictPass, 4)
	if inc := record(t, s, pass2); inc != 0 {
		t.Fatalf("pass returned incident %d, want 0", inc)
	}
	if h, err = s.Host(ctx, "host-a"); err != nil {
		t.Fatalf("Host: %v", err)
	}
	if h.State != HostAdmitted || h.LastVerdict != wire.VerdictPass || h.LastAttestationID != pass2.ID ||
		!h.FirstSeen.Equal(pass1.Time) || !h.LastSeen.Equal(pass2.Time) {
		t.Errorf("host after pass = %+v, want admitted, last attestation %d, first seen %v", h, pass2.ID, pass1.Time)
	}

	incidents, err := s.Incidents(ctx)
	if err != nil {
		t.Fatalf("Incidents: %v", err)
	}
	want := []Incident{
		{
			ID: incB, HostID: "host-b", State: IncidentOpen, Opened: failB.Time, Updated: failB.Time,
			Failures: 1, FirstAttestationID: failB.ID, LastAttestationID: failB.ID, Reasons: failB.Reasons,
		},
		{
			ID: incA, HostID: "host-a", State: IncidentOpen, Opened: fail1.Time, Updated: fail2.Time,
			Failures: 2, FirstAttestationID: fail1.ID, LastAttestationID: fail2.ID, Reasons: fail2.Reasons,
		},
	}
	if diff := cmp.Diff(want, incidents); diff != "" {
		t.Errorf("incidents, newest first (-want +got):\n%s", diff)
	}

	hosts, err := s.Hosts(ctx)
	if err != nil {
		t.Fatalf("Hosts: %v", err)
	}
	if len(hosts) != 2 || hosts[0].ID != "host-a" || hosts[1].ID != "host-b" || hosts[1].State != HostQuarantined {
		t.Errorf("Hosts = %+v, want host-a then quarantined host-b", hosts)
	}

	for _, in := range incidents {
		for _, tm := range []time.Time{in.Opened, in.Updated} {
			if tm.Location() != time.UTC {
				t.Errorf("incident %d time %v not in UTC", in.ID, tm)
			}
		}
	}
	for _, h := range hosts {
		if h.FirstSeen.Location() != time.UTC || h.LastSeen.Location() != time.UTC {
			t.Errorf("host %s times %v, %v not in UTC", h.ID, h.FirstSeen, h.LastSeen)
		}
	}
}

func testAttestationRoundTrip(t *testing.T, open opener) {
	tests := []struct {
		name string
		a    Attestation
	}{
		{
			name: "full",
			a: Attestation{
				HostID:  "host-a",
				Time:    baseTime(),
				Verdict: wire.VerdictFail,
				Reasons: []wire.Reason{
					{Rule: "secure-boot", Event: 7, Detail: "SecureBoot variable is 0"},
					{Rule: "bootloader", Detail: "digest \x00\x7f not allowed, \"quoted\" ünïcode <&>"},
				},
				PolicyName:   "prod",
				PolicyDigest: "sha256:abcdef",
				Evidence: Evidence{
					EKCert:    []byte{0x30, 0x82, 0x00, 0xff, 0x00},
					EKType:    "ecc",
					AK:        wire.AKParams{Public: []byte{0x00, 0x23, 0x00, 0x0b}, CreateData: []byte{1}},
					EKPublic:  []byte{0x00, 0x01},
					Nonce:     []byte("nonce-0123456789abcdef"),
					Quote:     []byte{0xff, 0x54, 0x43, 0x47, 0x00},
					Signature: []byte{0x00, 0x18, 0x00, 0x0b, 0x00},
					PCRs: []wire.PCR{
						{Index: 0, Digest: make([]byte, 32)},
						{Index: 7, Digest: []byte{0xde, 0xad, 0xbe, 0xef}},
					},
					EventLog: []byte{0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0xff},
				},
				BootState: []byte(`{"secure_boot":true}`),
			},
		},
		{
			name: "nil fields stay nil",
			a: Attestation{
				HostID:  "host-b",
				Time:    baseTime(),
				Verdict: wire.VerdictPass,
				Evidence: Evidence{
					EKType: "rsa",
				},
			},
		},
		{
			name: "empty fields stay empty",
			a: Attestation{
				HostID:  "host-c",
				Time:    baseTime(),
				Verdict: wire.VerdictPass,
				Reasons: []wire.Reason{},
				Evidence: Evidence{
					EKCert:    []byte{},
					AK:        wire.AKParams{Public: []byte{}},
					Nonce:     []byte{},
					Quote:     []byte{},
					Signature: []byte{},
					PCRs:      []wire.PCR{{Index: 1, Digest: []byte{}}},
					EventLog:  []byte{},
				},
				BootState: []byte{},
			},
		},
	}
	s := open(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.a
			record(t, s, &a)
			got, err := s.Attestation(context.Background(), a.ID)
			if err != nil {
				t.Fatalf("Attestation(%d): %v", a.ID, err)
			}
			want := tt.a
			want.ID = a.ID
			// cmp distinguishes nil from empty slices, so this is byte-exact.
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("Time = %v, want UTC", got.Time)
			}
		})
	}
}

// testReasonsInvalidUTF8 documents that reasons are stored as JSON text:
// invalid UTF-8 in a detail comes back as U+FFFD, as it would over the API.
func testReasonsInvalidUTF8(t *testing.T, open opener) {
	s := open(t)
	a := attestation("host-a", wire.VerdictFail, 0)
	a.Reasons = []wire.Reason{{Rule: "r", Detail: "bad \xff byte"}}
	record(t, s, a)
	got, err := s.Attestation(context.Background(), a.ID)
	if err != nil {
		t.Fatalf("Attestation: %v", err)
	}
	if want := "bad \uFFFD byte"; got.Reasons[0].Detail != want {
		t.Errorf("Detail = %q, want %q", got.Reasons[0].Detail, want)
	}
}

func testNotFound(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	record(t, s, attestation("host-a", wire.VerdictPass, 0))

	tests := []struct {
		name string
		call func() error
	}{
		{"Attestation", func() error { _, err := s.Attestation(ctx, 999); return err }},
		{"Host", func() error { _, err := s.Host(ctx, "nope"); return err }},
		{"IncidentAttestations", func() error { _, err := s.IncidentAttestations(ctx, 999); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrNotFound) {
				t.Errorf("err = %v, want ErrNotFound", err)
			}
		})
	}
}

func testRecordInvalidInput(t *testing.T, open opener) {
	tests := []struct {
		name string
		a    *Attestation
		h    Host
		want string
	}{
		{"nil attestation", nil, Host{}, "nil attestation"},
		{"empty host ID", attestation("", wire.VerdictFail, 0), Host{}, "empty host ID"},
		{"bad verdict", attestation("host-a", "maybe", 0), Host{ID: "host-a"}, "unknown verdict"},
		{"empty verdict", attestation("host-a", "", 0), Host{ID: "host-a"}, "unknown verdict"},
		{"zero time", func() *Attestation {
			a := attestation("host-a", wire.VerdictFail, 0)
			a.Time = time.Time{}
			return a
		}(), Host{ID: "host-a"}, "zero attestation time"},
		{"host ID mismatch", attestation("host-a", wire.VerdictPass, 0), Host{ID: "host-b"}, "does not match"},
		{"state contradicts verdict", attestation("host-a", wire.VerdictFail, 0), Host{State: HostAdmitted}, "contradicts"},
		{"unknown state", attestation("host-a", wire.VerdictPass, 0), Host{State: "limbo"}, "unknown host state"},
	}
	s := open(t)
	seed := attestation("host-a", wire.VerdictFail, -1)
	record(t, s, seed)
	before := takeSnapshot(t, s)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc, err := s.Record(context.Background(), tt.a, tt.h)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Record err = %v, want one containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "record attestation: ") {
				t.Errorf("err %q lacks the record attestation prefix", err)
			}
			if inc != 0 {
				t.Errorf("Record returned incident %d on error", inc)
			}
			if tt.a != nil && tt.a.ID != 0 {
				t.Errorf("Record set a.ID = %d on error", tt.a.ID)
			}
			if diff := cmp.Diff(before, takeSnapshot(t, s)); diff != "" {
				t.Errorf("store changed (-before +after):\n%s", diff)
			}
		})
	}
}

func testRecordStateDefaultsFromVerdict(t *testing.T, open opener) {
	s := open(t)
	ctx := context.Background()
	for _, tt := range []struct {
		verdict, want string
	}{
		{wire.VerdictFail, HostQuarantined},
		{wire.VerdictPass, HostAdmitted},
	} {
		a := attestation("host-a", tt.verdict, 0)
		if _, err := s.Record(ctx, a, Host{}); err != nil {
			t.Fatalf("Record(%s): %v", tt.verdict, err)
		}
		h, err := s.Host(ctx, "host-a")
		if err != nil {
			t.Fatalf("Host: %v", err)
		}
		if h.State != tt.want {
			t.Errorf("after %s with empty Host.State: state %q, want %q", tt.verdict, h.State, tt.want)
		}
	}
}

func TestRecordRollsBack(t *testing.T) {
	tests := []struct {
		name    string
		trigger string // fails the named operation
		host    string // host of the failing attestation
	}{
		{"attestation insert", "BEFORE INSERT ON attestations", "host-a"},
		{"host update", "BEFORE UPDATE ON hosts", "host-a"},
		{"incident open", "BEFORE INSERT ON incidents", "host-new"},
		{"incident attach", "BEFORE UPDATE ON incidents", "host-a"},
		{"incident link", "BEFORE INSERT ON incident_attestations", "host-a"},
		{"incident link of new incident", "BEFORE INSERT ON incident_attestations", "host-new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTest(t)
			ctx := context.Background()
			record(t, s, attestation("host-a", wire.VerdictPass, 0))
			record(t, s, attestation("host-a", wire.VerdictFail, 1))
			before := takeSnapshot(t, s)

			if _, err := s.write.ExecContext(ctx, `CREATE TRIGGER inject `+tt.trigger+
				` BEGIN SELECT RAISE(ABORT, 'injected failure'); END`); err != nil {
				t.Fatalf("create trigger: %v", err)
			}
			a := attestation(tt.host, wire.VerdictFail, 2)
			inc, err := s.Record(ctx, a, Host{})
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("Record err = %v, want the injected failure", err)
			}
			if inc != 0 || a.ID != 0 {
				t.Errorf("Record returned incident %d and set a.ID %d on error", inc, a.ID)
			}
			if diff := cmp.Diff(before, takeSnapshot(t, s)); diff != "" {
				t.Errorf("store changed (-before +after):\n%s", diff)
			}

			// The store stays usable.
			if _, err := s.write.ExecContext(ctx, `DROP TRIGGER inject`); err != nil {
				t.Fatalf("drop trigger: %v", err)
			}
			record(t, s, attestation(tt.host, wire.VerdictFail, 3))
		})
	}
}

func testRecordCanceledContext(t *testing.T, open opener) {
	s := open(t)
	record(t, s, attestation("host-a", wire.VerdictPass, 0))
	before := takeSnapshot(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := attestation("host-a", wire.VerdictFail, 1)
	if _, err := s.Record(ctx, a, Host{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Record err = %v, want context.Canceled", err)
	}
	if diff := cmp.Diff(before, takeSnapshot(t, s)); diff != "" {
		t.Errorf("store changed (-before +after):\n%s", diff)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootgate.db")
	ctx := context.Background()

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	pass := attestation("host-a", wire.VerdictPass, 0)
	record(t, s, pass)
	fail := attestation("host-a", wire.VerdictFail, 1)
	inc := record(t, s, fail)
	before := takeSnapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if diff := cmp.Diff(before, takeSnapshot(t, s)); diff != "" {
		t.Errorf("reopened store differs (-before +after):\n%s", diff)
	}
	got, err := s.Attestation(ctx, fail.ID)
	if err != nil {
		t.Fatalf("Attestation: %v", err)
	}
	fail.Time = fail.Time.UTC()
	if diff := cmp.Diff(fail, got); diff != "" {
		t.Errorf("reopened attestation (-want +got):\n%s", diff)
	}
	// New records continue the sequences and attach to the open incident.
	next := attestation("host-a", wire.VerdictFail, 2)
	if got := record(t, s, next); got != inc {
		t.Errorf("failure after reopen returned incident %d, want %d", got, inc)
	}
	if next.ID <= fail.ID {
		t.Errorf("attestation ID after reopen %d, want > %d", next.ID, fail.ID)
	}
	var versions int
	if err := s.read.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&versions); err != nil || versions != 1 {
		t.Errorf("schema_version rows = %d, %v; want 1", versions, err)
	}
}

func TestPragmas(t *testing.T) {
	s, _ := openTest(t)
	want := map[string]string{
		"journal_mode": "wal",
		"foreign_keys": "1",
		"busy_timeout": "5000",
		"synchronous":  "2", // FULL: a commit is on disk before it returns
	}
	for _, pool := range []struct {
		name string
		q    func(string) (string, error)
	}{
		{"write", func(p string) (v string, err error) { err = s.write.QueryRow("PRAGMA " + p).Scan(&v); return }},
		{"read", func(p string) (v string, err error) { err = s.read.QueryRow("PRAGMA " + p).Scan(&v); return }},
	} {
		for p, w := range want {
			got, err := pool.q(p)
			if err != nil {
				t.Fatalf("%s PRAGMA %s: %v", pool.name, p, err)
			}
			if !strings.EqualFold(got, w) {
				t.Errorf("%s PRAGMA %s = %q, want %q", pool.name, p, got, w)
			}
		}
	}
}

func testConcurrentRecords(t *testing.T, open opener) {
	const (
		workers = 8
		each    = 25
	)
	s := open(t)
	storeEveryFailure(t, s) // this counts stored attestations
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Three hosts shared by all workers, so incidents are
				// opened and attached concurrently.
				verdict := wire.VerdictPass
				if (w+i)%2 == 0 {
					verdict = wire.VerdictFail
				}
				a := attestation(fmt.Sprintf("host-%d", (w*each+i)%3), verdict, w*each+i)
				if _, err := s.Record(ctx, a, Host{}); err != nil {
					errs <- fmt.Errorf("worker %d record %d: %w", w, i, err)
					return
				}
				// Reads run alongside the writes.
				if _, err := s.Attestation(ctx, a.ID); err != nil {
					errs <- fmt.Errorf("worker %d read %d: %w", w, a.ID, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	c := counts(t, s)
	if c["attestations"] != workers*each {
		t.Errorf("attestations = %d, want %d", c["attestations"], workers*each)
	}
	var fails, failures int
	if err := s.read.QueryRow(`SELECT count(*) FROM attestations WHERE verdict = 'fail'`).Scan(&fails); err != nil {
		t.Fatal(err)
	}
	if err := s.read.QueryRow(`SELECT COALESCE(SUM(failures), 0) FROM incidents`).Scan(&failures); err != nil {
		t.Fatal(err)
	}
	if fails != failures || c["incident_attestations"] != fails {
		t.Errorf("failed attestations %d, incident failures %d, links %d: want all equal", fails, failures, c["incident_attestations"])
	}
	if c["incidents"] != 3 {
		t.Errorf("incidents = %d, want one per host (3)", c["incidents"])
	}
}

func TestOpenNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootgate.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	if _, err := s.write.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatalf("set version: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite of a version-99 database succeeded")
	}
	if !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Errorf("err = %v, want it to name version 99 as newer", err)
	}
}

func TestOpenSpecialPath(t *testing.T) {
	dir := t.TempDir()
	name := "boot?gate#db%20x.db"
	for range 2 { // create, then reopen
		s, err := OpenSQLite(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("OpenSQLite: %v", err)
		}
		record(t, s, attestation("host-a", wire.VerdictPass, 0))
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Errorf("database not at the literal path: %v", err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if s, err := OpenSQLite(""); err == nil {
		s.Close()
		t.Fatal("OpenSQLite(\"\") succeeded")
	}
}

func testQuarantine(t *testing.T, open opener) {
	st := open(t)
	ctx := context.Background()
	a := &Attestation{HostID: "h1", Time: time.Now(), Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d"}
	if _, err := st.Record(ctx, a, Host{ID: "h1", State: HostAdmitted}); err != nil {
		t.Fatal(err)
	}
	if err := st.Quarantine(ctx, "h1", "alice"); err != nil {
		t.Fatal(err)
	}
	if h, err := st.Host(ctx, "h1"); err != nil || h.State != HostQuarantined {
		t.Fatalf("after quarantine: %+v %v", h, err)
	}
	if err := st.Quarantine(ctx, "nobody", "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
}

func testSummaryAndPages(t *testing.T, open opener) {
	st := open(t)
	ctx := context.Background()
	changed := st.Changed()
	verdicts := []string{wire.VerdictPass, wire.VerdictFail, wire.VerdictFail, wire.VerdictPass, wire.VerdictFail}
	for i, v := range verdicts {
		a := &Attestation{HostID: fmt.Sprint("h", i), Time: time.Now(), Verdict: v, PolicyName: "p", PolicyDigest: "d"}
		if _, err := st.Record(ctx, a, Host{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not signalled by a commit")
	}
	if err := st.Act(ctx, 2, "alice", IncidentAction{Kind: "investigate"}); err != nil {
		t.Fatal(err)
	}
	sum, err := st.Summarize(ctx)
	if err != nil || sum.Hosts[HostAdmitted] != 2 || sum.Hosts[HostQuarantined] != 3 ||
		sum.Incidents[IncidentOpen] != 2 || sum.Incidents[IncidentInvestigating] != 1 || sum.Unresolved() != 3 {
		t.Fatalf("summary %+v, %v", sum, err)
	}

	var got []string
	q := HostQuery{Limit: 2}
	for {
		page, err := st.ListHosts(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, h := range page {
			got = append(got, h.ID)
		}
		q.After = page[len(page)-1].ID
	}
	if diff := cmp.Diff([]string{"h0", "h1", "h2", "h3", "h4"}, got); diff != "" {
		t.Errorf("hosts page by page (-want +got):\n%s", diff)
	}
	if p, err := st.ListHosts(ctx, HostQuery{Prefix: "h3"}); err != nil || len(p) != 1 || p[0].ID != "h3" {
		t.Errorf("hosts by prefix: %+v %v", p, err)
	}
	if p, err := st.ListHosts(ctx, HostQuery{Prefix: "x"}); err != nil || len(p) != 0 {
		t.Errorf("hosts by an unknown prefix: %+v %v", p, err)
	}
	if q, err := st.ListHosts(ctx, HostQuery{State: HostQuarantined}); err != nil || len(q) != 3 {
		t.Errorf("quarantined hosts: %d, %v", len(q), err)
	}
	if adm, err := st.AdmittedHosts(ctx); err != nil || len(adm) != 2 || !adm["h0"] || !adm["h3"] {
		t.Errorf("admitted hosts: %v %v", adm, err)
	}
	if _, err := st.ListHosts(ctx, HostQuery{State: "sideways"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown host state: %v", err)
	}
	page, err := st.ListIncidents(ctx, IncidentQuery{State: IncidentOpen, Limit: 1})
	if err != nil || len(page) != 1 || page[0].HostID != "h4" {
		t.Fatalf("newest open incident: %+v %v", page, err)
	}
	page, err = st.ListIncidents(ctx, IncidentQuery{State: Unresolved, Before: page[0].ID})
	if err != nil || len(page) != 2 || page[0].State != IncidentInvestigating || page[1].HostID != "h1" {
		t.Fatalf("next page: %+v %v", page, err)
	}
	if page, err := st.ListIncidents(ctx, IncidentQuery{Host: "h2"}); err != nil || len(page) != 1 || page[0].HostID != "h2" {
		t.Fatalf("by host: %+v %v", page, err)
	}
	if _, err := st.ListIncidents(ctx, IncidentQuery{State: "lost"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown incident state: %v", err)
	}
	audit, err := st.ListAudit(ctx, 0, 10)
	if err != nil || len(audit) != 1 || audit[0].Action != "incident-investigate" {
		t.Fatalf("audit: %+v %v", audit, err)
	}
}

// TestIdentities: a host's identities are revoked when it fails an
// attestation (or is quarantined) and listed until they expire; later
// identities of the re-admitted host are not.
func testIdentities(t *testing.T, open opener) {
	st := open(t)
	ctx, now := context.Background(), time.Now()
	rec := func(verdict string) {
		a := &Attestation{HostID: "h", Time: now, Verdict: verdict, PolicyName: "p", PolicyDigest: "d"}
		if _, err := st.Record(ctx, a, Host{}); err != nil {
			t.Fatal(err)
		}
	}
	rec(wire.VerdictPass)
	for _, r := range []IdentityRecord{
		{Serial: "a2", HostID: "h", Issued: now, NotAfter: now.Add(-time.Minute)}, // expired
		{Serial: "a1", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour)},
	} {
		if err := st.RecordIdentity(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "a1", HostID: "h", Issued: now, NotAfter: now}); err == nil {
		t.Error("recorded a serial twice")
	}
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "x", HostID: "nobody", Issued: now, NotAfter: now}); err == nil {
		t.Error("recorded an identity of an unknown host")
	}
	if l, err := st.RevokedIdentities(ctx, now); err != nil || len(l) != 0 {
		t.Fatalf("revoked while admitted: %+v %v", l, err)
	}
	rec(wire.VerdictFail)
	l, err := st.RevokedIdentities(ctx, now)
	if err != nil || len(l) != 1 || l[0].Serial != "a1" || l[0].Revoked.IsZero() {
		t.Fatalf("revoked after a failure (the expired one left out): %+v %v", l, err)
	}
	// Issued while the host is quarantined (a renewal racing an operator's
	// quarantine): recorded as revoked, and refused.
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "b1", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour)}); !errors.Is(err, ErrNotAdmitted) {
		t.Fatalf("identity of a quarantined host: %v", err)
	}
	rec(wire.VerdictPass)
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "c1", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// A renewal supersedes the identity it renews; renewing that one again
	// (a replayed or concurrent renewal) writes nothing.
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "c2", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour), Supersedes: "c1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "c3", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour), Supersedes: "c1"}); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("a second renewal of c1: %v, want ErrSuperseded", err)
	}
	// A fresh attestation's identity replaces the host's others.
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "c4", HostID: "h", Issued: now, NotAfter: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for serial, want := range map[string]bool{"a1": false, "b1": false, "c1": false, "c2": false, "c3": false, "c4": true, "zz": false} {
		if got, err := st.IdentityValid(ctx, serial); err != nil || got != want {
			t.Errorf("IdentityValid(%s) = %v %v, want %v", serial, got, err, want)
		}
	}
	if l, _ := st.RevokedIdentities(ctx, now); len(l) != 4 {
		t.Errorf("revoked: %+v, want a1, b1, c1 and c2", l)
	}
	// A day after they expire, identities are pruned.
	if err := st.RecordIdentity(ctx, IdentityRecord{Serial: "d1", HostID: "h", Issued: now.Add(50 * time.Hour), NotAfter: now.Add(51 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.RevokedIdentities(ctx, now); len(l) != 0 {
		t.Errorf("identities expired for over a day were not pruned: %+v", l)
	}
}

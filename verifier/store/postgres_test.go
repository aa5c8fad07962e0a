package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestRedacted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/var/lib/bootgate/bootgate.db", "/var/lib/bootgate/bootgate.db"},
		{"postgres://bootgate:s3cret@db.example:5432/bootgate?sslmode=verify-full", "postgres://bootgate:xxxxx@db.example:5432/bootgate?sslmode=verify-full"},
		{"postgresql://bootgate@/bootgate?host=%2Frun%2Fpostgresql&password=s3cret", "postgresql://bootgate@/bootgate?host=%2Frun%2Fpostgresql&password=xxxxx"},
		{"postgres://bootgate:s3cret@db.example:bad/x", "postgres://(a URL that does not parse)"},
	} {
		if got := Redacted(tc.in); got != tc.want {
			t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestUnverifiedTransport: a PostgreSQL URL whose connection someone on
// the network could read or change (plaintext allowed, or a certificate
// not verified) to a host that is not local is named; a verified
// certificate, a Unix socket or a loopback host is not.
func TestUnverifiedTransport(t *testing.T) {
	for _, env := range []string{"PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGSSLNEGOTIATION"} {
		t.Setenv(env, "")
	}
	for _, tc := range []struct {
		url  string
		warn bool
	}{
		{"postgres://bootgate@db.example/bootgate", true}, // pgx's default: prefer
		{"postgres://bootgate@db.example/bootgate?sslmode=prefer", true},
		{"postgres://bootgate@db.example/bootgate?sslmode=allow", true},
		{"postgres://bootgate@db.example/bootgate?sslmode=disable", true},
		{"postgres://bootgate@db.example/bootgate?sslmode=require", true},
		{"postgres://bootgate@192.0.2.7:5432/bootgate", true},
		{"postgres://bootgate@127.0.0.1,db.example/bootgate?sslmode=require", true},
		{"postgres://bootgate@db.example/bootgate?sslmode=verify-full", false},
		{"postgres://bootgate@db.example/bootgate?sslmode=verify-ca", false},
		{"postgresql://bootgate@/bootgate?host=%2Frun%2Fpostgresql", false},
		{"postgres://bootgate@localhost/bootgate?sslmode=disable", false},
		{"postgres://bootgate@127.0.0.1/bootgate", false},
		{"postgres://bootgate@[::1]:5432/bootgate", false},
		{"/var/lib/bootgate/bootgate.db", false},
	} {
		why := UnverifiedTransport(tc.url)
		if (why != "") != tc.warn {
			t.Errorf("UnverifiedTransport(%s) = %q; want a warning: %v", tc.url, why, tc.warn)
		}
	}
	t.Setenv("PGSSLMODE", "verify-full")
	if why := UnverifiedTransport("postgres://bootgate@db.example/bootgate"); why != "" {
		t.Errorf("with PGSSLMODE=verify-full: %q; want no warning", why)
	}
}

// An unusable PostgreSQL URL is refused without quoting its password.
func TestOpenPostgresRefusesQuietly(t *testing.T) {
	for _, u := range []string{
		"postgres://bootgate:s3cret@db.example:bad/x",
		"postgres://bootgate:s3cret@/nowhere?host=/nonexistent-dir&connect_timeout=1",
	} {
		s, err := Open(context.Background(), u)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) succeeded", Redacted(u))
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s): the error shows the password: %v", Redacted(u), err)
		}
	}
}

// TestPostgresConcurrentFirstOpen: appliances starting together on a new
// database all open it; one migrates, the others wait for it and find the
// schema current.
func TestPostgresConcurrentFirstOpen(t *testing.T) {
	url := pgtest.DB(t)
	const appliances = 4
	errs := make(chan error, appliances)
	stores := make(chan *DB, appliances)
	for range appliances {
		go func() {
			s, err := OpenPostgres(context.Background(), url)
			errs <- err
			stores <- s
		}()
	}
	for range appliances {
		if err := <-errs; err != nil {
			t.Errorf("OpenPostgres: %v", err)
		}
		if s := <-stores; s != nil {
			if !current(context.Background(), s.write) {
				t.Errorf("opened at a schema other than %d", SchemaVersion())
			}
			s.Close()
		}
	}
}

// TestChangedSeesOtherAppliances: Changed of one appliance reports the
// commits of another on one PostgreSQL database: a verdict, an operator's
// action, and a commit whose row ID is below one already seen (IDs come
// from a sequence, in the order they were taken, not committed).
func TestChangedSeesOtherAppliances(t *testing.T) {
	loc := pgtest.DB(t)
	a, b := openAt(t, loc), openAt(t, loc)
	ctx := context.Background()
	<-b.watcher.ready // changes from here on are the other appliance's
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(time.Minute):
			// A guard against hanging, not a measure: B polls every
			// ChangePoll.
			t.Fatalf("B's Changed did not report %s through A", what)
		}
	}

	ch := b.Changed()
	record(t, a, attestation("h1", wire.VerdictFail, 0))
	wait("a verdict", ch)

	// An audit row takes its ID, then another commits a higher one first.
	late, err := a.write.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback()
	if _, err := late.ExecContext(ctx, `INSERT INTO audit (time, actor, action, target, detail) VALUES ($1, 'local:alice', 'note', 'h1', '')`,
		formatTime(time.Now())); err != nil {
		t.Fatal(err)
	}
	ch = b.Changed()
	if err := a.Quarantine(ctx, "h1", "local:alice"); err != nil {
		t.Fatal(err)
	}
	wait("an operator's quarantine", ch)
	ch = b.Changed()
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	wait("a commit below the newest ID seen", ch)
}

// TestPostgresBlobRaceRetryable: the foreign key violations of an
// attestation referencing an evidence blob that Prune deleted meanwhile,
// and of Prune deleting a blob an attestation came to reference, are the
// errors write transactions run again after; other foreign key violations
// are not.
func TestPostgresBlobRaceRetryable(t *testing.T) {
	s := openAt(t, pgtest.DB(t))
	ctx := context.Background()
	a := attestation("h", wire.VerdictFail, 0)
	a.Evidence.EventLog = []byte("log")
	record(t, s, a)
	missing := blobRef([]byte("pruned"))
	for _, tc := range []struct {
		name, query string
		args        []any
		retry       bool
	}{
		{"attestation referencing a deleted blob", `UPDATE attestations SET event_log_sha256 = ? WHERE id = ?`, []any{missing, a.ID}, true},
		{"blob deleted under a reference", `DELETE FROM evidence_blobs WHERE sha256 = ?`, []any{blobRef(a.Evidence.EventLog)}, true},
		{"incident referencing a missing attestation", `UPDATE incidents SET last_attestation_id = 9999`, nil, false},
	} {
		_, err := s.write.ExecContext(ctx, tc.query, tc.args...)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if got := pgRetryable(err); got != tc.retry {
			t.Errorf("%s: pgRetryable(%v) = %v, want %v", tc.name, err, got, tc.retry)
		}
	}
}

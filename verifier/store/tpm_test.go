package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/bootgate/bootgate/verifier/wire"
)

// TestTPMRecorded: an attestation's TPM facts are stored and read back as
// received, control characters included.
func TestTPMRecorded(t *testing.T) {
	s, _ := openTest(t)
	want := TPM{Manufacturer: "IFX", Model: "SLB 9670\x1b[2J TPM2.0", Version: "id:073f", Firmware: "7.85.4555.0"}
	a := &Attestation{HostID: "h1", Time: baseTime(), Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d", TPM: want}
	if _, err := s.Record(context.Background(), a, Host{EKType: "rsa2048"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Attestation(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TPM != want {
		t.Fatalf("TPM = %+v, want %+v", got.TPM, want)
	}
}

// TestMigrateVersion1: a database of schema version 1 (before the TPM
// column) opens, is migrated to the current version, keeps its
// attestations and records new ones with their TPM.
func TestMigrateVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		t.Fatal(err)
	}
	stmts := append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL CHECK (version > 0))`,
		`INSERT INTO schema_version (version) VALUES (1)`}, schemaStatements()...)
	stmts = append(stmts, `INSERT INTO hosts (id, ek_type, ek_issuer, state, first_seen, last_seen, last_verdict) VALUES ('old', 'rsa2048', '', 'admitted', 't', 't', 'pass')`,
		`INSERT INTO attestations (host_id, time, verdict, reasons, policy_name, policy_digest, ek_type, ak, pcrs) VALUES ('old', '2026-01-01T00:00:00.000000000Z', 'pass', '[]', 'p', 'd', 'rsa2048', '{}', '[]')`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("open a version-1 database: %v", err)
	}
	defer s.Close()
	var v int
	if err := s.read.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("schema version %d, %v; want %d", v, err, schemaVersion)
	}
	old, err := s.Attestation(context.Background(), 1)
	if err != nil || old.TPM != (TPM{}) {
		t.Fatalf("old attestation: %+v, %v", old, err)
	}
	a := &Attestation{HostID: "new", Time: baseTime(), Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d", TPM: TPM{Manufacturer: "NTC", Firmware: "7.2.0.0"}}
	if _, err := s.Record(context.Background(), a, Host{EKType: "rsa2048"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Attestation(context.Background(), a.ID); err != nil || got.TPM != a.TPM {
		t.Fatalf("new attestation TPM %+v, %v", got, err)
	}
}

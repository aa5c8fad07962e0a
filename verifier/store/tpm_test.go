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
func testTPMRecorded(t *testing.T, open opener) {
	s := open(t)
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
	// Schema version 1 as the code of that time made it, with host "old"
	// and its attestation 1.
	execFile(t, db, "testdata/legacy_v1.sql")
	db.Close()

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatalf("open a version-1 database: %v", err)
	}
	defer s.Close()
	var v int
	if err := s.read.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || int64(v) != SchemaVersion() {
		t.Fatalf("schema version %d, %v; want %d", v, err, SchemaVersion())
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

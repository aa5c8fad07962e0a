package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// execFile runs the SQL script at path on db.
func execFile(t *testing.T, db *sql.DB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(string(b)); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// legacyDB makes a database file from one of testdata/legacy_v*.sql.
func legacyDB(t *testing.T, fixture string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootgate.db")
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	execFile(t, db, fixture)
	return path
}

// schemaOf describes a database's schema by what code depends on: every
// table's and index's name, and each column's name, type, NOT NULL,
// default and primary-key position, in name order (a column added by ALTER
// TABLE sits last; nothing here reads columns by position).
func schemaOf(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	rows, err := db.Query(`SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	var tables []string
	for rows.Next() {
		var typ, name, tbl string
		if err := rows.Scan(&typ, &name, &tbl); err != nil {
			t.Fatal(err)
		}
		out["objects"] = append(out["objects"], typ+" "+name+" on "+tbl)
		if typ == "table" {
			tables = append(tables, name)
		}
	}
	rows.Close()
	for _, tb := range tables {
		cols, err := db.Query(`SELECT name, type, "notnull", COALESCE(dflt_value, 'NULL'), pk FROM pragma_table_info(?)`, tb)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var name, typ, dflt string
			var notnull, pk int
			if err := cols.Scan(&name, &typ, &notnull, &dflt, &pk); err != nil {
				t.Fatal(err)
			}
			out[tb] = append(out[tb], fmt.Sprintf("%s %s notnull=%d default=%s pk=%d", name, typ, notnull, dflt, pk))
		}
		cols.Close()
		slices.Sort(out[tb])
	}
	return out
}

// versions are the goose versions recorded as applied, ascending.
func versions(t *testing.T, db *sql.DB) []int64 {
	t.Helper()
	rows, err := db.Query(`SELECT version_id FROM goose_db_version WHERE is_applied ORDER BY version_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestSchemaVersion(t *testing.T) {
	if got := SchemaVersion(); got != 7 {
		t.Errorf("SchemaVersion = %d, want 7 (a new migration file? update this test and the fence)", got)
	}
}

// TestMigrateLegacy: databases made before migrations were files, at the
// store's schema version 1 (with the oldest lease tables) and 2 (with
// today's), open with their rows kept and end with exactly the schema of a
// new database, every migration recorded once; opening again changes
// nothing.
func TestMigrateLegacy(t *testing.T) {
	fresh, err := OpenSQLite(filepath.Join(t.TempDir(), "new.db"))
	if err != nil {
		t.Fatal(err)
	}
	want := schemaOf(t, fresh.read.DB)
	wantVersions := versions(t, fresh.read.DB)
	fresh.Close()
	if len(wantVersions) != int(SchemaVersion())+1 {
		t.Fatalf("a new database has versions %v", wantVersions)
	}

	for _, tc := range []struct {
		name, fixture string
		relay         string // the lease's relay after migration
		bindingExpiry int64  // the host binding's expiry after migration
	}{
		{"version 1", "testdata/legacy_v1.sql", "", 0},
		{"version 2", "testdata/legacy_v2.sql", "10.24.9.1", 4102444800000000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := legacyDB(t, tc.fixture)
			for range 2 { // migrate, then reopen
				s, err := OpenSQLite(path)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if diff := cmp.Diff(want, schemaOf(t, s.read.DB)); diff != "" {
					t.Errorf("schema differs from a new database's (-new +migrated):\n%s", diff)
				}
				if diff := cmp.Diff(wantVersions, versions(t, s.read.DB)); diff != "" {
					t.Errorf("goose versions (-want +got):\n%s", diff)
				}
				var fence int64
				if err := s.read.QueryRow(`SELECT version FROM schema_version`).Scan(&fence); err != nil || fence != SchemaVersion() {
					t.Errorf("schema_version %d, %v; want %d", fence, err, SchemaVersion())
				}
				a, err := s.Attestation(context.Background(), 1)
				if err != nil || a.HostID != "old" || a.TPM != (TPM{}) {
					t.Errorf("attestation 1: %+v, %v", a, err)
				}
				var audits int
				if err := s.read.QueryRow(`SELECT COUNT(*) FROM audit WHERE actor = 'local:root'`).Scan(&audits); err != nil || audits != 1 {
					t.Errorf("audit rows %d, %v; want 1", audits, err)
				}
				var relay string
				var exp int64
				if err := s.read.QueryRow(`SELECT l.relay, m.expires FROM dhcp_leases l JOIN dhcp_host_macs m ON m.mac = l.mac`).Scan(&relay, &exp); err != nil ||
					relay != tc.relay || exp != tc.bindingExpiry {
					t.Errorf("lease relay %q, binding expiry %d, %v; want %q, %d", relay, exp, err, tc.relay, tc.bindingExpiry)
				}
				s.Close()
			}
		})
	}
}

// TestMigrateRefusesNewer: a database a newer bootgate migrated (in the
// version table, in the fence, or, before migrations were files, in
// schema_version) is refused and left as it was.
func TestMigrateRefusesNewer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		version int64
	}{
		{"goose version", func(t *testing.T, path string) {
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.write.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (99, 1)`); err != nil {
				t.Fatal(err)
			}
		}, 99},
		{"fence", func(t *testing.T, path string) {
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.write.Exec(`UPDATE schema_version SET version = ?`, SchemaVersion()+1); err != nil {
				t.Fatal(err)
			}
		}, SchemaVersion() + 1},
		{"legacy version 3", func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", fileURI(path))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE schema_version (version INTEGER NOT NULL CHECK (version > 0)); INSERT INTO schema_version (version) VALUES (3)`); err != nil {
				t.Fatal(err)
			}
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bootgate.db")
			tc.prepare(t, path)
			s, err := OpenSQLite(path)
			if err == nil {
				s.Close()
				t.Fatal("opened a database of a newer bootgate")
			}
			var se *SchemaError
			if !errors.Is(err, ErrSchemaTooNew) || !errors.As(err, &se) || se.Database != tc.version {
				t.Fatalf("err = %v, want a SchemaError for version %d wrapping ErrSchemaTooNew", err, tc.version)
			}
		})
	}
	// Nothing was written to the legacy database.
	path := filepath.Join(t.TempDir(), "bootgate.db")
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE schema_version (version INTEGER NOT NULL CHECK (version > 0)); INSERT INTO schema_version (version) VALUES (3)`); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(context.Background(), db); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Migrate: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the refused database has %d objects, %v; want its one table", n, err)
	}
}

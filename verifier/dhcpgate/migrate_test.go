package dhcpgate

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootgate/bootgate/verifier/store"
)

// TestLeasesMigrateLegacy: an appliance database made before migrations
// were files (the store's fixtures: store tables and lease tables in one
// file) opens with its leases, in either order of the store and the
// leases, and a binding without an expiry (the oldest lease tables) counts
// as expired.
func TestLeasesMigrateLegacy(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		leasesFirst   bool
		host          string // HostOf the lease's MAC after the upgrade
	}{
		{"version 1, leases first", "../store/testdata/legacy_v1.sql", true, ""},
		{"version 1, store first", "../store/testdata/legacy_v1.sql", false, ""},
		{"version 2, leases first", "../store/testdata/legacy_v2.sql", true, "old"},
		{"version 2, store first", "../store/testdata/legacy_v2.sql", false, "old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bootgate.db")
			script, err := os.ReadFile(tc.fixture)
			if err != nil {
				t.Fatal(err)
			}
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(string(script)); err != nil {
				t.Fatal(err)
			}
			db.Close()

			var st *store.SQLite
			openStore := func() {
				if st, err = store.OpenSQLite(path); err != nil {
					t.Fatalf("open the store: %v", err)
				}
				t.Cleanup(func() { st.Close() })
			}
			if !tc.leasesFirst {
				openStore()
			}
			l := mustOpen(t, path)
			defer l.Close()
			if tc.leasesFirst {
				openStore()
			}
			hw, _ := net.ParseMAC("52:54:00:12:34:56")
			if got := holder(l, net.IPv4(10, 24, 0, 10)); got != hw.String() {
				t.Errorf("the lease of 10.24.0.10 is held by %q, want %s", got, hw)
			}
			if id, _ := l.HostOf(context.Background(), hw); id != tc.host {
				t.Errorf("HostOf = %q, want %q", id, tc.host)
			}
			if a, err := st.Attestation(context.Background(), 1); err != nil || a.HostID != "old" {
				t.Errorf("attestation 1: %+v, %v", a, err)
			}
		})
	}
}

// TestLeasesRefuseNewerSchema: the leases refuse a file a newer bootgate
// migrated, as the store does.
func TestLeasesRefuseNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootgate.db")
	l := mustOpen(t, path)
	if _, err := l.t.DB().Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (99, 1)`); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if l, err := OpenLeases(path); !errors.Is(err, store.ErrSchemaTooNew) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("OpenLeases: %v, want ErrSchemaTooNew", err)
	}
}

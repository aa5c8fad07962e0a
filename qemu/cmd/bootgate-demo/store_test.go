package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/pgcluster"
)

// Without a PostgreSQL server the demo falls back to SQLite, saying so,
// unless PostgreSQL was asked for by name; -store sqlite starts nothing.
func TestStoreWithoutPostgres(t *testing.T) {
	noServer := t.TempDir() // a directory without initdb
	for _, tc := range []struct {
		name     string
		flag     string
		explicit bool
		wantErr  bool
		wantNote bool
	}{
		{name: "default falls back", flag: "postgres", wantNote: true},
		{name: "asked for by name fails", flag: "postgres", explicit: true, wantErr: true},
		{name: "sqlite", flag: "sqlite", explicit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseStore(tc.flag, tc.explicit)
			if err != nil {
				t.Fatal(err)
			}
			c.bin = noServer
			var out strings.Builder
			ds, err := startStore(&out, c, filepath.Join(t.TempDir(), "postgres.log"))
			if tc.wantErr {
				if !errors.Is(err, pgcluster.ErrUnavailable) || !strings.Contains(err.Error(), "-store sqlite") {
					t.Fatalf("startStore: %v, want ErrUnavailable naming -store sqlite", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ds.stop(&out)
			if ds.pg != nil {
				t.Fatal("a cluster started from a directory without a server")
			}
			if got := strings.Contains(out.String(), "falls back to SQLite"); got != tc.wantNote {
				t.Errorf("fall-back note printed: %v, want %v; output %q", got, tc.wantNote, out.String())
			}
			if d := ds.describe("x.db"); d != "SQLite, x.db" {
				t.Errorf("describe: %q", d)
			}
		})
	}
	if _, err := parseStore("mysql", true); err == nil {
		t.Error("-store mysql accepted")
	}
}

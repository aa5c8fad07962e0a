package appliance_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// TestRunOnPostgres: with store: a postgres:// URL, the appliance keeps
// its state in that database (migrated when it starts) instead of a file.
func TestRunOnPostgres(t *testing.T) {
	url := pgtest.DB(t)
	a := freeAddrs(t)
	cfgPath, dir := setup(t, a)
	y, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	y = bytes.Replace(y, []byte("store: bootgate.db"), fmt.Appendf(nil, "store: %q", url), 1)
	if err := os.WriteFile(cfgPath, y, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store != url {
		t.Fatalf("store loaded as %q, want the URL %q", cfg.Store, url)
	}
	notes := listenNotify(t)

	cancel, done := runUntilReady(t, cfg, notes)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "bootgate.db")); err == nil {
		t.Error("an SQLite file was made although the store is PostgreSQL")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.RecordAction(ctx, "test", "check", "store", ""); err != nil {
		t.Fatalf("the appliance's database: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(stopBound):
		t.Fatalf("Run did not return within %v of cancel", stopBound)
	}
}

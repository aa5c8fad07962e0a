package pgcluster_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bootgate/bootgate/internal/pgcluster"
)

// A cluster started with fsync on runs with it on, serves a database made
// by CreateDB over its socket, writes its log where it was told, and is
// gone after Stop.
func TestStartFsyncLogStop(t *testing.T) {
	// The server runs as the postgres user when the test runs as root:
	// /tmp lets it through where t.TempDir's parents may not.
	dir, err := os.MkdirTemp("/tmp", "pgcluster")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "postgres.log")
	c, err := pgcluster.Start(filepath.Join(dir, "pg"), pgcluster.Options{Fsync: true, Log: logPath})
	if errors.Is(err, pgcluster.ErrUnavailable) {
		t.Skipf("no PostgreSQL for this test: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})
	ctx := context.Background()
	if err := c.CreateDB(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", c.URL("demo"))
	if err != nil {
		t.Fatal(err)
	}
	var name, fsync string
	if err := db.QueryRowContext(ctx, `SELECT current_database(), current_setting('fsync')`).Scan(&name, &fsync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if name != "demo" || fsync != "on" {
		t.Errorf("connected to database %q with fsync %q, want demo with fsync on", name, fsync)
	}
	if c.Log() != logPath {
		t.Errorf("Log() = %q, want %q", c.Log(), logPath)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if b, err := os.ReadFile(logPath); err != nil || len(b) == 0 {
		t.Errorf("server log %s: %d bytes, %v", logPath, len(b), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg", "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid after Stop: %v", err)
	}
}

// A server that is not installed is ErrUnavailable, which callers skip or
// fall back on.
func TestStartNotInstalled(t *testing.T) {
	_, err := pgcluster.Start(filepath.Join(t.TempDir(), "pg"), pgcluster.Options{Bin: t.TempDir()})
	if !errors.Is(err, pgcluster.ErrUnavailable) {
		t.Fatalf("Start with an empty Bin: %v, want ErrUnavailable", err)
	}
}

// TestClusterIsItsUsersAlone: the cluster trusts every connection on its
// socket, so its directory is 0700 and its socket 0700: another local user
// cannot reach it. A symbolic link given as the directory is refused, not
// followed (as root, Start hands the directory to the server's user).
func TestClusterIsItsUsersAlone(t *testing.T) {
	parent, err := os.MkdirTemp("/tmp", "pgcluster")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := t.TempDir()
	link := filepath.Join(parent, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if _, err := pgcluster.Start(link, pgcluster.Options{}); errors.Is(err, pgcluster.ErrUnavailable) {
		t.Skipf("no PostgreSQL for this test: %v", err)
	} else if err == nil {
		t.Fatal("a symbolic link was taken as the cluster's directory")
	}
	if fi, err := os.Stat(victim); err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
		t.Fatalf("the link's target changed owner: %v", err)
	}

	dir := filepath.Join(parent, "pg")
	c, err := pgcluster.Start(dir, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	for _, p := range []string{dir, filepath.Join(dir, ".s.PGSQL.5432")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o: others may reach a cluster that trusts every connection", p, fi.Mode().Perm())
		}
	}
}

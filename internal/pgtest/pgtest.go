// Package pgtest runs a throwaway PostgreSQL cluster for a test binary and
// hands each test a fresh database in it.
//
// The cluster (see internal/pgcluster) is made by the installed server's
// initdb in a temporary directory the first time a test asks for a
// database, listens only on a Unix socket in that directory (no TCP), and
// is stopped and removed when the test binary's TestMain returns from Run:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
//
// The server is the test binary's child with a parent-death signal, so a
// test binary that is killed takes its server with it. PostgreSQL refuses
// to run as root: when the tests run as root, initdb and the server run as
// the "postgres" system user (or "nobody" when there is none). Without an
// installed server (Debian's postgresql package: initdb under
// /usr/lib/postgresql/*/bin, or the directory named by $PGTEST_BIN), DB
// skips the test with the reason.
//
// The cluster runs with fsync off, for speed, unless $PGTEST_FSYNC is "on".
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bootgate/bootgate/internal/pgcluster"
)

var (
	once    sync.Once
	cluster *pgcluster.Cluster
	dir     string // the cluster's temporary directory
	errSkip error  // why there is no cluster: the reason tests skip with
	errFail error  // the cluster could not be started
	seq     atomic.Int64
)

// Run runs the tests and then stops and removes the cluster, if one was
// started. It returns m.Run's exit code, which TestMain passes to os.Exit.
func Run(m *testing.M) int {
	code := m.Run()
	if dir != "" {
		var errs []error
		if cluster != nil {
			errs = append(errs, cluster.Stop())
		}
		errs = append(errs, os.RemoveAll(dir))
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// DB creates a fresh, empty database in the test binary's cluster
// (starting the cluster if needed) and returns its connection URL, a
// postgres:// URL for the cluster's Unix socket. The database is dropped
// when the test ends. DB skips the test when no PostgreSQL server is
// installed, and fails it when the cluster cannot be started.
func DB(t testing.TB) string {
	t.Helper()
	once.Do(start)
	if errSkip != nil {
		t.Skipf("no PostgreSQL for this test: %v", errSkip)
	}
	if errFail != nil {
		t.Fatalf("start PostgreSQL: %v", errFail)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), seq.Add(1))
	if err := cluster.CreateDB(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.DropDB(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	return cluster.URL(name)
}

// start makes and starts the cluster, setting cluster, or errSkip or
// errFail.
func start() {
	// The socket's path must fit in 107 bytes, and when the server runs as
	// another user every directory above it must let that user through:
	// /tmp does both where $TMPDIR may not.
	base := os.TempDir()
	if os.Geteuid() == 0 || len(base) > 60 {
		base = "/tmp"
	}
	d, err := os.MkdirTemp(base, "pgtest")
	if err != nil {
		errFail = err
		return
	}
	dir = d
	c, err := pgcluster.Start(dir, pgcluster.Options{Fsync: os.Getenv("PGTEST_FSYNC") == "on", Bin: os.Getenv("PGTEST_BIN")})
	switch {
	case errors.Is(err, pgcluster.ErrUnavailable):
		errSkip = err
	case err != nil:
		errFail = err
	default:
		cluster = c
	}
}

// Package pgtest runs a throwaway PostgreSQL cluster for a test binary and
// hands each test a fresh database in it.
//
// The cluster is made by the installed server's initdb in a temporary
// directory the first time a test asks for a database, listens only on a
// Unix socket in that directory (no TCP), and is stopped and removed when
// the test binary's TestMain returns from Run:
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
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	// The pgx database/sql driver, registered as "pgx".
	_ "github.com/jackc/pgx/v5/stdlib"
)

// superuser is the cluster's bootstrap superuser, which the tests use.
const superuser = "bootgate"

// startTimeout bounds how long the server may take to accept connections.
const startTimeout = 60 * time.Second

var (
	once    sync.Once
	cluster *server
	errSkip error // why there is no cluster: the reason tests skip with
	errFail error // the cluster could not be started
	seq     atomic.Int64
)

// server is a running throwaway cluster.
type server struct {
	dir    string // temporary directory: data/ and the socket
	cmd    *exec.Cmd
	exited chan struct{}
	admin  *sql.DB // the "postgres" database, for CREATE DATABASE
}

// Run runs the tests and then stops and removes the cluster, if one was
// started. It returns m.Run's exit code, which TestMain passes to os.Exit.
func Run(m *testing.M) int {
	code := m.Run()
	if cluster != nil {
		if err := cluster.stop(); err != nil {
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
	ctx := context.Background()
	if _, err := cluster.admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := cluster.admin.ExecContext(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return cluster.url(name)
}

// url is the connection URL of database name.
func (s *server) url(name string) string {
	q := url.Values{"host": {s.dir}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(superuser), Path: "/" + name, RawQuery: q.Encode()}).String()
}

// bindir finds the directory of initdb and postgres: $PGTEST_BIN, or the
// newest /usr/lib/postgresql/N/bin.
func bindir() (string, error) {
	if d := os.Getenv("PGTEST_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("PGTEST_BIN: %w", err)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", errors.New("initdb not found under /usr/lib/postgresql/*/bin nor on PATH (install the postgresql package, or set PGTEST_BIN)")
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	return filepath.Dir(dirs[0]), nil
}

// version is the major version in /usr/lib/postgresql/N/bin/initdb.
func version(path string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return n
}

// runAs is the user the server runs as: nil for the current one, or, when
// that is root, "postgres" or else "nobody".
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and there is neither a postgres nor a nobody user to run the server as")
}

// start makes and starts the cluster, setting cluster, or errSkip or
// errFail.
func start() {
	bin, err := bindir()
	if err != nil {
		errSkip = err
		return
	}
	cred, err := runAs()
	if err != nil {
		errSkip = err
		return
	}
	s, err := launch(bin, cred)
	if err != nil {
		errFail = err
		return
	}
	cluster = s
}

func launch(bin string, cred *syscall.Credential) (_ *server, err error) {
	// The socket's path must fit in 107 bytes, and when the server runs as
	// another user every directory above it must let that user through:
	// /tmp does both where $TMPDIR may not.
	base := os.TempDir()
	if cred != nil || len(base) > 60 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir}
	defer func() {
		if err != nil {
			_ = s.stop()
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "--pgdata", data, "--username", superuser,
		"--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	fsync := "off"
	if os.Getenv("PGTEST_FSYNC") == "on" {
		fsync = "on"
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+dir,
		"-c", "fsync="+fsync, "-c", "max_connections=200")
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// SIGQUIT is the server's immediate shutdown: it follows the test
	// binary when that dies without running Run's cleanup.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.exited) }()

	s.admin, err = sql.Open("pgx", s.url("postgres"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = s.admin.PingContext(ctx)
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("postgres exited: %s", tail(filepath.Join(dir, "server.log")))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postgres did not accept connections in %v: %w; log: %s", startTimeout, err, tail(filepath.Join(dir, "server.log")))
		}
	}
}

// tail is the end of the server's log, for errors.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// stop shuts the server down (fast: disconnecting clients) and removes its
// directory.
func (s *server) stop() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
	}
	if s.cmd != nil && s.cmd.Process != nil {
		// SIGINT is the server's fast shutdown.
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(startTimeout):
			_ = s.cmd.Process.Kill()
			<-s.exited
			errs = append(errs, errors.New("postgres did not shut down; killed"))
		}
	}
	errs = append(errs, os.RemoveAll(s.dir))
	return errors.Join(errs...)
}

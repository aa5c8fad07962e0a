// Package pgcluster runs a throwaway PostgreSQL cluster: Debian's installed
// server, initdb'd into a directory of the caller's, run as the caller's
// child, listening only on a Unix socket in that directory (no TCP), with
// trust authentication for the bootstrap superuser. Tests (internal/pgtest)
// and the demo use it; it is no way to run a production database.
//
// PostgreSQL refuses to run as root: when the caller is root, initdb and
// the server run as the "postgres" system user (or "nobody" when there is
// none). The server gets a parent-death signal, so a caller that is killed
// takes its server with it.
package pgcluster

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
	"syscall"
	"time"

	// The pgx database/sql driver, registered as "pgx".
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Superuser is the cluster's bootstrap superuser, whom URL names.
const Superuser = "bootgate"

// startTimeout bounds how long the server may take to accept connections,
// and to shut down.
const startTimeout = 60 * time.Second

// maxSocketPath is the longest Unix socket path (sun_path less its NUL).
const maxSocketPath = 107

// ErrUnavailable means no cluster can be run here: no server is installed,
// or the caller is root and there is no user to run it as. Callers skip or
// fall back on it; any other error from Start is a failure.
var ErrUnavailable = errors.New("no PostgreSQL server can run here")

// Options of a cluster.
type Options struct {
	// Fsync turns the server's fsync on: the demo's data survives a crash
	// as an appliance's would. Tests leave it off, for speed.
	Fsync bool
	// Bin is the directory of initdb and postgres; "" is the newest
	// /usr/lib/postgresql/N/bin, or initdb's directory on $PATH.
	Bin string
	// Log is the server's log file, created (truncated) by Start as the
	// caller, so it may be anywhere the caller can write; "" is server.log
	// in the cluster's directory.
	Log string
}

// Cluster is a running throwaway cluster.
type Cluster struct {
	dir    string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	admin  *sql.DB // the "postgres" database, for CREATE and DROP DATABASE
}

// Start makes a cluster in dir (created if absent; its data directory is
// dir/data) and starts its server, listening on a Unix socket in dir. The
// socket's path must fit in 107 bytes, and when the caller is root every
// directory above dir must let the postgres user through (/tmp does both).
// The error wraps ErrUnavailable when no server is installed or there is no
// user to run it as.
func Start(dir string, opt Options) (_ *Cluster, err error) {
	bin, err := bindir(opt.Bin)
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if sock := filepath.Join(dir, ".s.PGSQL.5432"); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("start postgres: the socket path %s is longer than %d bytes", sock, maxSocketPath)
	}
	// The cluster trusts every connection on its socket: only its own user
	// (and root) may reach it, through a directory that is no one else's.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(dir); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("start postgres: %s is not a directory (a symbolic link?)", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, log: opt.Log}
	if c.log == "" {
		c.log = filepath.Join(dir, "server.log")
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if cred != nil {
		if err := os.Lchown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "--pgdata", data, "--username", Superuser,
		"--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		uid := os.Geteuid()
		if cred != nil {
			uid = int(cred.Uid)
		}
		return nil, fmt.Errorf("initdb in %s as uid %d (every directory above it must let that user through): %w\n%s", dir, uid, err, out)
	}
	fsync := "off"
	if opt.Fsync {
		fsync = "on"
	}
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+dir, "-c", "unix_socket_permissions=0700",
		"-c", "fsync="+fsync, "-c", "max_connections=200")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	// SIGQUIT is the server's immediate shutdown: it follows the caller
	// when that dies without calling Stop.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c.exited = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.exited) }()

	c.admin, err = sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.admin.PingContext(ctx)
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("postgres exited: %s", tail(c.log))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postgres did not accept connections in %v: %w; log: %s", startTimeout, err, tail(c.log))
		}
	}
}

// URL is the connection URL of database name: a postgres:// URL for the
// cluster's Unix socket, as the superuser.
func (c *Cluster) URL(name string) string {
	q := url.Values{"host": {c.dir}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/" + name, RawQuery: q.Encode()}).String()
}

// Log is the path of the server's log.
func (c *Cluster) Log() string { return c.log }

// CreateDB creates the empty database name, an SQL identifier.
func (c *Cluster) CreateDB(ctx context.Context, name string) error {
	if _, err := c.admin.ExecContext(ctx, `CREATE DATABASE `+ident(name)); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// DropDB drops database name, disconnecting its clients.
func (c *Cluster) DropDB(ctx context.Context, name string) error {
	if _, err := c.admin.ExecContext(ctx, `DROP DATABASE `+ident(name)+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// ident quotes an SQL identifier.
func ident(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Stop shuts the server down (fast: disconnecting clients). It leaves the
// directory, and the log, to the caller.
func (c *Cluster) Stop() error {
	var errs []error
	if c.admin != nil {
		errs = append(errs, c.admin.Close())
		c.admin = nil
	}
	if c.cmd != nil && c.cmd.Process != nil && c.exited != nil {
		// SIGINT is the server's fast shutdown.
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.exited:
		case <-time.After(startTimeout):
			_ = c.cmd.Process.Kill()
			<-c.exited
			errs = append(errs, errors.New("postgres did not shut down; killed"))
		}
		c.cmd = nil
	}
	return errors.Join(errs...)
}

// bindir finds the directory of initdb and postgres: dir, or the newest
// /usr/lib/postgresql/N/bin, or initdb's directory on $PATH.
func bindir(dir string) (string, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
			return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("%w: initdb not found under /usr/lib/postgresql/*/bin nor on PATH (apt-get install postgresql)", ErrUnavailable)
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
	return nil, fmt.Errorf("%w: running as root and there is neither a postgres nor a nobody user to run the server as", ErrUnavailable)
}

// tail is the end of the server's log, for errors.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

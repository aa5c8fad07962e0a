package appliance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/cli"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
)

// stopBound is how long Run may take to return once its context ends: the
// drain of idle listeners is immediate, so this is slack for a loaded
// machine, far below appliance.DefaultDrain.
const stopBound = 3 * time.Second

// addrs are the listeners of a test appliance.
type addrs struct{ api, admin, metrics, bootHTTP, tftp string }

func (a addrs) tcp() []string { return []string{a.api, a.admin, a.metrics, a.bootHTTP} }

// setup writes a loopback appliance configuration in a temporary
// directory: attestation API, admin API, metrics, boot files over HTTP and
// TFTP, and the policy learned from the RHEL 8 log, as `bootgate policy
// learn` does. It returns the configuration's path, its directory and the
// listeners' addresses.
func setup(t *testing.T, a addrs) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cliRun(t, "tls", "init", "--dir", filepath.Join(dir, "tls"), "--host", "127.0.0.1")
	pol := cliRun(t, "policy", "learn", "--eventlog", "../../testdata/eventlogs/rhel8-uefi.bin")
	ca, err := os.ReadFile(filepath.Join(dir, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"policy.yaml": []byte(pol), "roots/ca.pem": ca, "boot/agent.efi": []byte("UKI")} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "appliance.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %q
tls: {cert: tls/server.pem, key: tls/server-key.pem}
policy: policy.yaml
store: bootgate.db
ek: {roots: roots}
conns: {max: 64}
metrics_listen: %q
admin: {listen: %q, operators: operators, conns: {max: 16}}
bootfiles: {dir: boot, http: %q, tftp: %q, http_conns: {max: 16}, tftp_transfers: {max: 4}}
`, a.api, a.metrics, a.admin, a.bootHTTP, a.tftp)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func cliRun(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := cli.Run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("bootgate %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String()
}

func freeAddrs(t *testing.T) addrs {
	t.Helper()
	var tcp []string
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		tcp = append(tcp, ln.Addr().String())
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return addrs{api: tcp[0], admin: tcp[1], metrics: tcp[2], bootHTTP: tcp[3], tftp: pc.LocalAddr().String()}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// storeClosedCleanly checks that the store file was closed by its last
// user: SQLite removes the WAL when its last connection closes, and the
// file opens again.
func storeClosedCleanly(t *testing.T, dir string) {
	t.Helper()
	db := filepath.Join(dir, "bootgate.db")
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("no store: %v", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(db + suffix); err == nil {
			t.Errorf("%s left behind: the store was not closed", filepath.Base(db+suffix))
		}
	}
	st, err := store.OpenSQLite(db)
	if err != nil {
		t.Fatalf("reopen the store: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// runUntilReady runs the appliance with cfg and waits for its READY=1 on
// notes (listenNotify); it returns the cancel that stops it and the channel
// Run's result arrives on.
func runUntilReady(t *testing.T, cfg *config.Appliance, notes <-chan string) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- appliance.Run(ctx, cfg, appliance.Options{Logger: testLogger(t)}) }()
	select {
	case n := <-notes:
		if n != "READY=1" {
			cancel()
			t.Fatalf("first notification %q, want READY=1", n)
		}
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before READY=1: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("no READY=1")
	}
	return cancel, done
}

// TestRunStopsOnCancel starts the appliance with every loopback listener,
// waits for its READY=1 on a NOTIFY_SOCKET, checks that every listener
// accepts, cancels the context and checks that Run returns nil within
// stopBound, after STOPPING=1, with every listener closed and the store
// closed cleanly.
func TestRunStopsOnCancel(t *testing.T) {
	a := freeAddrs(t)
	cfgPath, dir := setup(t, a)
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	notes := listenNotify(t)

	cancel, done := runUntilReady(t, cfg, notes)
	defer cancel()
	for _, addr := range a.tcp() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("after READY=1, %s does not accept: %v", addr, err)
		}
		c.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "bootgate.db-wal")); err != nil {
		t.Fatalf("no WAL while serving, so its absence later proves nothing: %v", err)
	}

	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
		t.Logf("stopped in %v", time.Since(start))
	case <-time.After(stopBound):
		t.Fatalf("Run did not return within %v of cancel", stopBound)
	}
	select {
	case n := <-notes:
		if n != "STOPPING=1" {
			t.Errorf("notification %q, want STOPPING=1", n)
		}
	default:
		t.Error("no STOPPING=1")
	}
	for _, addr := range a.tcp() {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Run returned", addr)
		}
	}
	// The TFTP socket is closed: its port binds again.
	if pc, err := net.ListenPacket("udp4", a.tftp); err != nil {
		t.Errorf("the TFTP port is still bound: %v", err)
	} else {
		pc.Close()
	}
	storeClosedCleanly(t, dir)
}

// TestRunStopsOnComponentError: the admin API's address is taken, so the
// appliance stops with the admin listener's error (EADDRINUSE), having
// closed the listeners it bound and the store.
func TestRunStopsOnComponentError(t *testing.T) {
	a := freeAddrs(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	a.admin = taken.Addr().String()
	cfgPath, dir := setup(t, a)
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- appliance.Run(context.Background(), cfg, appliance.Options{Logger: testLogger(t)}) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on the admin listener's error")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), "admin API: ") {
		t.Fatalf("Run: %v, want the admin API's EADDRINUSE", err)
	}
	for _, addr := range []string{a.api, a.metrics, a.bootHTTP} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Run returned", addr)
		}
	}
	storeClosedCleanly(t, dir)
}

// TestRunRefusesFileBudget: caps that do not fit RLIMIT_NOFILE stop the
// appliance before it creates its store.
func TestRunRefusesFileBudget(t *testing.T) {
	a := freeAddrs(t)
	cfgPath, dir := setup(t, a)
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Conns.Max = 1 << 21 // above the most RLIMIT_NOFILE is raised to
	err = appliance.Run(context.Background(), cfg, appliance.Options{Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "connection caps exceed the file descriptor limit") {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bootgate.db")); err == nil {
		t.Error("the refused appliance created its store")
	}
}

// TestDefaultPCRs: the configuration's default quoted PCRs, against which
// the policy's coverage is checked, are the attestation server's.
func TestDefaultPCRs(t *testing.T) {
	if !slices.Equal(config.DefaultPCRs, server.DefaultPCRs) {
		t.Fatalf("config.DefaultPCRs %v, server.DefaultPCRs %v", config.DefaultPCRs, server.DefaultPCRs)
	}
}

// listenNotify sets NOTIFY_SOCKET to a datagram socket for the test and
// returns the notifications that arrive on it.
func listenNotify(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	out := make(chan string, 16)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

// syncBuffer is a log sink safe for the appliance's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunReloadsPolicy: a reload puts a new policy file in force and says
// so; a policy that does not parse is refused and the one in force stays.
func TestRunReloadsPolicy(t *testing.T) {
	a := freeAddrs(t)
	cfgPath, dir := setup(t, a)
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	notes := listenNotify(t)
	var logs syncBuffer
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- appliance.Run(ctx, cfg, appliance.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Reload: reload})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	want := func(note string) {
		t.Helper()
		select {
		case n := <-notes:
			if n != note {
				t.Fatalf("notification %q, want %q", n, note)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s", note)
		}
	}
	want("READY=1")
	policyPath := filepath.Join(dir, "policy.yaml")
	old, err := os.ReadFile(policyPath)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(policyPath, []byte("name: broken\nunknown_field: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	want("RELOADING=1")
	want("READY=1")
	if !strings.Contains(logs.String(), "policy reload refused") {
		t.Fatalf("a broken policy was not refused:\n%s", logs.String())
	}

	renamed := strings.Replace(string(old), "name: rhel8-uefi", "name: rhel8-uefi-v2", 1)
	if renamed == string(old) {
		t.Fatalf("the learned policy has no name line to change:\n%s", old)
	}
	if err := os.WriteFile(policyPath, []byte(renamed), 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	want("RELOADING=1")
	want("READY=1")
	if !strings.Contains(logs.String(), `msg="policy reloaded" policy=rhel8-uefi-v2`) {
		t.Fatalf("the new policy was not put in force:\n%s", logs.String())
	}
}

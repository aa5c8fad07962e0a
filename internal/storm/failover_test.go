package storm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/internal/storm"
	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// applianceEnv names the configuration file with which this test binary,
// started again by a test, runs as an appliance process instead of running
// tests: a process the test can kill with SIGKILL.
const applianceEnv = "BOOTGATE_STORM_TEST_APPLIANCE"

func TestMain(m *testing.M) {
	if path := os.Getenv(applianceEnv); path != "" {
		os.Exit(runAppliance(path))
	}
	os.Exit(pgtest.Run(m))
}

func runAppliance(path string) int {
	cfg, err := config.LoadAppliance(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := appliance.Run(ctx, cfg, appliance.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// replica is an appliance process started from this test binary.
type replica struct {
	cfg, url, log string
	cmd           *exec.Cmd
	done          chan error
}

func startReplica(t *testing.T, cfg, url string) *replica {
	t.Helper()
	r := &replica{cfg: cfg, url: url, log: cfg + ".log"}
	r.start(t)
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Signal(syscall.SIGTERM)
			<-r.done
		}
	})
	return r
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(os.Args[0], "-test.run=^$")
	r.cmd.Env = append(os.Environ(), applianceEnv+"="+r.cfg)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan error, 1)
	go func() { r.done <- r.cmd.Wait() }()
	waitListening(t, r.url, func() error {
		select {
		case err := <-r.done:
			b, _ := os.ReadFile(r.log)
			return fmt.Errorf("%v\n%s", err, b)
		default:
			return nil
		}
	})
}

// kill stops the replica with SIGKILL: no shutdown, whatever it was doing.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

// failoverStorm plays a storm of n hosts against replicas appliance
// processes on one store, kills the first replica with SIGKILL once a third
// of the hosts are done, and starts it again a second later. One host in
// 50 boots another machine's firmware, which the policy refuses. Every
// other host must end admitted, and the store must hold what the hosts
// were told: one admitted host each, every attestation ID a host got; each
// refused host quarantined with exactly one incident.
func failoverStorm(t *testing.T, st string, replicas, n int) {
	needLoopbackRange(t)
	m, err := softtpm.NewManufacturer("storm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	raw := readLog(t, goodLog)
	dir, roots := applianceFiles(t, m, raw)
	if st == "" {
		st = filepath.Join(dir, "bootgate.db")
	}
	var rs []*replica
	var urls []string
	for i := range replicas {
		cfg, url := applianceConfig(t, dir, fmt.Sprintf("replica-%d.yaml", i), st)
		// One at a time: the first makes the PKI and session key the others
		// load.
		rs = append(rs, startReplica(t, cfg, url))
		urls = append(urls, url)
	}
	bad := n / 50
	hosts, err := storm.Manufacture(m, raw, n-bad, 2, storm.DefaultFirstSource)
	if err != nil {
		t.Fatal(err)
	}
	first := storm.DefaultFirstSource
	for range n - bad {
		first = first.Next()
	}
	refused, err := storm.Manufacture(m, readLog(t, otherLog), bad, 1, first)
	if err != nil {
		t.Fatal(err)
	}
	// Interleaved: host i is refused when i%50 == 49.
	var all []*storm.Host
	for i, g, b := 0, 0, 0; i < n; i++ {
		if i%50 == 49 && b < bad {
			all, b = append(all, refused[b]), b+1
		} else {
			all, g = append(all, hosts[g]), g+1
		}
	}
	hosts = all

	var finished atomic.Int64
	type result struct {
		res *storm.Result
		err error
	}
	out := make(chan result, 1)
	go func() {
		res, err := storm.Run(context.Background(), storm.Config{URLs: urls, Roots: roots, Concurrency: 16,
			Timeout: 3 * time.Minute, Failover: true, MaxRetries: 100, Finished: &finished}, hosts)
		out <- result{res, err}
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for finished.Load() < int64(n/3) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d hosts done after 5 minutes", finished.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs[0].kill(t)
	killedAt := finished.Load()
	time.Sleep(time.Second)
	rs[0].start(t)
	r := <-out
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := r.res.Summarize()
	failovers, cross := 0, 0
	for _, o := range r.res.Outcomes {
		failovers += o.Failovers
		cross += o.CrossQuotes
		switch {
		case o.Host%50 == 49 && (o.Err == nil || !strings.Contains(o.Err.Error(), `verdict "fail"`)):
			t.Errorf("host %d, booted from another machine's firmware: %v, want a fail verdict", o.Host, o.Err)
		case o.Host%50 != 49 && o.Err != nil:
			t.Errorf("host %d: %v", o.Host, o.Err)
		}
	}
	t.Logf("%d hosts, %d admitted, %d errors, %d failovers, %d quotes taken by another replica than their enrollment's, %d retries; replica 0 killed after %d hosts, in %.1f s",
		s.Hosts, s.Admitted, s.Errors, failovers, cross, s.Retries, killedAt, s.Elapsed.Seconds())
	if s.Admitted != n-bad {
		t.Errorf("%d hosts admitted, want %d", s.Admitted, n-bad)
	}
	if failovers == 0 {
		t.Error("no host met the killed replica: the test did not test a failover")
	}

	ctx := context.Background()
	db, err := store.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hs, err := db.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admitted, quarantined := map[string]bool{}, map[string]bool{}
	for _, h := range hs {
		switch h.State {
		case store.HostAdmitted:
			admitted[h.ID] = true
		case store.HostQuarantined:
			quarantined[h.ID] = true
		}
	}
	if len(hs) != n || len(admitted) != n-bad || len(quarantined) != bad {
		t.Errorf("the store holds %d hosts, %d admitted and %d quarantined; want %d, %d and %d", len(hs), len(admitted), len(quarantined), n, n-bad, bad)
	}
	for _, o := range r.res.Outcomes {
		if o.Err != nil {
			continue
		}
		a, err := db.Attestation(ctx, o.AttestationID)
		if err != nil {
			t.Errorf("host %d was told attestation %d, which the store lacks: %v", o.Host, o.AttestationID, err)
			continue
		}
		if a.HostID != o.HostID || a.Verdict != wire.VerdictPass {
			t.Errorf("attestation %d: host %s verdict %s; host %d was told %s pass", a.ID, a.HostID, a.Verdict, o.Host, o.HostID)
		}
		if !admitted[o.HostID] {
			t.Errorf("host %d (%s) is not in the store", o.Host, o.HostID)
		}
	}
	incidents, err := db.Incidents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perHost := map[string]int{}
	for _, in := range incidents {
		perHost[in.HostID]++
		if !quarantined[in.HostID] {
			t.Errorf("incident %d of host %s, which is not quarantined", in.ID, in.HostID)
		}
	}
	if len(perHost) != bad || len(incidents) != bad {
		t.Errorf("%d incidents of %d hosts, want one for each of the %d refused hosts", len(incidents), len(perHost), bad)
	}
}

// TestFailoverPostgres: two replicas on one PostgreSQL, one killed midway
// through a storm of 2 000 hosts and started again; the hosts it had move
// to the other, as agents do.
func TestFailoverPostgres(t *testing.T) {
	failoverStorm(t, pgtest.DB(t), 2, 2000)
}

// TestFailoverSQLite: one appliance on SQLite, killed with SIGKILL midway
// through a storm of 2 000 hosts and started again; its hosts retry until
// it is back, and nothing it committed is lost.
func TestFailoverSQLite(t *testing.T) {
	failoverStorm(t, "", 1, 2000)
}

// TestQuoteOnAnotherReplica: hosts enroll with one replica, which is then
// killed with SIGKILL; their quotes, sent to the other replica as the
// agent fails over, are taken there (the session lives in its token, under
// the key the replicas share). A replica with another key refuses such a
// quote as an unknown session, and admits nothing.
func TestQuoteOnAnotherReplica(t *testing.T) {
	needLoopbackRange(t)
	m, err := softtpm.NewManufacturer("storm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	raw := readLog(t, goodLog)
	dir, roots := applianceFiles(t, m, raw)
	st := pgtest.DB(t)
	cfgA, urlA := applianceConfig(t, dir, "a.yaml", st)
	cfgB, urlB := applianceConfig(t, dir, "b.yaml", st)
	cfgC, urlC := applianceConfig(t, dir, "c.yaml", st)
	b, err := os.ReadFile(cfgC)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgC, []byte(strings.Replace(string(b), "session_key: session.key", "session_key: other-session.key", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startReplica(t, cfgA, urlA)
	startReplica(t, cfgB, urlB)
	startReplica(t, cfgC, urlC)
	hosts, err := storm.Manufacture(m, raw, 20, 2, storm.DefaultFirstSource)
	if err != nil {
		t.Fatal(err)
	}
	cfg := storm.Config{Roots: roots, Timeout: time.Minute}
	ctx := context.Background()
	pending := make([]*storm.Pending, len(hosts))
	for i, h := range hosts {
		if pending[i], _, err = cfg.Enroll(ctx, h, urlA); err != nil {
			t.Fatalf("host %d enrolls with replica A: %v", i, err)
		}
	}
	a.kill(t)
	// The first half goes to C, whose key is not A's: refused, nothing
	// recorded; the second half to B.
	for i, h := range hosts {
		url := urlB
		if i < len(hosts)/2 {
			url = urlC
		}
		_, _, err := cfg.Quote(ctx, h, pending[i], url)
		var se *storm.StatusError
		switch {
		case url == urlC && (!errors.As(err, &se) || se.Code != wire.CodeUnknownSession):
			t.Errorf("host %d: a replica with another session key answered %v, want unknown_session", i, err)
		case url == urlB && err != nil:
			t.Errorf("host %d: the quote enrolled with the killed replica, sent to the other: %v", i, err)
		}
	}
	db, err := store.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hs, err := db.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != len(hosts)/2 {
		t.Errorf("%d hosts recorded, want the %d whose quotes reached replica B", len(hs), len(hosts)/2)
	}
}

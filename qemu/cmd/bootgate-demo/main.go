// Command bootgate-demo runs the appliance's attestation service and test hosts
// against it, and shows who was admitted and who was quarantined, and why.
//
// In vm mode (the default) the hosts are QEMU machines with OVMF, Secure Boot
// under bootgate's own keys and their own swtpm, booting the signed agent UKI;
// see vm.go. In process mode each test host is a bootgate-agent process with its own swtpm, manufactured
// with EK certificates from a test TPM manufacturer. Before it attests, the
// agent extends a recorded real firmware event log into its swtpm, so that the
// quote and the log agree as they would after a real boot. In both modes the
// appliance keeps its state in a throwaway PostgreSQL cluster, or with
// -store sqlite in SQLite (see store.go). The demo exits non-zero if any
// host ends otherwise than expected.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bootgate/bootgate/qemu/swtpm"
)

type host struct {
	name, eventLog, want string
}

var hosts = []host{
	{"good-host", "rhel8-uefi.bin", "pass"},
	{"secureboot-off", "ubuntu-2104-no-secure-boot.bin", "fail"},
	{"foreign-firmware", "cos-101-amd-sev.bin", "fail"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bootgate-demo", flag.ContinueOnError)
	work := fs.String("work", "build/demo", "working directory (recreated)")
	bin := fs.String("bin", "bin", "directory holding bootgate and bootgate-agent")
	addr := fs.String("listen", "127.0.0.1:18443", "address of the attestation API")
	adminAddr := fs.String("admin", "127.0.0.1:19443", "address of the admin API and dashboard")
	logs := fs.String("logs", "testdata/eventlogs", "directory of the recorded firmware event logs (process mode)")
	mode := fs.String("mode", "vm", "vm: QEMU hosts boot the agent under OVMF; process: agent processes replay recorded logs")
	buildDir := fs.String("build", "build", "images/build.sh's output (vm mode)")
	storeFlag := fs.String("store", "postgres", "the appliance's store: postgres (a throwaway cluster, or SQLite when no PostgreSQL server is installed) or sqlite")
	if err := fs.Parse(args); err != nil {
		return err
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "store" })
	choice, err := parseStore(*storeFlag, explicit)
	if err != nil {
		return err
	}
	if err := swtpm.Available(); err != nil {
		return err
	}
	switch *mode {
	case "vm":
		return runVMs(ctx, stdout, *work, *bin, *buildDir, choice)
	case "process":
	default:
		return fmt.Errorf("-mode: %q is neither vm nor process", *mode)
	}
	step := func(format string, a ...any) { fmt.Fprintf(stdout, "==> "+format+"\n", a...) }

	if err := os.RemoveAll(*work); err != nil {
		return err
	}
	for _, d := range []string{"roots", "tls", "logs"} {
		if err := os.MkdirAll(filepath.Join(*work, d), 0o755); err != nil {
			return err
		}
	}
	ds, err := startStore(stdout, choice, filepath.Join(*work, "logs", "postgres.log"))
	if err != nil {
		return err
	}
	defer ds.stop(stdout)
	storeLoc := "bootgate.db"
	if ds.pg != nil {
		step("the appliance keeps its state in PostgreSQL: a throwaway cluster (server log: %s)", ds.pg.Log())
		if err := ds.pg.CreateDB(ctx, "appliance"); err != nil {
			return err
		}
		storeLoc = ds.pg.URL("appliance")
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	bootgate, agent := abs(filepath.Join(*bin, "bootgate")), abs(filepath.Join(*bin, "bootgate-agent"))

	step("manufacturing %d software TPMs with EK certificates from a test manufacturer CA", len(hosts))
	ca, err := swtpm.NewCA(filepath.Join(*work, "tpm-manufacturer"))
	if err != nil {
		return err
	}
	var tpms []*swtpm.TPM
	defer func() {
		for _, t := range tpms {
			_ = t.Stop()
		}
	}()
	for _, h := range hosts {
		dir := filepath.Join(*work, "tpm-"+h.name)
		if err := ca.Manufacture(ctx, dir); err != nil {
			return err
		}
		t, err := swtpm.Start(dir, true)
		if err != nil {
			return err
		}
		tpms = append(tpms, t)
	}
	roots, err := ca.Roots()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*work, "roots", "tpm-manufacturer.pem"), roots, 0o644); err != nil {
		return err
	}

	step("creating the appliance's TLS certificate and learning the demo policy from the good host's firmware log")
	h, _, _ := net.SplitHostPort(*addr)
	if out, err := exec.CommandContext(ctx, bootgate, "tls", "init", "--dir", filepath.Join(*work, "tls"), "--host", h).CombinedOutput(); err != nil {
		return fmt.Errorf("tls init: %v\n%s", err, out)
	}
	policyYAML, err := exec.CommandContext(ctx, bootgate, "policy", "learn", "--name", "demo", "--eventlog", filepath.Join(*logs, hosts[0].eventLog)).Output()
	if err != nil {
		return fmt.Errorf("policy learn: %v", err)
	}
	if err := os.WriteFile(filepath.Join(*work, "policy.yaml"), policyYAML, 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf("listen: %q\ntls:\n  cert: tls/server.pem\n  key: tls/server-key.pem\npolicy: policy.yaml\nstore: %q\nek:\n  roots: roots\nadmin: {listen: %q, operators: operators}\n", *addr, storeLoc, *adminAddr)
	cfgPath := filepath.Join(*work, "appliance.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	profile := filepath.Join(*work, "operator.yaml")
	if out, err := exec.CommandContext(ctx, bootgate, "operator", "add", "demo", "--config", cfgPath, "--out", profile).CombinedOutput(); err != nil {
		return fmt.Errorf("operator add: %v\n%s", err, out)
	}

	step("starting the appliance: bootgate serve --config %s (log: %s)", cfgPath, filepath.Join(*work, "logs", "appliance.log"))
	logf, err := os.Create(filepath.Join(*work, "logs", "appliance.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	srv := exec.Command(bootgate, "serve", "--config", cfgPath)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-srvDone:
		case <-time.After(5 * time.Second):
			_ = srv.Process.Kill()
		}
	}()
	if err := waitTLS(*addr, srvDone, 15*time.Second); err != nil {
		return err
	}

	type outcome struct {
		host           host
		verdict, notes string
		took           time.Duration
	}
	var results []outcome
	for i, h := range hosts {
		step("host %s attests (its swtpm replays %s)", h.name, h.eventLog)
		start := time.Now()
		cmd := exec.CommandContext(ctx, agent, "--name", h.name, "--tpm", "swtpm:"+tpms[i].Socket,
			"--verifier", "https://"+*addr, "--ca", filepath.Join(*work, "tls", "ca.pem"),
			"--eventlog", filepath.Join(*logs, h.eventLog), "--replay-eventlog")
		var out strings.Builder
		agentLog, err := os.Create(filepath.Join(*work, "logs", h.name+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout = io.MultiWriter(&out, stdout)
		cmd.Stderr = agentLog
		runErr := cmd.Run()
		agentLog.Close()
		o := outcome{host: h, took: time.Since(start)}
		var exit *exec.ExitError
		switch {
		case runErr == nil:
			o.verdict = "pass"
		case errors.As(runErr, &exit) && exit.ExitCode() == 1:
			o.verdict = "fail"
		default:
			o.verdict = "error"
			o.notes = fmt.Sprintf("agent error (%v), see %s", runErr, filepath.Join(*work, "logs", h.name+".log"))
		}
		if o.notes == "" {
			o.notes = reasons(out.String())
		}
		results = append(results, o)
	}

	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "Who got in:")
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tEXPECTED\tVERDICT\tSECONDS\tREASONS")
	bad := 0
	for _, o := range results {
		mark := ""
		if o.verdict != o.host.want {
			mark, bad = "  <-- UNEXPECTED", bad+1
		}
		verdict := map[string]string{"pass": "ADMITTED", "fail": "QUARANTINED"}[o.verdict]
		if verdict == "" {
			verdict = "ERROR"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s%s\n", o.host.name, o.host.want, verdict, o.took.Seconds(), o.notes, mark)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nThe appliance's store: %s\n", ds.describe(filepath.Join(*work, "bootgate.db")))
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "The operators' view, through the admin API on %s (mTLS with an operator certificate):\n", *adminAddr)
	for _, c := range [][]string{{"status"}, {"hosts"}, {"incidents"}} {
		fmt.Fprintf(stdout, "$ bootgate %s --operator %s\n", c[0], profile)
		out, err := exec.CommandContext(ctx, bootgate, c[0], "--operator", profile).CombinedOutput()
		fmt.Fprint(stdout, string(out))
		if err != nil {
			return fmt.Errorf("bootgate %s: %v", c[0], err)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d hosts ended otherwise than expected", bad)
	}
	fmt.Fprintln(stdout, "\ndemo: every host ended as expected")
	return nil
}

// reasons summarises the failed rules an agent printed.
func reasons(out string) string {
	var rules []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if r, ok := strings.CutPrefix(line, "- "); ok {
			rule, _, _ := strings.Cut(r, ":")
			if !contains(rules, rule) {
				rules = append(rules, rule)
			}
		}
	}
	if len(rules) == 0 {
		return "-"
	}
	return strings.Join(rules, ", ")
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func waitTLS(addr string, done <-chan error, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("the appliance exited: %v (see its log)", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the appliance did not listen on %s within %s", addr, limit)
}

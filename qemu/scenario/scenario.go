// Package scenario runs the end-to-end boots: the appliance's attestation
// service on this machine and QEMU test hosts (OVMF with Secure Boot, their
// own swtpm) that boot the signed agent UKI, attest, and either kexec into the
// production OS or stay quarantined. The demo and the boot tests share it.
package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bootgate/bootgate/internal/pgcluster"
	"github.com/bootgate/bootgate/qemu"
	"github.com/bootgate/bootgate/qemu/swtpm"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Build is the output of images/build.sh.
type Build struct {
	Dir string // build/
}

// Paths within a build.
func (b Build) path(p ...string) string { return filepath.Join(append([]string{b.Dir}, p...)...) }

// Missing names a build output that is absent, or returns "".
func (b Build) Missing() string {
	for _, p := range []string{"agent.efi", "agent-other.efi", "agent-altered.efi", "ovmf/code.fd", "ovmf/vars-bootgate.fd",
		"ovmf/vars-bootgate-other-db.fd", "prodos/vmlinuz", "prodos/initrd.cpio.zst", "appliance/tls/ca.pem"} {
		if _, err := os.Stat(b.path(p)); err != nil {
			return b.path(p)
		}
	}
	return ""
}

// Host is one test host and what must become of it.
type Host struct {
	Name string
	UKI  string // relative to the build dir; "" for no disk (network boot)
	Vars string // relative to the build dir; "setup-mode" for empty vars (Secure Boot off)
	Pass bool   // must reach the production OS; otherwise must be quarantined
	Why  string // what this host shows
	// NIC is the network device QEMU emulates, one of qemu.NICModels; ""
	// is virtio-net-pci. Another model makes the agent and the production
	// OS bring the network up with that NIC's real driver.
	NIC string
}

// Hosts are the demo's and the tests' hosts.
var Hosts = []Host{
	{Name: "good", UKI: "agent.efi", Vars: "ovmf/vars-bootgate.fd", Pass: true,
		Why: "bootgate's own keys, its signed agent: admitted"},
	{Name: "secureboot-off", UKI: "agent.efi", Vars: "setup-mode",
		Why: "firmware in setup mode: Secure Boot off"},
	{Name: "other-signer", UKI: "agent-other.efi", Vars: "ovmf/vars-bootgate-other-db.fd",
		Why: "the firmware trusts another vendor's db key, which signed this agent"},
	{Name: "altered", UKI: "agent-altered.efi", Vars: "ovmf/vars-bootgate.fd",
		Why: "an agent UKI with a changed command line, signed with bootgate's key"},
	{Name: "netboot", Vars: "ovmf/vars-bootgate.fd", Pass: true,
		Why: "no disk: OVMF's PXE client loads the agent from the appliance (DHCP, TFTP)"},
	{Name: "e1000e", UKI: "agent.efi", Vars: "ovmf/vars-bootgate.fd", Pass: true, NIC: "e1000e",
		Why: "an Intel 82574L NIC instead of virtio: the agent loads the e1000e driver for it and is admitted"},
}

// Outcome is what became of a host.
type Outcome struct {
	Host       Host
	Verdict    string // "pass", "fail", or "" when no verdict was seen
	Reasons    []string
	Drivers    []string // the drivers the agent loaded for the devices present
	IncidentID int64
	ReachedOS  bool
	Kexec      bool
	Seconds    float64 // from QEMU start to the production OS or to quarantine
	NetSeconds float64 // from QEMU start to the agent's first lease
	AgentMs    int64   // agent start to kexec, DHCP excluded (pass only)
	TPMCmds    int64
	// What reached the production OS: unsealed credentials and an identity.
	Credentials int
	Identity    bool
	MTLSStatus  float64 // the production OS's mTLS call to the appliance
	Renewed     bool    // the production OS renewed its identity for the same key
	MTLSError   string
	// Addresses the host had: its first (quarantine) lease and, after a
	// pass, its production lease.
	QuarantineIP, ProductionIP string
	Err                        error
	Console                    string
	CmdLine                    string
}

// OK reports whether the host ended as expected.
func (o Outcome) OK() bool {
	if o.Err != nil {
		return false
	}
	if o.Host.Pass {
		return o.Verdict == wire.VerdictPass && o.Kexec && o.ReachedOS
	}
	return o.Verdict == wire.VerdictFail && !o.Kexec && !o.ReachedOS
}

// Appliance is a running `bootgate serve`.
type Appliance struct {
	Config string
	Store  string // its store: a SQLite file or a postgres:// URL
	// Operator is an operator profile for the admin API, which listens on
	// the namespace's loopback (run the CLI with CLI).
	Operator string
	bootgate string
	net      *Network
	cmd      *exec.Cmd
	done     chan error
}

// CLI runs `bootgate ARGS --operator PROFILE` in the boot network's
// namespace, where the admin API listens, and returns its combined output.
func (a *Appliance) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := a.net.Command(a.bootgate, append(args, "--operator", a.Operator)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("bootgate %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// StartAppliance writes a configuration into dir and runs bootgate serve in
// the boot network's namespace, on the address the agent UKI names. st is
// its store, a postgres:// URL or a SQLite file; "" is bootgate.db in dir.
// reference, if not empty, is the known-good log the policy was learned
// from: incidents of hosts that never passed are compared with it.
func StartAppliance(ctx context.Context, n *Network, bootgate string, b Build, dir, st, policy, reference string, roots []byte) (*Appliance, error) {
	if st == "" {
		st = filepath.Join(dir, "bootgate.db")
	}
	if err := os.MkdirAll(filepath.Join(dir, "roots"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "roots", "manufacturer.pem"), roots, 0o644); err != nil {
		return nil, err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	cfg := fmt.Sprintf(`listen: %q
tls: {cert: %q, key: %q}
policy: %q
store: %q
ek: {roots: roots}
boot: {kernel: %q, initrd: %q, cmdline: "console=ttyS0 quiet", signer: %q}
dhcp:
  interface: br0
  server_ip: %s
  endpoint: https://%s
  ca: %q
  boot_file: bootgate/agent.efi
  quarantine: {start: 10.23.0.100, end: 10.23.0.149, prefix_len: 24, lease_time: 60s}
  production: {start: 10.23.0.150, end: 10.23.0.199, prefix_len: 24, lease_time: 1h}
gateway: {interface: br0}
bootfiles: {dir: %q, tftp: "%s:69"}
pki: {dir: %q}
metrics_listen: "127.0.0.1:9100"
admin: {listen: "127.0.0.1:9443", operators: operators}
%s`, ApplianceAddr, abs(b.path("appliance/tls/server.pem")), abs(b.path("appliance/tls/server-key.pem")), abs(policy), st,
		abs(b.path("prodos/vmlinuz")), abs(b.path("prodos/initrd.cpio.zst")), abs(b.path("keys/db.pem")),
		ApplianceIP, ApplianceAddr, abs(b.path("appliance/tls/ca.pem")), abs(filepath.Join(dir, "bootfiles")), ApplianceIP, abs(filepath.Join(dir, "pki")), referenceLine(reference))
	a := &Appliance{Config: filepath.Join(dir, "appliance.yaml"), Store: st,
		Operator: filepath.Join(dir, "operator.yaml"), bootgate: bootgate, net: n, done: make(chan error, 1)}
	if err := os.WriteFile(a.Config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if _, err := os.Stat(a.Operator); err != nil {
		if out, err := exec.CommandContext(ctx, bootgate, "operator", "add", "demo", "--config", a.Config, "--out", a.Operator).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("operator add: %v: %s", err, out)
		}
	}
	// What network-booting hosts load: the signed agent.
	if err := os.MkdirAll(filepath.Join(dir, "bootfiles", "bootgate"), 0o755); err != nil {
		return nil, err
	}
	if err := copyFile(filepath.Join(dir, "bootfiles", "bootgate", "agent.efi"), b.path("agent.efi")); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "appliance.log"))
	if err != nil {
		return nil, err
	}
	a.cmd = n.Command(bootgate, "serve", "--config", a.Config)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start appliance: %w", err)
	}
	go func() { a.done <- a.cmd.Wait(); logf.Close() }()
	// It listens inside the namespace: its log says when.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-a.done:
			return nil, fmt.Errorf("the appliance exited: %v (see %s)", err, filepath.Join(dir, "appliance.log"))
		default:
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "appliance.log")); bytes.Contains(b, []byte("serving attestation API")) {
			return a, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.Stop()
	return nil, fmt.Errorf("the appliance did not start listening on %s (see %s)", ApplianceAddr, filepath.Join(dir, "appliance.log"))
}

func referenceLine(path string) string {
	if path == "" {
		return ""
	}
	abs, _ := filepath.Abs(path)
	return fmt.Sprintf("policy_reference: %q\n", abs)
}

// Stop ends the appliance.
func (a *Appliance) Stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// Options of a run.
type Options struct {
	Build   Build
	Net     *Network
	Work    string // per-run directory; VMs get short subdirectories
	CA      *swtpm.CA
	Console io.Writer // every VM's console, prefixed with its name; nil for none
	Timeout time.Duration
	// Postgres, if not nil, holds the appliances' stores, a database for
	// each (see StoreFor); otherwise each keeps a SQLite file.
	Postgres *pgcluster.Cluster
}

// StoreFor makes the store of the appliance called name (a fresh database
// in opt.Postgres) and returns its location for StartAppliance: a
// postgres:// URL, or "" for a SQLite file in the appliance's directory.
func (opt Options) StoreFor(ctx context.Context, name string) (string, error) {
	if opt.Postgres == nil {
		return "", nil
	}
	if err := opt.Postgres.CreateDB(ctx, name); err != nil {
		return "", err
	}
	return opt.Postgres.URL(name), nil
}

// Boot boots hosts side by side and waits until each reaches the production
// OS, is quarantined, or fails.
func Boot(ctx context.Context, opt Options, hosts []Host) []Outcome {
	out := make([]Outcome, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = bootOne(ctx, opt, h)
		}()
	}
	wg.Wait()
	return out
}

func bootOne(ctx context.Context, opt Options, h Host) Outcome {
	o := Outcome{Host: h}
	esp := ""
	if h.UKI != "" {
		esp = filepath.Join(opt.Work, h.Name, "esp")
		if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
			o.Err = err
			return o
		}
		if err := copyFile(filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI"), opt.Build.path(h.UKI)); err != nil {
			o.Err = err
			return o
		}
	}
	vars := opt.Build.path(h.Vars)
	if h.Vars == "setup-mode" {
		vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	}
	timeout := opt.Timeout
	if timeout == 0 {
		timeout = 4 * time.Minute
	}
	nic, err := opt.Net.AddTap(ctx)
	if err != nil {
		o.Err = err
		return o
	}
	if h.NIC != "" {
		nic += ",model=" + h.NIC
	}
	vm, err := qemu.Start(ctx, qemu.Config{
		Name: h.Name, Dir: filepath.Join(opt.Work, h.Name, "vm"), OVMFCode: opt.Build.path("ovmf/code.fd"), OVMFVars: vars,
		ESP: esp, TPM: opt.CA, Net: nic, Timeout: timeout, Console: opt.Console,
	})
	if err != nil {
		o.Err = err
		return o
	}
	defer vm.Stop()
	o.Console, o.CmdLine = vm.ConsoleLog(), vm.CommandLine()
	var netMs int64
	for {
		e, err := vm.WaitFor(ctx, func(qemu.Event) bool { return true })
		if err != nil {
			o.Err = err
			return o
		}
		switch wire.Event(e.Name) {
		case wire.EventModulesLoaded:
			if ds, ok := e.Fields["drivers"].([]any); ok {
				for _, d := range ds {
					o.Drivers = append(o.Drivers, fmt.Sprint(d))
				}
			}
		case wire.EventNetworkUp:
			netMs = e.Int("dhcp_ms")
			o.NetSeconds = e.Time.Seconds()
			o.QuarantineIP = e.String("address")
		case wire.EventNetworkProduction:
			o.ProductionIP = e.String("address")
		case wire.EventAttested:
			o.Verdict = e.String("verdict")
			o.IncidentID = e.Int("incident_id")
			o.TPMCmds = e.Int("tpm_commands")
			if rs, ok := e.Fields["reasons"].([]any); ok {
				for _, r := range rs {
					if m, ok := r.(map[string]any); ok {
						o.Reasons = append(o.Reasons, fmt.Sprint(m["rule"]))
					}
				}
			}
		case wire.EventQuarantined:
			o.Seconds = e.Time.Seconds()
			// Give a wrongly admitted host a moment to show a kexec; a
			// quarantined agent retries with backoff instead.
			if h.Pass {
				o.Err = errors.New("quarantined, but this host must be admitted")
			}
			return o
		case wire.EventKexec:
			o.Kexec = true
			o.AgentMs = e.Int("t_ms") - netMs
		case wire.EventOSRunning:
			o.ReachedOS = true
			if c, ok := e.Fields["credentials"].(map[string]any); ok {
				o.Credentials = len(c)
			}
			_, o.Identity = e.Fields["identity"].(map[string]any)
			if call, ok := e.Fields["appliance_call"].(map[string]any); ok {
				switch v := call["status"].(type) {
				case float64:
					o.MTLSStatus = v
				case json.Number:
					o.MTLSStatus, _ = v.Float64()
				}
				o.Renewed, _ = call["renewed"].(bool)
				if msg, ok := call["renew_error"].(string); ok {
					o.MTLSError = "renew: " + msg
				}
			}
			if msg := e.String("appliance_call_error"); msg != "" {
				o.MTLSError = msg
			}
			o.Seconds = e.Time.Seconds()
			_ = vm.Wait()
			return o
		case wire.EventAttestError, wire.EventBootError, wire.EventConfigError:
			o.Err = fmt.Errorf("%s: %s", e.Name, e.String("error"))
			return o
		case qemu.ExitEvent:
			o.Err = fmt.Errorf("the VM exited before an outcome: %s", e.String("reason"))
			return o
		}
	}
}

// EventLog returns the raw event log of an attestation the appliance stored
// in st, a SQLite file or a postgres:// URL (Appliance.Store).
func EventLog(ctx context.Context, st string, id int64) ([]byte, error) {
	db, err := store.Open(ctx, st)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	a, err := db.Attestation(ctx, id)
	if err != nil {
		return nil, err
	}
	return a.Evidence.EventLog, nil
}

func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// LearnPolicy derives the policy from a reference boot of the good host: the
// appliance runs with a bootstrap policy the host cannot pass, stores the
// host's verified event log with the failed attestation, and
// `bootgate policy learn` turns that log into the policy.
func LearnPolicy(ctx context.Context, opt Options, bootgate, bootstrapPolicy string, roots []byte) (policy []byte, reference string, err error) {
	dir := filepath.Join(opt.Work, "reference")
	st, err := opt.StoreFor(ctx, "reference")
	if err != nil {
		return nil, "", err
	}
	a, err := StartAppliance(ctx, opt.Net, bootgate, opt.Build, dir, st, bootstrapPolicy, "", roots)
	if err != nil {
		return nil, "", err
	}
	ref := Hosts[0]
	ref.Pass = false // the bootstrap policy refuses it
	ropt := opt
	ropt.Work = dir
	o := bootOne(ctx, ropt, ref)
	a.Stop()
	if o.Err != nil || o.Verdict != wire.VerdictFail {
		return nil, "", fmt.Errorf("reference boot: verdict %q: %v (console: %s)", o.Verdict, o.Err, o.Console)
	}
	db, err := store.Open(ctx, a.Store)
	if err != nil {
		return nil, "", err
	}
	hosts, err := db.Hosts(ctx)
	db.Close()
	if err != nil || len(hosts) != 1 {
		return nil, "", fmt.Errorf("reference boot: %d hosts recorded: %v", len(hosts), err)
	}
	log, err := EventLog(ctx, a.Store, hosts[0].LastAttestationID)
	if err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(dir, "reference-eventlog.bin")
	if err := os.WriteFile(logPath, log, 0o644); err != nil {
		return nil, "", err
	}
	// The test firmware's variable store has bootgate's PK, KEK and db and
	// no dbx: the empty dbx is allowed, and learn says so.
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bootgate, "policy", "learn", "--allow-empty-keys", "--name", "bootgate-qemu-ovmf", "--eventlog", logPath)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("policy learn: %w: %s", err, stderr.Bytes())
	}
	if err := os.WriteFile(filepath.Join(dir, "learn.stderr"), stderr.Bytes(), 0o644); err != nil {
		return nil, "", err
	}
	return out, logPath, nil
}

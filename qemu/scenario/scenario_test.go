package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/qemu/swtpm"
	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/store"
)

// TestBoots boots every scenario host under OVMF with Secure Boot and its own
// swtpm: the good host must reach the production OS; each tampered host must
// be quarantined with the failed rules that tell why, and never kexec.
func TestBoots(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	b := Build{Dir: filepath.Join(root, "build")}
	if m := b.Missing(); m != "" {
		t.Skipf("boot images are not built (%s is missing): run make images", m)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed")
	}
	if err := swtpm.Available(); err != nil {
		t.Skip(err)
	}
	if err := NetworkAvailable(); err != nil {
		t.Skipf("the boot network cannot be made: %v", err)
	}
	work, err := os.MkdirTemp("", "bgs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	bin := filepath.Join(work, "bin")
	if out, err := exec.Command("go", "build", "-o", bin+"/", filepath.Join(root, "verifier/cmd/bootgate")).CombinedOutput(); err != nil {
		t.Fatalf("build bootgate: %v\n%s", err, out)
	}
	bootgate := filepath.Join(bin, "bootgate")
	ca, err := swtpm.NewCA(filepath.Join(work, "mfr"))
	if err != nil {
		t.Fatal(err)
	}
	// The manufacturer's certificates exist once it has made a TPM.
	if err := ca.Manufacture(context.Background(), filepath.Join(work, "first-tpm")); err != nil {
		t.Fatal(err)
	}
	roots, err := ca.Roots()
	if err != nil {
		t.Fatal(err)
	}
	// Bounds against a hang, not measures: six TCG guests on two shared
	// cores take from one to five minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 16*time.Minute)
	defer cancel()
	netw, err := NewNetwork(ctx, filepath.Join(work, "net"))
	if err != nil {
		t.Fatal(err)
	}
	defer netw.Close()
	opt := Options{Build: b, Net: netw, Work: work, CA: ca, Timeout: 8 * time.Minute}

	start := time.Now()
	policy, reference, err := LearnPolicy(ctx, opt, bootgate, filepath.Join(root, "verifier/policy/testdata/bootstrap.yaml"), roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reference boot and policy learned in %.1f s", time.Since(start).Seconds())
	policyPath := filepath.Join(work, "policy.yaml")
	if err := os.WriteFile(policyPath, policy, 0o644); err != nil {
		t.Fatal(err)
	}
	// The appliance keeps the embedded default store, SQLite, here; the
	// demo boots the same hosts with it on PostgreSQL, so both stores are
	// booted end to end.
	a, err := StartAppliance(ctx, netw, bootgate, b, filepath.Join(work, "appliance"), "", policyPath, reference, roots)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()

	want := map[string][]string{
		"secureboot-off": {"secure_boot.enabled"},
		"other-signer":   {"secure_boot.db", "code_integrity.signer"},
		"altered":        {"code_integrity.boot_app"},
	}
	// BOOTGATE_HOSTS=good,altered boots only those hosts (to time one alone).
	hosts := Hosts
	if names := os.Getenv("BOOTGATE_HOSTS"); names != "" {
		hosts = slices.DeleteFunc(slices.Clone(Hosts), func(h Host) bool { return !slices.Contains(strings.Split(names, ","), h.Name) })
	}
	start = time.Now()
	outcomes := Boot(ctx, opt, hosts)
	for _, o := range outcomes {
		t.Logf("%-15s verdict=%-4s os=%v kexec=%v %.1fs network-up=%.1fs agent-to-kexec=%dms tpm-commands=%d reasons=%v incident=%d drivers=%v",
			o.Host.Name, o.Verdict, o.ReachedOS, o.Kexec, o.Seconds, o.NetSeconds, o.AgentMs, o.TPMCmds, o.Reasons, o.IncidentID, o.Drivers)
		if !o.OK() {
			t.Errorf("%s (%s) ended otherwise than expected: %+v\nreproduce: %s\nconsole: %s", o.Host.Name, o.Host.Why, o, o.CmdLine, o.Console)
			// The work directory goes with the test: keep the console's end.
			if b, err := os.ReadFile(o.Console); err == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				t.Logf("%s: the console's last lines:\n%s", o.Host.Name, strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
			continue
		}
		// The agent loads the driver of the NIC QEMU emulates and no other
		// NIC's (virtio_pci drives the boot disk too).
		nicDriver, other := "virtio_net", "e1000e"
		if o.Host.NIC == "e1000e" {
			nicDriver, other = other, nicDriver
		}
		if !slices.Contains(o.Drivers, nicDriver) || slices.Contains(o.Drivers, other) {
			t.Errorf("%s: the agent loaded the drivers %v, want %s and not %s", o.Host.Name, o.Drivers, nicDriver, other)
		}
		for _, r := range want[o.Host.Name] {
			if !slices.Contains(o.Reasons, r) {
				t.Errorf("%s: reasons %v lack %s", o.Host.Name, o.Reasons, r)
			}
		}
		if o.Host.Pass && (o.Credentials == 0 || !o.Identity || o.MTLSStatus != 200 || !o.Renewed) {
			t.Errorf("%s: the production OS got %d credentials, identity %v; its mTLS call answered %v, renewed %v %s",
				o.Host.Name, o.Credentials, o.Identity, o.MTLSStatus, o.Renewed, o.MTLSError)
		}
		if o.Host.Pass && (!inRange(o.QuarantineIP, 100, 149) || !inRange(o.ProductionIP, 150, 199)) {
			t.Errorf("%s: leases %q then %q, want quarantine .100-.149 then production .150-.199", o.Host.Name, o.QuarantineIP, o.ProductionIP)
		}
		if !o.Host.Pass && o.IncidentID == 0 {
			t.Errorf("%s: quarantined without an incident", o.Host.Name)
		}
	}
	t.Logf("%d hosts booted side by side in %.1f s", len(hosts), time.Since(start).Seconds())
	checkOperatorView(t, ctx, a, outcomes)
}

// checkOperatorView looks at the boots as an operator does, through the
// admin API over mTLS: admitted hosts hold production leases, and each
// quarantined host's incident exports a complete evidence bundle.
func checkOperatorView(t *testing.T, ctx context.Context, a *Appliance, outcomes []Outcome) {
	out, err := a.CLI(ctx, "hosts", "--json", "--all")
	if err != nil {
		t.Fatal(err)
	}
	var hosts admin.HostPage
	if err := json.Unmarshal(out, &hosts); err != nil {
		t.Fatalf("hosts --json: %v\n%s", err, out)
	}
	admitted := 0
	for _, h := range hosts.Hosts {
		if h.State == store.HostAdmitted && h.Lease != nil && h.Lease.Pool == "production" {
			admitted++
		}
	}
	passing := 0
	for _, o := range outcomes {
		if o.Host.Pass && o.OK() {
			passing++
		}
	}
	if admitted < passing {
		t.Errorf("the admin API shows %d admitted hosts with production leases, %d hosts passed:\n%s", admitted, passing, out)
	}
	for _, o := range outcomes {
		if o.Host.Pass || o.IncidentID == 0 {
			continue
		}
		file := filepath.Join(t.TempDir(), "bundle.json")
		if _, err := a.CLI(ctx, "incident", "export", fmt.Sprint(o.IncidentID), file); err != nil {
			t.Errorf("%s: %v", o.Host.Name, err)
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var bundle admin.Bundle
		if err := json.Unmarshal(b, &bundle); err != nil {
			t.Fatalf("%s: bundle: %v", o.Host.Name, err)
		}
		if len(bundle.Attestations) == 0 {
			t.Errorf("%s: bundle without attestations", o.Host.Name)
			continue
		}
		ev := bundle.Attestations[len(bundle.Attestations)-1].Evidence
		if len(ev.EventLog) == 0 || len(ev.Quote) == 0 || len(ev.PCRs) == 0 || len(ev.EKCert) == 0 || bundle.Policy == nil ||
			len(bundle.Incident.Reasons) == 0 || bundle.Diff.Against != "reference" || len(bundle.Diff.Lines) == 0 {
			t.Errorf("%s: incomplete bundle: log %d bytes, quote %d, %d PCRs, EK cert %d bytes, policy %v, reasons %v, diff %+v",
				o.Host.Name, len(ev.EventLog), len(ev.Quote), len(ev.PCRs), len(ev.EKCert), bundle.Policy != nil, bundle.Incident.Reasons, bundle.Diff)
		}
	}
}

// inRange reports whether ip is 10.23.0.lo to 10.23.0.hi.
func inRange(ip string, lo, hi byte) bool {
	v := net.ParseIP(ip).To4()
	return v != nil && v[0] == 10 && v[1] == 23 && v[2] == 0 && v[3] >= lo && v[3] <= hi
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bootgate/bootgate/qemu/scenario"
	"github.com/bootgate/bootgate/qemu/swtpm"
)

// runVMs boots the scenario hosts side by side against the appliance and
// prints who got in. The policy is learned from a reference boot of the good
// host, which runs the same build outputs.
func runVMs(ctx context.Context, stdout io.Writer, work, bin, buildDir string, choice storeChoice) error {
	step := func(format string, a ...any) { fmt.Fprintf(stdout, "==> "+format+"\n", a...) }
	b := scenario.Build{Dir: buildDir}
	if m := b.Missing(); m != "" {
		return fmt.Errorf("%s is missing: build the images first (make images)", m)
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	// VM directories hold unix sockets, whose paths must be short.
	short, err := os.MkdirTemp("", "bgdemo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(short)
	bootgate, _ := filepath.Abs(filepath.Join(bin, "bootgate"))
	console, err := os.Create(filepath.Join(work, "consoles.log"))
	if err != nil {
		return err
	}
	defer console.Close()

	step("manufacturing software TPMs with EK certificates from a test manufacturer CA")
	ca, err := swtpm.NewCA(filepath.Join(work, "tpm-manufacturer"))
	if err != nil {
		return err
	}
	if err := ca.Manufacture(ctx, filepath.Join(short, "first-tpm")); err != nil {
		return err
	}
	roots, err := ca.Roots()
	if err != nil {
		return err
	}
	step("creating the boot network: namespace, bridge %s, DHCP server, a tap per host", scenario.ApplianceIP)
	netw, err := scenario.NewNetwork(ctx, filepath.Join(work, "net"))
	if err != nil {
		return err
	}
	defer netw.Close()
	ds, err := startStore(stdout, choice, filepath.Join(work, "postgres.log"))
	if err != nil {
		return err
	}
	defer ds.stop(stdout)
	if ds.pg != nil {
		step("the appliances keep their state in PostgreSQL: a throwaway cluster, a database each (server log: %s)", ds.pg.Log())
	}
	opt := scenario.Options{Build: b, Net: netw, Work: short, CA: ca, Console: console, Timeout: 5 * time.Minute, Postgres: ds.pg}

	step("reference boot of the good host to learn the policy from its event log (about 30 s; consoles: %s)", console.Name())
	bootstrap := filepath.Join(work, "bootstrap-policy.yaml")
	out, err := exec.CommandContext(ctx, bootgate, "policy", "learn", "--name", "bootstrap", "--eventlog", "testdata/eventlogs/rhel8-uefi.bin").Output()
	if err != nil {
		return fmt.Errorf("bootstrap policy: %w", err)
	}
	if err := os.WriteFile(bootstrap, out, 0o644); err != nil {
		return err
	}
	policy, reference, err := scenario.LearnPolicy(ctx, opt, bootgate, bootstrap, roots)
	if err != nil {
		return err
	}
	policyPath := filepath.Join(work, "policy.yaml")
	if err := os.WriteFile(policyPath, policy, 0o644); err != nil {
		return err
	}

	step("starting the appliance in the boot network: bootgate serve on %s (policy %s)", scenario.ApplianceAddr, policyPath)
	st, err := opt.StoreFor(ctx, "appliance")
	if err != nil {
		return err
	}
	a, err := scenario.StartAppliance(ctx, netw, bootgate, b, filepath.Join(work, "appliance"), st, policyPath, reference, roots)
	if err != nil {
		return err
	}
	defer a.Stop()

	step("booting %d hosts side by side under OVMF with Secure Boot (about a minute on 2 cores)", len(scenario.Hosts))
	for _, h := range scenario.Hosts {
		fmt.Fprintf(stdout, "    %-15s %s\n", h.Name, h.Why)
	}
	outcomes := scenario.Boot(ctx, opt, scenario.Hosts)

	fmt.Fprintln(stdout, "\nWho got in:")
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tEXPECTED\tVERDICT\tSECONDS\tREASONS")
	bad := 0
	for _, o := range outcomes {
		verdict := "QUARANTINED"
		if o.ReachedOS {
			verdict = "PRODUCTION OS"
		}
		reasons := strings.Join(dedupe(o.Reasons), ", ")
		if o.Err != nil {
			verdict, reasons = "ERROR", o.Err.Error()
		}
		if reasons == "" {
			reasons = "-"
		}
		want := "quarantine"
		if o.Host.Pass {
			want = "admit"
		}
		mark := ""
		if !o.OK() {
			mark, bad = "  <-- UNEXPECTED (console: "+o.Console+")", bad+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s%s\n", o.Host.Name, want, verdict, o.Seconds, reasons, mark)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nThe appliance's store: %s\n", ds.describe(a.Store))
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "The operators' view, through the admin API (mTLS with an operator certificate):")
	cmds := [][]string{{"status"}, {"hosts"}, {"incidents"}}
	for _, o := range outcomes {
		if !o.Host.Pass && o.IncidentID > 0 {
			// One incident as an investigator sees it: the failed rules
			// with their events and the departures from the policy.
			cmds = append(cmds, []string{"incident", "show", fmt.Sprint(o.IncidentID)})
			break
		}
	}
	for _, c := range cmds {
		fmt.Fprintf(stdout, "$ bootgate %s\n", strings.Join(c, " "))
		out, err := a.CLI(ctx, c...)
		fmt.Fprint(stdout, string(out))
		if err != nil {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d hosts ended otherwise than expected", bad)
	}
	fmt.Fprintln(stdout, "\ndemo: every host ended as expected")
	return nil
}

func dedupe(s []string) []string {
	var out []string
	for _, x := range s {
		if !contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

package policy

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
)

func loadState(t *testing.T, path string) *eventlog.BootState {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bank, err := eventlog.Replay(raw)
	if err != nil {
		t.Fatalf("replay %s: %v", path, err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	return st
}

// notReference are the real logs (and variants) that learn refuses, with
// what the refusal names: they record no whole boot, or a debugger.
var notReference = map[string]string{
	// Only the first events of a boot (an H-CRTM and firmware blobs).
	"host-gmes.bin":             "separator",
	"t480s-header-only-69B.bin": "separator",
	// Only a StartupLocality event.
	"edge-goatt-short_no_action.bin": "separator",
	"t14-systemd-cmdline-kgdboc.bin": RuleCmdline,
}

// unreadable are the files of testdata that are no event log.
var unreadable = map[string]bool{"zeros-32B.bin": true}

// realLogs are every log of testdata/eventlogs and testdata/interop.
func realLogs(t *testing.T) []string {
	a, _ := filepath.Glob("../../testdata/eventlogs/*.bin")
	b, _ := filepath.Glob("../../testdata/interop/*.bin")
	if len(a) < 10 || len(b) < 10 {
		t.Fatalf("expected the recorded logs, found %d and %d", len(a), len(b))
	}
	return append(a, b...)
}

// TestLearnThenCheckRealLogs learns a policy from every recorded firmware log,
// round-trips it through YAML, and checks that the same log passes it and that
// every other machine's log fails it with reasons. A SHA-1 log learns only
// with AllowSHA1, which the refusal names.
func TestLearnThenCheckRealLogs(t *testing.T) {
	states := map[string]*eventlog.BootState{}
	policies := map[string]*Policy{}
	for _, p := range realLogs(t) {
		name := filepath.Base(p)
		if unreadable[name] {
			continue
		}
		st := loadState(t, p)
		states[name] = st
		learned, notes, err := Learn(name, st, LearnOptions{})
		if errors.Is(err, ErrNotReference) {
			if st.Hash == crypto.SHA1 && !strings.Contains(err.Error(), "--pcr-bank sha1") {
				t.Errorf("%s: a SHA-1 log's refusal does not name --pcr-bank sha1: %v", name, err)
			}
			// Only with an option that names the allowance, and then every
			// allowance is stated.
			learned, notes, err = Learn(name, st, LearnOptions{AllowSecureBootOff: true, AllowAnyBootApp: true, AllowEmptyKeys: true, AllowUnverifiedBootApps: true, AllowDebug: true, AllowSHA1: true})
			if err == nil && len(notes) == 0 {
				t.Errorf("%s: refused without options, learned with them, and stated nothing", name)
			}
		}
		if err == nil {
			wantStated(t, name, learned, notes)
		}
		if why, ok := notReference[name]; ok {
			if !errors.Is(err, ErrNotReference) || !strings.Contains(err.Error(), why) {
				t.Errorf("%s: want a refusal naming %q, got %v", name, why, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := learned.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		pol, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: learned policy does not parse: %v\n%s", name, err, b)
		}
		if pol.Bank() != st.Hash {
			t.Errorf("%s: replayed in %v, learned a policy of %v", name, st.Hash, pol.Bank())
		}
		policies[name] = pol
		if f := pol.Evaluate(st); len(f) != 0 {
			t.Errorf("%s: fails its own learned policy: %v", name, f)
		}
	}
	for pname, pol := range policies {
		for sname, st := range states {
			if pname == sname || states[pname].LogSHA256 == st.LogSHA256 {
				continue
			}
			if st.PCRs[0] == states[pname].PCRs[0] && len(st.PCRs[0]) > 0 && sameBootApps(st, states[pname]) {
				continue // same firmware and boot chain: may legitimately pass
			}
			f := pol.Evaluate(st)
			if len(f) == 0 {
				t.Errorf("%s passes the policy learned from %s", sname, pname)
			}
			// Another bank: one failure, of that rule.
			if st.Hash != pol.Bank() && (len(f) != 1 || f[0].Rule != RulePCRBank) {
				t.Errorf("%s (%v) against %s's %v policy: want one %s failure, got %v", sname, st.Hash, pname, pol.Bank(), RulePCRBank, f)
			}
			for _, x := range f {
				if x.Rule == "" || x.Detail == "" {
					t.Errorf("unexplained failure %+v", x)
				}
			}
		}
	}
}

// wantStated checks that every allowance in a learned policy is among the
// notes Learn gave the operator.
func wantStated(t *testing.T, name string, p *Policy, notes []string) {
	t.Helper()
	all := strings.Join(notes, "\n")
	for field, set := range map[string]bool{
		"secure_boot.allow_disabled":          p.SecureBoot.AllowDisabled,
		"secure_boot.pk.allow_any":            p.SecureBoot.PK.AllowAny,
		"secure_boot.kek.allow_any":           p.SecureBoot.KEK.AllowAny,
		"secure_boot.db.allow_any":            p.SecureBoot.DB.AllowAny,
		"debug.allow_uefi_debug_mode":         p.Debug.AllowUEFIDebugMode,
		"debug.allow_dma_protection_disabled": p.Debug.AllowDMAProtectionDisabled,
		"debug.allow_unverified_boot_apps":    p.Debug.AllowUnverifiedBootApps,
		"code_integrity.allow_any_boot_app":   p.CodeIntegrity.AllowAnyBootApp,
		"code_integrity.allow_any_signer":     p.CodeIntegrity.AllowAnySigner,
		"log.pinned_events":                   len(p.Log.PinnedEvents) > 0,
		"pcr_bank: sha1":                      p.PCRBank == BankSHA1,
	} {
		if set && !strings.Contains(all, field) {
			t.Errorf("%s: learned %s without saying so (notes: %q)", name, field, notes)
		}
	}
	for _, q := range p.Log.Quirks {
		if !strings.Contains(all, "log.quirks: "+q) {
			t.Errorf("%s: learned quirk %s without saying so (notes: %q)", name, q, notes)
		}
	}
	if p.Firmware.AllowAny {
		t.Errorf("%s: learned firmware.allow_any", name)
	}
}

func sameBootApps(a, b *eventlog.BootState) bool {
	if len(a.BootApps) != len(b.BootApps) {
		return false
	}
	for i := range a.BootApps {
		if a.BootApps[i].SHA256 != b.BootApps[i].SHA256 {
			return false
		}
	}
	return true
}

func TestSecureBootOffFailsWithEvent(t *testing.T) {
	good := loadState(t, "../../testdata/eventlogs/rhel8-uefi.bin")
	off := loadState(t, "../../testdata/eventlogs/ubuntu-2104-no-secure-boot.bin")
	pol, _, err := Learn("rhel8", good, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range pol.Evaluate(off) {
		if f.Rule == RuleSecureBootEnabled {
			found = true
			if f.Event != off.SecureBoot.Event || f.Event == 0 {
				t.Errorf("secure boot failure names event %d, want %d", f.Event, off.SecureBoot.Event)
			}
		}
	}
	if !found {
		t.Fatal("Secure Boot off did not fail secure_boot.enabled")
	}
}

func TestDebugControls(t *testing.T) {
	base := loadState(t, "../../testdata/eventlogs/rhel8-uefi.bin")
	pol, _, err := Learn("rhel8", base, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(st *eventlog.BootState)
		rule   string
	}{
		{"uefi debug mode", func(st *eventlog.BootState) {
			st.Actions = append(st.Actions, eventlog.Action{Event: 99, PCR: 7, Text: eventlog.ActionDebugMode})
		}, RuleDebugMode},
		{"dma protection disabled", func(st *eventlog.BootState) {
			st.Actions = append(st.Actions, eventlog.Action{Event: 98, PCR: 7, Text: eventlog.ActionDMADisabled})
		}, RuleDMAProtection},
		{"no db authority", func(st *eventlog.BootState) { st.Authorities = nil }, RuleUnverifiedBootApps},
		{"kgdb on the command line", func(st *eventlog.BootState) {
			st.Cmdlines = append(st.Cmdlines, eventlog.Cmdline{Event: 97, Text: "ro quiet kgdboc=ttyS0,115200"})
		}, RuleCmdline},
		{"unknown boot app", func(st *eventlog.BootState) {
			st.BootApps = append(st.BootApps, eventlog.Image{Event: 96, SHA256: strings.Repeat("ab", 32)})
		}, RuleBootApp},
		{"other firmware", func(st *eventlog.BootState) {
			st.PCRs = map[int]string{0: strings.Repeat("00", 32)}
		}, RuleFirmware},
		{"structural anomaly", func(st *eventlog.BootState) {
			st.Anomalies = append(st.Anomalies, eventlog.Anomaly{Event: 5, Detail: "x"})
		}, RuleLogStructure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := *base
			st.Actions = append([]eventlog.Action(nil), base.Actions...)
			st.Cmdlines = append([]eventlog.Cmdline(nil), base.Cmdlines...)
			st.BootApps = append([]eventlog.Image(nil), base.BootApps...)
			tc.mutate(&st)
			f := pol.Evaluate(&st)
			if len(f) == 0 || !hasRule(f, tc.rule) {
				t.Fatalf("want a %s failure, got %v", tc.rule, f)
			}
		})
	}
}

func hasRule(fs []Failure, rule string) bool {
	for _, f := range fs {
		if f.Rule == rule {
			return true
		}
	}
	return false
}

func TestParseRefusesBadPolicies(t *testing.T) {
	good := `name: x
secure_boot:
  pk: {allow_any: true}
  kek: {allow_any: true}
  db: {allow_any: true}
code_integrity:
  allow_any_boot_app: true
  allow_any_signer: true
firmware:
  allow_any: true
`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good policy refused: %v", err)
	}
	sha1 := "pcr_bank: sha1\n" + strings.Replace(good, "  allow_any_boot_app: true\n", "  boot_apps: [{sha1: "+strings.Repeat("ab", 20)+"}]\n", 1) +
		"log:\n  quirks: [variable-value-only]\n"
	if p, err := Parse([]byte(sha1)); err != nil || p.Bank() != crypto.SHA1 {
		t.Fatalf("good SHA-1 policy: %v", err)
	}
	for _, tc := range []struct{ name, yaml string }{
		{"empty", ""},
		{"not yaml", "{{{"},
		{"unknown field", good + "surprise: true\n"},
		{"typo in nested field", strings.Replace(good, "allow_any_boot_app", "allow_any_bootapp", 1)},
		{"no name", strings.Replace(good, "name: x", "name: ''", 1)},
		{"unconstrained pk", strings.Replace(good, "pk: {allow_any: true}", "pk: {}", 1)},
		{"bad digest", strings.Replace(good, "pk: {allow_any: true}", "pk: {digests: [xyz]}", 1)},
		{"upper-case digest", strings.Replace(good, "pk: {allow_any: true}", "pk: {digests: ["+strings.Repeat("AB", 32)+"]}", 1)},
		{"allow_any and digests", strings.Replace(good, "pk: {allow_any: true}", "pk: {allow_any: true, digests: ["+strings.Repeat("ab", 32)+"]}", 1)},
		{"no boot app rule", strings.Replace(good, "  allow_any_boot_app: true\n", "", 1)},
		{"no firmware rule", strings.Replace(good, "firmware:\n  allow_any: true\n", "", 1)},
		{"wrong type", strings.Replace(good, "allow_any_signer: true", "allow_any_signer: yes-please", 1)},
		{"two documents", good + "---\n" + good},
		{"unknown bank", good + "pcr_bank: sha384\n"},
		{"sha1 boot app in a sha256 policy", strings.Replace(good, "  allow_any_boot_app: true\n", "  boot_apps: [{sha1: "+strings.Repeat("ab", 20)+"}]\n", 1)},
		{"sha256 boot app in a sha1 policy", "pcr_bank: sha1\n" + strings.Replace(good, "  allow_any_boot_app: true\n", "  boot_apps: [{sha256: "+strings.Repeat("ab", 32)+"}]\n", 1)},
		{"both digests of a boot app", "pcr_bank: sha1\n" + strings.Replace(good, "  allow_any_boot_app: true\n", "  boot_apps: [{sha1: "+strings.Repeat("ab", 20)+", sha256: "+strings.Repeat("ab", 32)+"}]\n", 1)},
		{"sha256 pcr0 in a sha1 policy", "pcr_bank: sha1\n" + strings.Replace(good, "firmware:\n  allow_any: true\n", "firmware:\n  pcr0: ["+strings.Repeat("ab", 32)+"]\n", 1)},
		{"sha1 pin in a sha256 policy", good + "log:\n  pinned_events: [{pcr: 7, type: EV_EFI_ACTION, digest: " + strings.Repeat("ab", 20) + "}]\n"},
		{"unknown quirk", good + "log:\n  quirks: [whatever-firmware-does]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.yaml))
			if err == nil || p != nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

// A firmware quirk passes only a policy that names it: the ThinkPad's TPM
// 1.2 log against its own policy without log.quirks fails log.quirk for
// each variable measured by value only, and says nothing false of them.
func TestQuirkNeedsThePolicy(t *testing.T) {
	st := loadState(t, "../../testdata/interop/sha1-goatt-linux_tpm12-lenovo-N1FET43W.bin")
	p, _, err := Learn("thinkpad", st, LearnOptions{AllowSHA1: true, AllowSecureBootOff: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Log.Quirks) != 1 || p.Log.Quirks[0] != eventlog.QuirkVariableValueOnly {
		t.Fatalf("learned quirks %v", p.Log.Quirks)
	}
	p.Log.Quirks = nil
	fs := p.Evaluate(st)
	var events []int
	for _, f := range fs {
		if f.Rule != RuleQuirk || strings.Contains(f.Detail, "never") {
			t.Errorf("unexpected failure %v", f)
		}
		events = append(events, f.Event)
	}
	if !slices.Equal(events, []int{6, 7, 8, 9, 10}) {
		t.Errorf("log.quirk failures for events %v, want 6–10", events)
	}
}

// A Secure Boot variable whose event's digest does not cover its data is
// not reported unmeasured: the failure names its event and says that what
// it measured cannot be told.
func TestUnverifiableVariableIsNotCalledUnmeasured(t *testing.T) {
	l, pol := rhel8(t)
	raw := l.Bytes()
	sb := l.Index(func(e eventlogtest.Event) bool { return e.PCR == 7 && e.Type == 0x80000001 })
	sent := l.Clone()
	sent.Events[sb].Data[len(sent.Events[sb].Data)-1] ^= 1 // the SecureBoot value, digest kept
	st, err := judge(raw, sent.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range pol.Evaluate(st) {
		if f.Rule == RuleSecureBootEnabled {
			found = true
			if f.Event != sb+1 || !strings.Contains(f.Detail, "cannot be told") {
				t.Errorf("failure %v, want event %d and what cannot be told", f, sb+1)
			}
		}
	}
	if !found {
		t.Fatal("no secure_boot.enabled failure")
	}
}

package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

const interop = "../../testdata/interop/"

// TestInteropLearn holds policy learn to the answers of
// testdata/interop/README.md for real logs that used to learn into
// policies that check nothing: each refusal names what a user can do.
func TestInteropLearn(t *testing.T) {
	for _, tc := range []struct {
		log   string
		flags []string
		code  int
		// stderr must hold each.
		stderr []string
	}{
		{"t480s-header-only-69B.bin", nil, ExitPolicyFail, []string{"not a reference log", "no separator"}},
		{"tpm2tools-sd-boot-fedora37.bin", nil, ExitPolicyFail, []string{"--allow-any-boot-app", "--allow-empty-keys"}},
		{"tpm2tools-sd-boot-fedora37.bin", []string{"--allow-any-boot-app", "--allow-empty-keys", "--allow-secure-boot-off"}, 0,
			[]string{"allowed: code_integrity.allow_any_boot_app", "allowed: secure_boot.pk.allow_any"}},
		{"fwupd-v2-uefi-debug-mode.bin", nil, ExitPolicyFail, []string{`"UEFI Debug Mode" (--allow-debug)`}},
		{"fwupd-v2-uefi-debug-mode.bin", []string{"--allow-debug"}, 0,
			[]string{"allowed: debug.allow_uefi_debug_mode", "allowed: log.quirks: shim-authority-short-digest (event 42"}},
		{"lenovo-t14-amd-R1BET56W.bin", nil, ExitPolicyFail, []string{"--allow-secure-boot-off"}},
		{"lenovo-t14-amd-R1BET56W.bin", []string{"--allow-secure-boot-off"}, 0, []string{"allowed: secure_boot.allow_disabled"}},
		{"lenovo-t480s-N22ET68W-sb.bin", nil, ExitPolicyFail, []string{"dbx is empty", "--allow-empty-keys"}},
		{"lenovo-t480s-N22ET68W-sb.bin", []string{"--allow-empty-keys"}, 0, []string{"dbx_must_contain is empty"}},
		// SHA-1 logs: refused without the opt-in, which the refusal names.
		{"sha1-tpm2tools-uefi-sha1-nuc.bin", nil, ExitPolicyFail, []string{"--pcr-bank sha1"}},
		{"sha1-tpm2tools-uefi-sha1-nuc.bin", []string{"--pcr-bank", "sha1", "--allow-secure-boot-off", "--allow-empty-keys"}, 0,
			[]string{"allowed: pcr_bank: sha1", "TPM 1.2"}},
		// Windows on a 2018 cloud vTPM: no separators in PCRs 0–6, Windows'
		// own PCR 12 events pinned.
		{"sha1-goatt-windows-gce-shielded-vm.bin", []string{"--pcr-bank", "sha1"}, 0,
			[]string{"allowed: log.quirks: separator-pcr7-only (no separator in PCRs 0–6 (the log has events for PCRs [0 4 5] of them)", "allowed: log.pinned_events: PCR 12"}},
		// The ThinkPad's Secure Boot variables, measured by value only.
		{"sha1-goatt-linux_tpm12-lenovo-N1FET43W.bin", []string{"--pcr-bank", "sha1", "--allow-secure-boot-off"}, 0,
			[]string{"allowed: log.quirks: variable-value-only (event 6: variable SecureBoot", "allowed: secure_boot.allow_disabled"}},
		// A reference with a debugger on its command line is no known-good state.
		{"t14-systemd-cmdline-kgdboc.bin", []string{"--allow-secure-boot-off"}, ExitPolicyFail, []string{"fails the policy learned from it", "debug.cmdline"}},
	} {
		t.Run(tc.log+strings.Join(tc.flags, ""), func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"policy", "learn", "--eventlog", interop + tc.log}, tc.flags...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errOut)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			if code != 0 {
				if out != "" {
					t.Errorf("a refused learn wrote a policy:\n%s", out)
				}
				return
			}
			// The learned policy passes its own log.
			p := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if code, out, errOut := run(t, "policy", "check", "--policy", p, "--eventlog", interop+tc.log); code != 0 {
				t.Errorf("learned policy fails its own log: exit %d: %s%s", code, out, errOut)
			}
		})
	}
}

// TestInteropSystemdCmdlineDebugger: the T14's systemd-boot command line
// with a kernel debugger added fails the policy learned from the original,
// naming the switch.
func TestInteropSystemdCmdlineDebugger(t *testing.T) {
	code, out, errOut := run(t, "policy", "learn", "--allow-secure-boot-off", "--eventlog", interop+"lenovo-t14-amd-R1BET56W.bin")
	if code != 0 {
		t.Fatalf("learn: exit %d: %s", code, errOut)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "policy", "check", "--policy", p, "--eventlog", interop+"t14-systemd-cmdline-kgdboc.bin")
	if code != ExitPolicyFail || !strings.Contains(out, "debug.cmdline") || !strings.Contains(out, "kgdbwait") {
		t.Fatalf("exit %d, want %d naming debug.cmdline and kgdbwait:\n%s", code, ExitPolicyFail, out)
	}
}

// A file that is no event log exits 2, and with --json says so in JSON.
func TestCheckJSONOnUnreadableInput(t *testing.T) {
	pol := learn(t, "rhel8-uefi.bin")
	code, out, _ := run(t, "policy", "check", "--json", "--policy", pol, "--eventlog", interop+"zeros-32B.bin")
	var got struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != ExitBadInput || got.Error.Code != "unreadable_input" || !strings.Contains(got.Error.Message, "not a TCG event log") {
		t.Fatalf("exit %d, output %q (%v)", code, out, err)
	}
}

// A log that measured nothing (only a StartupLocality event) gets messages
// that fit: nothing is said to come from an event that was not measured,
// and an offline check does not speak of quotes.
func TestMessagesForALogThatMeasuredNothing(t *testing.T) {
	_, out, _ := run(t, "policy", "diff", "--reference", logs+"rhel8-uefi.bin", "--eventlog", interop+"edge-goatt-short_no_action.bin")
	if strings.Contains(out, "(event 0)") || !strings.Contains(out, "Secure Boot: on → not measured") {
		t.Errorf("diff:\n%s", out)
	}
	_, out, _ = run(t, "policy", "check", "--policy", learn(t, "rhel8-uefi.bin"), "--eventlog", interop+"edge-goatt-short_no_action.bin")
	if strings.Contains(out, "not quoted") {
		t.Errorf("check:\n%s", out)
	}
}

// notReference are the logs of testdata that policy learn refuses (exit 1),
// with what its refusal names: they record no whole boot, or a debugger.
var notReference = map[string]string{
	"host-gmes.bin":                  "separator",
	"t480s-header-only-69B.bin":      "separator",
	"edge-goatt-short_no_action.bin": "separator",
	"t14-systemd-cmdline-kgdboc.bin": "debug.cmdline",
}

// allowAll are the allowance options of policy learn.
var allowAll = []string{"--allow-secure-boot-off", "--allow-any-boot-app", "--allow-empty-keys", "--allow-unverified-boot-apps", "--allow-debug"}

// TestEveryLog holds every log of testdata/eventlogs and testdata/interop
// to the same answers: it learns (a SHA-1 log only with --pcr-bank sha1,
// which the refusal without it names), passes its own policy, fails
// another machine's policy with reasons, and every cut inside one of its
// events exits 2, saying it is truncated.
func TestEveryLog(t *testing.T) {
	a, _ := filepath.Glob(logs + "*.bin")
	b, _ := filepath.Glob(interop + "*.bin")
	paths := append(a, b...)
	if len(a) < 10 || len(b) < 10 {
		t.Fatalf("found %d and %d logs", len(a), len(b))
	}
	dir := t.TempDir()
	policies := map[string]string{} // log name → its learned policy file
	var order []string
	for _, p := range paths {
		name := filepath.Base(p)
		if name == "zeros-32B.bin" {
			continue // no event log (TestCheckJSONOnUnreadableInput)
		}
		args := append([]string{"policy", "learn", "--eventlog", p}, allowAll...)
		code, out, errOut := run(t, args...)
		if code == ExitPolicyFail && strings.Contains(errOut, "--pcr-bank sha1") {
			code, out, errOut = run(t, append(args, "--pcr-bank", "sha1")...)
		}
		if why, ok := notReference[name]; ok {
			if code != ExitPolicyFail || !strings.Contains(errOut, why) {
				t.Errorf("%s: learn exit %d, want %d naming %q: %s", name, code, ExitPolicyFail, why, errOut)
			}
		} else if code != 0 {
			t.Errorf("%s: learn exit %d: %s", name, code, errOut)
		} else {
			pol := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(pol, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			policies[name] = pol
			order = append(order, name)
			if code, out, errOut := run(t, "policy", "check", "--policy", pol, "--eventlog", p); code != 0 {
				t.Errorf("%s fails its own policy: exit %d: %s%s", name, code, out, errOut)
			}
		}
		cuts(t, p, filepath.Join(dir, "cut.bin"))
	}
	// Another machine: the next learned log of another machine.
	var checked int
	for i, name := range order {
		p := filepath.Join(logs, name)
		if _, err := os.Stat(p); err != nil {
			p = filepath.Join(interop, name)
		}
		for j := 1; j < len(order); j++ {
			other := order[(i+j)%len(order)]
			if machine(other) == machine(name) {
				continue // a variant of the same machine's log
			}
			checked++
			code, out, errOut := run(t, "policy", "check", "--policy", policies[other], "--eventlog", p)
			if code != ExitPolicyFail {
				t.Errorf("%s against %s's policy: exit %d: %s%s", name, other, code, out, errOut)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if rule, detail, ok := strings.Cut(line, ": "); !ok || rule == "" || detail == "" {
					t.Errorf("%s against %s's policy: a failure without rule and reason: %q", name, other, line)
				}
			}
			break
		}
	}
	if checked != len(order) {
		t.Errorf("%d logs checked against another machine's policy, want %d", checked, len(order))
	}
}

// machine names the machine a log of testdata comes from: its variants
// (padding, an edited command line) are the same machine's.
func machine(log string) string {
	for _, m := range []string{"t480s", "t14"} {
		if strings.Contains(log, m) {
			return m
		}
	}
	return log
}

// cuts checks that raw cut inside each of its events (at its second byte
// past what could be padding, in its middle and before its last byte)
// exits 2 and says the log is truncated (or, shorter than one event
// header, no event log). tmp is a scratch file.
func cuts(t *testing.T, path, tmp string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	start := len(l.Header)
	for k := range l.Events {
		end := len((&eventlogtest.Log{Header: l.Header, Events: l.Events[:k+1], SHA1: l.SHA1}).Bytes())
		for _, cut := range []int{start + 6, (start + end) / 2, end - 1} {
			if cut <= start || cut >= end || uniformPadding(raw[start:cut]) {
				continue
			}
			if err := os.WriteFile(tmp, raw[:cut], 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errOut := run(t, "policy", "diff", "--reference", tmp, "--eventlog", tmp)
			// Fewer bytes than one event header are no event log at all.
			said := strings.Contains(errOut, "truncated") || cut < 32 && strings.Contains(errOut, "not a TCG event log")
			if code != ExitBadInput || !said {
				t.Fatalf("%s cut at byte %d inside event %d: exit %d: %s", filepath.Base(path), cut, k+1, code, errOut)
			}
		}
		start = end
	}
}

// uniformPadding reports whether b is all 0x00 or all 0xFF: a cut there is
// indistinguishable from padding.
func uniformPadding(b []byte) bool {
	return len(b) > 0 && (b[0] == 0 || b[0] == 0xff) && bytes.Count(b, b[:1]) == len(b)
}

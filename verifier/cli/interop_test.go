package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			[]string{"allowed: log.quirks: separator-pcr7-only", "allowed: log.pinned_events: PCR 12"}},
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

package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/verifier/policy"
)

const logs = "../../testdata/eventlogs/"

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// learn learns a policy from a log of testdata/eventlogs, with the allowance
// options flags.
func learn(t *testing.T, log string, flags ...string) string {
	t.Helper()
	code, out, errOut := run(t, append([]string{"policy", "learn", "--eventlog", logs + log}, flags...)...)
	if code != 0 {
		t.Fatalf("learn %s: exit %d: %s", log, code, errOut)
	}
	if _, err := policy.Parse([]byte(out)); err != nil {
		t.Fatalf("learned policy does not parse: %v", err)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyCheckExitCodes(t *testing.T) {
	pol := learn(t, "rhel8-uefi.bin")
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(broken, []byte("name: x\nsecure_boot: {allow_disabled: maybe}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.bin")
	if err := os.WriteFile(garbage, []byte("this is not an event log"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings
		stderrIn string
	}{
		{"pass", []string{"--policy", pol, "--eventlog", logs + "rhel8-uefi.bin"}, 0, []string{"pass:"}, ""},
		{"secure boot off", []string{"--policy", pol, "--eventlog", logs + "ubuntu-2104-no-secure-boot.bin"}, 1,
			[]string{"secure_boot.enabled: event 3: Secure Boot is disabled", "code_integrity.boot_app: event 23:"}, ""},
		{"missing log", []string{"--policy", pol, "--eventlog", "/nonexistent/log.bin"}, 2, nil, "read event log"},
		{"garbage log", []string{"--policy", pol, "--eventlog", garbage}, 2, nil, "malformed event log"},
		{"truncated log", []string{"--policy", pol, "--eventlog", truncated(t)}, 2, nil, "event log truncated"},
		{"broken policy", []string{"--policy", broken, "--eventlog", logs + "rhel8-uefi.bin"}, 2, nil, "invalid policy"},
		{"missing flag", []string{"--policy", pol}, 2, nil, "eventlog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"policy", "check"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			if !strings.Contains(errOut, tc.stderrIn) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderrIn, errOut)
			}
			if tc.code == 1 {
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					if !strings.Contains(line, ": ") {
						t.Errorf("failure line without a rule and detail: %q", line)
					}
				}
			}
		})
	}
}

func truncated(t *testing.T) string {
	b, err := os.ReadFile(logs + "rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "truncated.bin")
	if err := os.WriteFile(p, b[:len(b)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A SHA-1 log learns only with --pcr-bank sha1 (exit 1 without it, naming
// the flag: the log is readable); the policy passes its own log, and a log
// of the other bank fails it by one rule, log.pcr_bank, in check and diff.
func TestPolicySHA1Bank(t *testing.T) {
	code, out, errOut := run(t, "policy", "learn", "--eventlog", logs+"debian-10.bin")
	if code != ExitPolicyFail || out != "" || !strings.Contains(errOut, "--pcr-bank sha1") {
		t.Fatalf("learn without the opt-in: exit %d: %s", code, errOut)
	}
	sha1 := learn(t, "debian-10.bin", "--pcr-bank", "sha1")
	b, err := os.ReadFile(sha1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "pcr_bank: sha1") {
		t.Fatalf("the learned policy does not name its bank:\n%s", b)
	}
	if code, out, errOut := run(t, "policy", "check", "--policy", sha1, "--eventlog", logs+"debian-10.bin"); code != 0 {
		t.Fatalf("own log: exit %d: %s%s", code, out, errOut)
	}
	sha256 := learn(t, "rhel8-uefi.bin")
	for _, tc := range []struct{ pol, log string }{
		{sha1, logs + "rhel8-uefi.bin"},  // a log with both banks, replayed in SHA-1: another machine
		{sha1, logs + "gdc-host.bin"},    // SHA-256 only
		{sha256, logs + "debian-10.bin"}, // SHA-1 only
	} {
		for _, cmd := range []string{"check", "diff"} {
			code, out, errOut := run(t, "policy", cmd, "--policy", tc.pol, "--eventlog", tc.log)
			if code != ExitPolicyFail {
				t.Errorf("%s %s: exit %d: %s%s", cmd, tc.log, code, out, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			bankRule := strings.Contains(out, "log.pcr_bank")
			if tc.log == logs+"rhel8-uefi.bin" {
				if bankRule {
					t.Errorf("%s %s: a log that has the policy's bank fails by bank:\n%s", cmd, tc.log, out)
				}
				continue
			}
			if len(lines) != 1 || !bankRule || strings.Contains(out, "boot_app") {
				t.Errorf("%s %s: want one log.pcr_bank failure:\n%s", cmd, tc.log, out)
			}
		}
	}
	// The bank is named in any case.
	for _, name := range []string{"SHA1", "Sha1"} {
		if code, out, errOut := run(t, "policy", "learn", "--pcr-bank", name, "--eventlog", logs+"debian-10.bin"); code != 0 || !strings.Contains(out, "pcr_bank: sha1") {
			t.Errorf("--pcr-bank %s: exit %d: %s", name, code, errOut)
		}
	}
	if code, _, errOut := run(t, "policy", "learn", "--pcr-bank", "md5", "--eventlog", logs+"debian-10.bin"); code != ExitBadInput || !strings.Contains(errOut, "--pcr-bank") {
		t.Errorf("unknown bank: exit %d: %s", code, errOut)
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	pol := learn(t, "rhel8-uefi.bin")
	code, out, _ := run(t, "policy", "check", "--json", "--policy", pol, "--eventlog", logs+"cos-101-amd-sev.bin")
	if code != 1 || !strings.Contains(out, `"pass": false`) || !strings.Contains(out, `"rule": "firmware.pcr0"`) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestPolicyDiff(t *testing.T) {
	code, out, _ := run(t, "policy", "diff", "--eventlog", logs+"ubuntu-2104-no-secure-boot.bin", "--reference", logs+"rhel8-uefi.bin")
	if code != 1 || !strings.Contains(out, "Secure Boot: on → off (event 3)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if code, out, _ := run(t, "policy", "diff", "--eventlog", logs+"rhel8-uefi.bin", "--reference", logs+"rhel8-uefi.bin"); code != 0 || !strings.Contains(out, "no difference") {
		t.Fatalf("same log: exit %d:\n%s", code, out)
	}
	pol := learn(t, "rhel8-uefi.bin")
	if code, out, _ := run(t, "policy", "diff", "--eventlog", logs+"cos-101-amd-sev.bin", "--policy", pol); code != 1 || !strings.Contains(out, "firmware.pcr0") {
		t.Fatalf("against a policy: exit %d:\n%s", code, out)
	}
	if code, out, _ := run(t, "policy", "diff", "--json", "--eventlog", logs+"cos-101-amd-sev.bin", "--policy", pol); code != 1 || !strings.Contains(out, `"rule": "firmware.pcr0"`) {
		t.Fatalf("against a policy, JSON: exit %d:\n%s", code, out)
	}
	if code, out, _ := run(t, "policy", "diff", "--json", "--eventlog", logs+"ubuntu-2104-no-secure-boot.bin", "--reference", logs+"rhel8-uefi.bin"); code != 1 || !strings.Contains(out, `"Secure Boot: on → off (event 3)"`) {
		t.Fatalf("against a reference, JSON: exit %d:\n%s", code, out)
	}
}

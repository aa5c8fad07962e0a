package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestOperatorCLI runs `bootgate serve` with the admin API and works an
// incident with the CLI through it, as an operator with a profile from
// `bootgate operator add`.
// serveAdmin runs `bootgate serve` on the appliance files in dir (tls/,
// roots/, bootgate.db) with policy pol and an admin API, until the test
// ends, and waits until the admin API accepts connections. It returns the
// configuration file.
func serveAdmin(t *testing.T, dir, pol string) string {
	t.Helper()
	adminAddr := freeAddr(t)
	cfg := filepath.Join(dir, "appliance.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %q
tls: {cert: tls/server.pem, key: tls/server-key.pem}
policy: %q
store: bootgate.db
ek: {roots: roots}
admin: {listen: %q, operators: operators}
`, freeAddr(t), pol, adminAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan int, 1)
	go func() { served <- Run(ctx, []string{"serve", "--config", cfg}, os.Stderr, os.Stderr) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", adminAddr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case code := <-served:
			t.Fatalf("bootgate serve exited with %d", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin API did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cfg
}

func TestOperatorCLI(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := run(t, "tls", "init", "--dir", filepath.Join(dir, "tls"), "--host", "127.0.0.1"); code != 0 {
		t.Fatal(errOut)
	}
	pol := learn(t, "rhel8-uefi.bin")
	// Any self-signed CA serves as the EK roots here: no TPM enrolls.
	if err := os.Mkdir(filepath.Join(dir, "roots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ca, err := os.ReadFile(filepath.Join(dir, "tls", "ca.pem")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(dir, "roots", "ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(dir, "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct{ id, verdict string }{{"host-good", wire.VerdictPass}, {"host-bad", wire.VerdictFail}} {
		a := &store.Attestation{HostID: h.id, Time: time.Now(), Verdict: h.verdict, PolicyName: "p", PolicyDigest: "d"}
		if h.verdict == wire.VerdictFail {
			a.Reasons = []wire.Reason{{Rule: "secure_boot.enabled", Event: 3, Detail: "Secure Boot is disabled"}}
		}
		if _, err := st.Record(context.Background(), a, store.Host{EKType: "rsa"}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	cfg := serveAdmin(t, dir, pol)

	// Without a profile, nothing is read.
	if code, _, errOut := run(t, "hosts", "--operator", filepath.Join(dir, "nobody.yaml")); code != ExitBadInput || !strings.Contains(errOut, "operator profile") {
		t.Fatalf("no profile: exit %d: %s", code, errOut)
	}
	profile := filepath.Join(dir, "alice.yaml")
	if code, out, errOut := run(t, "operator", "add", "alice", "--config", cfg, "--out", profile); code != 0 || !strings.Contains(out, "alice") {
		t.Fatalf("operator add: exit %d: %s%s", code, out, errOut)
	}
	if fi, err := os.Stat(profile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("profile: %v %v", fi, err)
	}
	if code, _, errOut := run(t, "operator", "add", "alice", "--config", cfg, "--out", profile); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("a second operator add overwrote the profile: exit %d: %s", code, errOut)
	}
	cli := func(args ...string) (int, string, string) {
		return run(t, append(args, "--operator", profile)...)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"status"}, []string{"admitted 1  quarantined 1", "open 1"}},
		{[]string{"hosts"}, []string{"host-bad", "quarantined", "host-good", "admitted"}},
		{[]string{"hosts", "--state", "admitted", "--json"}, []string{`"id": "host-good"`}},
		{[]string{"host", "show", "host-bad"}, []string{"state quarantined", "secure_boot.enabled"}},
		{[]string{"incidents"}, []string{"host-bad", "open", "secure_boot.enabled"}},
		{[]string{"incidents", "list", "--state", "unresolved", "--json"}, []string{`"host_id": "host-bad"`}},
		{[]string{"incident", "show", "1"}, []string{"secure_boot.enabled (event 3): Secure Boot is disabled"}},
		{[]string{"incident", "assign", "1", "bob"}, []string{"assign recorded"}},
		{[]string{"incident", "investigate", "1"}, []string{"investigate recorded"}},
		{[]string{"incident", "note", "1", "firmware setup was opened at the console"}, []string{"note recorded"}},
	} {
		code, out, errOut := cli(tc.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
	if code, _, errOut := cli("incident", "remediate", "1", "done"); code == 0 || !strings.Contains(errOut, "post-mortem") {
		t.Fatalf("remediation without a post-mortem: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli("incident", "show", "x1"); code != ExitBadInput {
		t.Fatalf("bad incident ID: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli("quarantine", "host-good"); code != 0 {
		t.Fatal(errOut)
	}
	bundle := filepath.Join(dir, "bundle.json")
	if code, out, errOut := cli("incidents", "export", "1", bundle); code != 0 || !strings.Contains(out, "written") {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	if b, err := os.ReadFile(bundle); err != nil || !strings.Contains(string(b), `"secure_boot.enabled"`) {
		t.Fatalf("bundle: %v", err)
	}
	code, out, _ := cli("audit")
	if code != 0 {
		t.Fatal(out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.Contains(lines[1], "alice") || !strings.Contains(lines[1], "quarantine") ||
		!strings.Contains(lines[4], "incident-assign") || !strings.Contains(lines[5], "local") || !strings.Contains(lines[5], "operator-add") {
		t.Fatalf("audit log, newest first, by alice (and her certificate's issuance):\n%s", out)
	}

	// Revoked, alice is refused from her next call on.
	if code, out, errOut := run(t, "operator", "revoke", "alice", "--config", cfg); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := cli("status"); code == 0 || !strings.Contains(errOut, "revoked") {
		t.Fatalf("a revoked operator: exit %d: %s", code, errOut)
	}
	if code, out, _ := run(t, "operator", "list", "--config", cfg); code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "true") {
		t.Fatalf("operator list:\n%s", out)
	}
}

package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// hostile is what a host can put in event data or a certificate name:
// clear screen, a bell, a carriage return that overwrites the line, a
// right-to-left override.
const hostile = "\x1b[2J\a\r\u202e"

// wantInert fails if out carries any of hostile's characters raw, or lacks
// want (their escaped form).
func wantInert(t *testing.T, what, out, want string) {
	t.Helper()
	for _, c := range []string{"\x1b", "\a", "\r", "\u202e"} {
		if strings.Contains(out, c) {
			t.Errorf("%s: output carries %q raw:\n%q", what, c, out)
		}
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s: output lacks %q:\n%q", what, want, out)
	}
}

// hostileLog is rhel8-uefi.bin with the device path of its shim boot
// application renamed to hostile (same length in UTF-16): event data that
// no digest covers, so the log still replays.
func hostileLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(logs + "rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	from, to := utf16le("shimx64"), utf16le(hostile)
	if len(from) != len(to) || !bytes.Contains(b, from) {
		t.Fatal("cannot plant the hostile path")
	}
	p := filepath.Join(t.TempDir(), "hostile.bin")
	if err := os.WriteFile(p, bytes.ReplaceAll(b, from, to), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}

// TestPolicyOutputEscaped: policy check and diff quote a boot
// application's device path from the log; its control characters reach
// the terminal escaped.
func TestPolicyOutputEscaped(t *testing.T) {
	pol := learn(t, "arch-linux-workstation.bin", "--allow-secure-boot-off") // the rhel8 shim is not among its boot apps
	log := hostileLog(t)
	for _, args := range [][]string{
		{"policy", "check", "--policy", pol, "--eventlog", log},
		{"policy", "diff", "--policy", pol, "--eventlog", log},
		{"policy", "check", "--policy", pol, "--eventlog", log, "--json"},
	} {
		code, out, errOut := run(t, args...)
		if code != ExitPolicyFail {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		want := `\x1b[2J\x07\x0d\u202e`
		if args[len(args)-1] == "--json" {
			want = `\\x1b[2J\\x07\\x0d\\u202e` // the escape, JSON-encoded
		}
		wantInert(t, strings.Join(args, " "), out+errOut, want)
	}
}

// TestIncidentShowEscaped: an incident whose failure detail and EK
// certificate subject carry control characters is shown escaped by
// `incident show`, its JSON form and `host show`.
func TestIncidentShowEscaped(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := run(t, "tls", "init", "--dir", filepath.Join(dir, "tls"), "--host", "127.0.0.1"); code != 0 {
		t.Fatal(errOut)
	}
	pol := learn(t, "rhel8-uefi.bin")
	if err := os.Mkdir(filepath.Join(dir, "roots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ca, err := os.ReadFile(filepath.Join(dir, "tls", "ca.pem")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(dir, "roots", "ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ekCert, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject:   pkix.Name{CommonName: "EK " + hostile + "subject"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject: pkix.Name{CommonName: "issuer " + hostile}}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(dir, "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	a := &store.Attestation{HostID: "host-evil", Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d",
		Reasons:  []wire.Reason{{Rule: "code_integrity.boot_app", Event: 7, Detail: "boot application (\\EFI\\" + hostile + ".efi) is not allowed"}},
		Evidence: store.Evidence{EKCert: ekCert, EKType: "ecc-p256"},
		TPM:      store.TPM{Manufacturer: "IFX", Model: "SLB" + hostile, Version: "id:073f"}}
	if _, err := st.Record(context.Background(), a, store.Host{EKType: "ecc-p256", EKIssuer: "CN=issuer " + hostile}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cfg := serveAdmin(t, dir, pol)
	profile := filepath.Join(dir, "alice.yaml")
	if code, _, errOut := run(t, "operator", "add", "alice", "--config", cfg, "--out", profile); code != 0 {
		t.Fatal(errOut)
	}
	for _, args := range [][]string{{"incident", "show", "1"}, {"incident", "show", "1", "--json"}, {"host", "show", "host-evil"}, {"hosts", "--json"}} {
		code, out, errOut := run(t, append(args, "--operator", profile)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		want := `\x1b[2J\x07\x0d\u202e`
		if strings.Contains(strings.Join(args, " "), "json") {
			want = `\\x1b[2J\\x07\\x0d\\u202e` // the escape, JSON-encoded
		}
		wantInert(t, strings.Join(args, " "), out, want)
		if args[1] == "show" && len(args) == 3 && args[0] == "incident" && !strings.Contains(out, `TPM IFX SLB\x1b[2J\x07\x0d\u202e (version id:073f), firmware not proven`) {
			t.Errorf("incident show does not name the TPM:\n%s", out)
		}
	}
}

package main

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/images/keys"
)

func TestLoadCertDirs(t *testing.T) {
	keyDir := t.TempDir()
	pairs, _, err := keys.Ensure(keyDir, []keys.Spec{keys.DB, keys.OtherDB}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for i, d := range []string{"db", "db-other"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, d, "cert.der"), pairs[i].Cert.Raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Other files are ignored.
	if err := os.WriteFile(filepath.Join(root, "db", "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := loadCertDirs([]string{filepath.Join(root, "db"), filepath.Join(root, "db-other")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(pairs[0].Cert) || !got[1].Equal(pairs[1].Cert) {
		t.Fatalf("got %s", describe(got))
	}
	if !sameCerts(got, []*x509.Certificate{pairs[1].Cert, pairs[0].Cert}) {
		t.Error("sameCerts depends on order")
	}
	if sameCerts(got[:1], got) || sameCerts(got, []*x509.Certificate{pairs[0].Cert, pairs[0].Cert}) {
		t.Error("sameCerts matched different sets")
	}
	if _, err := loadCertDirs([]string{filepath.Join(root, "missing")}); err == nil {
		t.Error("a missing db directory was accepted")
	}
}

func TestBadArgumentsGiveAVerdict(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"-check", "-bogus"}, &out, &errb); rc != 2 {
		t.Fatalf("exit %d, want 2", rc)
	}
	if !strings.HasPrefix(out.String(), "BOOTGATE-CHECK-FAIL: arguments:") {
		t.Errorf("output %q", out.String())
	}
}

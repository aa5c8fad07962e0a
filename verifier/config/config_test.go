package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestExample loads the documented example configuration.
func TestExample(t *testing.T) {
	c, err := Load("../../docs/appliance.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin == nil || c.Admin.URL != "https://192.0.2.10:9443" || !filepath.IsAbs(c.Admin.Operators) ||
		filepath.Base(c.Admin.ServerCA) != "ca.pem" || filepath.Dir(c.Admin.ServerCA) != filepath.Dir(c.TLS.Cert) {
		t.Fatalf("admin section: %+v", c.Admin)
	}
}

func TestRefused(t *testing.T) {
	base := "listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\npolicy: p.yaml\nstore: s.db\nek: {roots: r}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", base + "admni: {listen: x}\n", "admni"},
		{"admin without operators", base + "admin: {listen: \"127.0.0.1:9443\"}\n", "admin.operators: required"},
		{"admin without listen", base + "admin: {operators: ops}\n", "admin.listen: required"},
		{"empty", "", "empty configuration"},
	} {
		p := filepath.Join(t.TempDir(), "a.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

func TestBootNeedsPKI(t *testing.T) {
	base := "listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\npolicy: p.yaml\nstore: s.db\nek: {roots: r}\nboot: {kernel: k, initrd: i}\n"
	p := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(p, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "boot: needs pki") {
		t.Fatalf("boot without pki: %v, want refused", err)
	}
	if err := os.WriteFile(p, []byte(base+"pki: {dir: pki}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatalf("boot with pki: %v", err)
	}
}

func TestCheckQuotedPCRs(t *testing.T) {
	err := CheckQuotedPCRs([]int{0, 1, 2, 3, 5, 6, 7, 8, 9, 12}, []int{0, 4, 7, 8, 9, 12})
	var unc *UncoveredPCRsError
	if !errors.As(err, &unc) || !slices.Equal(unc.Missing, []int{4}) || !strings.Contains(err.Error(), "PCR 4") {
		t.Fatalf("pcrs without 4: %v, want an UncoveredPCRsError naming PCR 4", err)
	}
	if err := CheckQuotedPCRs([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, []int{0, 4, 7, 8, 9, 12}); err != nil {
		t.Fatalf("default PCRs: %v", err)
	}
}

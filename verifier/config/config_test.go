package config

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/policy"
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
	if b := c.BootFiles; c.Conns.Max != 1024 || c.Admin.Conns.PerSource != 16 || b.HTTPConns.Max != 256 ||
		b.TFTPTransfers.PerSource != 2 || b.TransferTime != 5*time.Minute || b.TFTPRetries != 2 {
		t.Fatalf("connection caps: %+v %+v %+v", c.Conns, c.Admin.Conns, b)
	}
	if r := c.Retention; r != (Retention{MaxAge: 2160 * time.Hour, Every: time.Minute, Batch: 1000, StoredFailures: 10, FailureWindow: time.Hour, IncidentFailures: 50}) {
		t.Fatalf("retention: %+v", r)
	}
}

// dhcpSection is a valid dhcp section, without relays.
const dhcpSection = `dhcp:
  interface: br-boot
  server_ip: 10.23.0.1
  endpoint: https://10.23.0.1:8443
  quarantine: {start: 10.23.0.100, end: 10.23.0.149, prefix_len: 24, lease_time: 60s}
  production: {start: 10.23.0.150, end: 10.23.0.199, prefix_len: 24, lease_time: 1h}
`

// TestRelays: no relays unless listed; listed relays are kept.
func TestRelays(t *testing.T) {
	c, err := Load("../../docs/appliance.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DHCP.Relays) != 0 {
		t.Errorf("the example configures relays %v; the default is none", c.DHCP.Relays)
	}
	base := "listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\npolicy: p.yaml\nstore: s.db\nek: {roots: r}\n"
	p := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(p, []byte(base+dhcpSection+"  relays: [10.9.0.1, 10.9.1.1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.DHCP.Relays, ",") != "10.9.0.1,10.9.1.1" {
		t.Errorf("relays %v", c.DHCP.Relays)
	}
}

// TestStoreLocation: a store file is relative to the configuration; a
// postgres:// URL is kept as written.
func TestStoreLocation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ store, want string }{
		{"s.db", filepath.Join(dir, "s.db")},
		{"/var/lib/bootgate/bootgate.db", "/var/lib/bootgate/bootgate.db"},
		{"postgres://bootgate@db.example/bootgate?sslmode=verify-full", "postgres://bootgate@db.example/bootgate?sslmode=verify-full"},
	} {
		p := filepath.Join(dir, "a.yaml")
		y := fmt.Sprintf("listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\npolicy: p.yaml\nstore: %q\nek: {roots: r}\n", tc.store)
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatalf("store %s: %v", tc.store, err)
		}
		if c.Store != tc.want {
			t.Errorf("store %s loaded as %s, want %s", tc.store, c.Store, tc.want)
		}
	}
}

func TestRefused(t *testing.T) {
	base := "listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\npolicy: p.yaml\nstore: s.db\nek: {roots: r}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", base + "admni: {listen: x}\n", "admni"},
		{"admin without operators", base + "admin: {listen: \"127.0.0.1:9443\"}\n", "admin.operators: required"},
		{"admin without listen", base + "admin: {operators: ops}\n", "admin.listen: required"},
		{"empty", "", "empty configuration"},
		{"relay not an address", base + dhcpSection + "  relays: [10.9.0.1, relay.example.net]\n", `dhcp.relays: "relay.example.net"`},
		{"relay unspecified", base + dhcpSection + "  relays: [0.0.0.0]\n", `dhcp.relays: "0.0.0.0"`},
		{"relay IPv6", base + dhcpSection + "  relays: [\"2001:db8::1\"]\n", `dhcp.relays: "2001:db8::1"`},
		{"negative conns", base + "conns: {max: -1}\n", "conns: negative"},
		{"per source above max", base + "conns: {max: 4, per_source: 5}\n", "conns: per_source 5 above max 4"},
		{"admin conns", base + "admin: {listen: x, operators: o, conns: {per_source: -2}}\n", "admin.conns: negative"},
		{"boot http conns", base + "bootfiles: {dir: b, http: x, http_conns: {max: 1, per_source: 2}}\n", "bootfiles.http_conns: per_source"},
		{"tftp retries", base + "bootfiles: {dir: b, tftp: x, tftp_retries: 11}\n", "bootfiles.tftp_retries: 11"},
		{"negative idle", base + "bootfiles: {dir: b, http: x, http_idle_timeout: -1s}\n", "bootfiles.http_idle_timeout: negative"},
		{"cleartext endpoint", base + strings.Replace(dhcpSection, "https://10.23.0.1:8443", "http://10.23.0.1:8443", 1), `dhcp.endpoint: "http://10.23.0.1:8443" is not an https:// URL`},
		{"cleartext alternate", base + dhcpSection + "  alternates: [https://10.23.0.2:8443, \"http://10.23.0.3:8443\"]\n", `dhcp.alternates[1]: "http://10.23.0.3:8443" is not an https:// URL`},
		{"store URL not postgres", strings.Replace(base, "store: s.db", "store: mysql://db/x", 1), "store: a URL must be postgres://"},
		{"retention max age", base + "retention: {max_age: -1h}\n", "retention.max_age: negative"},
		{"retention every", base + "retention: {every: -1s}\n", "retention.every: negative"},
		{"retention window", base + "retention: {failure_window: -1s}\n", "retention.failure_window: negative"},
		{"retention batch", base + "retention: {batch: 10001}\n", "retention.batch: 10001"},
		{"stored failures", base + "retention: {stored_failures: -1}\n", "retention.stored_failures: -1"},
		{"incident failures", base + "retention: {incident_failures: 10001}\n", "retention.incident_failures: 10001"},
		{"retention unknown field", base + "retention: {days: 30}\n", "days"},
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

// TestLoadAppliance: the appliance's configuration comes with its policy,
// learned here from the RHEL 8 log and named as reference; quoted PCRs that
// leave out one the policy reads, or a policy that does not load, refuse it.
func TestLoadAppliance(t *testing.T) {
	dir := t.TempDir()
	ref, err := filepath.Abs("../../testdata/eventlogs/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	st, err := replay(ref, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := policy.Learn("rhel8", st, policy.LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("listen: \":8443\"\ntls: {cert: c.pem, key: k.pem}\nstore: s.db\nek: {roots: r}\nadmin: {listen: \"127.0.0.1:9443\", operators: ops}\npolicy_reference: %q\n", ref)
	load := func(extra string) (*Appliance, error) {
		p := filepath.Join(dir, "a.yaml")
		if err := os.WriteFile(p, []byte(base+extra), 0o644); err != nil {
			t.Fatal(err)
		}
		return LoadAppliance(p)
	}
	a, err := load("policy: policy.yaml\n")
	if err != nil {
		t.Fatal(err)
	}
	if a.Policy == nil || a.Policy.Name != "rhel8" || a.Reference == nil || !slices.Equal(a.QuotedPCRs(), DefaultPCRs) {
		t.Fatalf("loaded %+v", a)
	}
	var unc *UncoveredPCRsError
	if _, err := load("policy: policy.yaml\npcrs: [0, 7]\n"); !errors.As(err, &unc) || !slices.Contains(unc.Missing, 4) {
		t.Errorf("pcrs [0, 7]: %v, want PCR 4 uncovered", err)
	}
	if _, err := load("policy: missing.yaml\n"); err == nil || !strings.Contains(err.Error(), "read policy") {
		t.Errorf("missing policy: %v", err)
	}
}

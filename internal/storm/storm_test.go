package storm_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/internal/storm"
	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
)

const (
	goodLog  = "rhel8-uefi.bin"
	otherLog = "ubuntu-2104-no-secure-boot.bin" // another machine's firmware, which goodLog's policy refuses
)

// applianceFiles writes into a new directory what appliances on 127.0.0.1
// need besides their configuration: a TLS certificate for 127.0.0.1, m as
// the only EK root and a policy learned from raw. It returns the directory
// and the CA pool the TLS certificate chains to.
func applianceFiles(t *testing.T, m *softtpm.Manufacturer, raw []byte) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	if err := pki.WriteServerTLS(filepath.Join(dir, "tls"), []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "roots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(filepath.Join(dir, "manufacturer")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "manufacturer", softtpm.ManufacturerCert))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roots", "manufacturer.pem"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	bank, err := eventlog.Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := policy.Learn("storm", st, policy.LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	y, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), y, 0o644); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "tls", pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in " + pki.CAFile)
	}
	return dir, pool
}

// applianceConfig writes the configuration file name into dir (made by
// applianceFiles) for an appliance serving the attestation API only (no
// DHCP, gateway or admin API) on a free port of 127.0.0.1, with store and
// a PKI that issues host identities; replicas in one dir share the store,
// the PKI and the session key. It returns the file and the API's URL.
func applianceConfig(t *testing.T, dir, name, store string) (string, string) {
	t.Helper()
	// A free port: the appliance binds the configured address itself.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfgPath := filepath.Join(dir, name)
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `listen: %q
tls: {cert: tls/%s, key: tls/%s}
policy: policy.yaml
store: %q
session_key: session.key
ek: {roots: roots}
pki: {dir: pki}
`, addr, pki.ServerFile, pki.ServerKeyFile, store), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, "https://" + addr
}

// waitListening waits until something accepts connections at url's
// address, or stopped reports that the appliance ended.
func waitListening(t *testing.T, url string, stopped func() error) {
	t.Helper()
	addr := strings.TrimPrefix(url, "https://")
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if err := stopped(); err != nil {
			t.Fatalf("appliance stopped: %v", err)
		}
		if i == 1000 {
			t.Fatalf("the appliance does not listen on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startAppliance runs a real appliance in this process on 127.0.0.1 with
// the attestation API only, a policy learned from raw, m as its only EK
// root and a PKI that issues host identities, on SQLite. It returns the
// API's URL and the CA pool its TLS certificate chains to; the appliance
// stops at the test's end.
func startAppliance(t *testing.T, m *softtpm.Manufacturer, raw []byte) (string, *x509.CertPool) {
	t.Helper()
	dir, pool := applianceFiles(t, m, raw)
	cfgPath, url := applianceConfig(t, dir, "appliance.yaml", "bootgate.db")
	cfg, err := config.LoadAppliance(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- appliance.Run(ctx, cfg, appliance.Options{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("appliance: %v", err)
		}
	})
	waitListening(t, url, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("returned %v", err)
		default:
			return nil
		}
	})
	return url, pool
}

// needLoopbackRange skips the test where the simulated hosts' source
// addresses (127.0.0.0/8 beyond 127.0.0.1, which Linux routes to lo) are not
// this machine's.
func needLoopbackRange(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", storm.DefaultFirstSource.String()+":0")
	if err != nil {
		t.Skipf("simulated hosts connect from %v, which is not a local address here: %v", storm.DefaultFirstSource, err)
	}
	ln.Close()
}

func readLog(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "eventlogs", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestStormAdmitsEveryHost plays 20 hosts against a real appliance: every
// one must be admitted, with an identity for its key and credentials its
// TPM unseals.
func TestStormAdmitsEveryHost(t *testing.T) {
	needLoopbackRange(t)
	m, err := softtpm.NewManufacturer("storm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	raw := readLog(t, goodLog)
	url, roots := startAppliance(t, m, raw)
	hosts, err := storm.Manufacture(m, raw, 20, 2, storm.DefaultFirstSource)
	if err != nil {
		t.Fatal(err)
	}
	res, err := storm.Run(context.Background(), storm.Config{URLs: []string{url}, Roots: roots, Concurrency: 4}, hosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Outcomes {
		if o.Err != nil {
			t.Errorf("host %d: %v", o.Host, o.Err)
		}
	}
	if s := res.Summarize(); s.Admitted != len(hosts) || s.Errors != 0 {
		t.Errorf("admitted %d of %d hosts, %d errors", s.Admitted, len(hosts), s.Errors)
	}
}

// TestStormCountsRefusals: hosts whose EKs the appliance does not trust
// (another manufacturer) are errors, not admissions: a broken or refusing
// appliance shows.
func TestStormCountsRefusals(t *testing.T) {
	needLoopbackRange(t)
	trusted, err := softtpm.NewManufacturer("storm test manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	other, err := softtpm.NewManufacturer("storm untrusted manufacturer")
	if err != nil {
		t.Fatal(err)
	}
	raw := readLog(t, goodLog)
	url, roots := startAppliance(t, trusted, raw)
	hosts, err := storm.Manufacture(other, raw, 3, 1, storm.DefaultFirstSource)
	if err != nil {
		t.Fatal(err)
	}
	res, err := storm.Run(context.Background(), storm.Config{URLs: []string{url}, Roots: roots, Concurrency: 2}, hosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Outcomes {
		var se *storm.StatusError
		if !errors.As(o.Err, &se) || se.Code != "ek_untrusted" {
			t.Errorf("host %d: %v, want a refusal ek_untrusted", o.Host, o.Err)
		}
	}
	if s := res.Summarize(); s.Admitted != 0 || s.Errors != len(hosts) {
		t.Errorf("admitted %d, errors %d; want 0 and %d", s.Admitted, s.Errors, len(hosts))
	}
}

package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// browserDir holds the dashboard test's script and its node_modules
// (`make deps` runs npm ci there).
const browserDir = "testdata/browser"

// browserSeed reads BOOTGATE_DASHBOARD_SEED=HOSTS,INCIDENTS (default a small
// fleet); 10000,1000 times the dashboard on a large one.
func browserSeed(t *testing.T) (hosts, incidents int) {
	hosts, incidents = 40, 5
	if v := os.Getenv("BOOTGATE_DASHBOARD_SEED"); v != "" {
		h, i, ok := strings.Cut(v, ",")
		var err1, err2 error
		hosts, err1 = strconv.Atoi(h)
		incidents, err2 = strconv.Atoi(i)
		if !ok || err1 != nil || err2 != nil || incidents > hosts {
			t.Fatalf("BOOTGATE_DASHBOARD_SEED=%q: want HOSTS,INCIDENTS", v)
		}
	}
	return hosts, incidents
}

// TestDashboardInBrowser loads the dashboard in Debian's headless Chromium,
// driven by playwright-core: refused without an operator certificate; with
// alice's, it shows the fleet, opens an incident with its failed rule and
// diff, follows a change made elsewhere without a reload, and refuses a
// remediation without a post-mortem, records a note and quarantines a host
// from its panel.
func TestDashboardInBrowser(t *testing.T) {
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no Chromium at %s (apt-get install chromium; make deps)", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed (apt-get install nodejs npm; make deps)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core")); err != nil {
		t.Skipf("playwright-core is not installed: run npm ci in verifier/admin/%s (make deps does)", browserDir)
	}

	f := newFixture(t)
	nHosts, nIncidents := browserSeed(t)
	start := time.Now()
	f.seed(t, nHosts, nIncidents, 0)
	t.Logf("seeded %d hosts and %d incidents in %.1f s", nHosts, nIncidents, time.Since(start).Seconds())
	certFile := writeFile(t, f.dir, "alice.pem", []byte(f.profile.Certificate))
	keyFile := writeFile(t, f.dir, "alice-key.pem", []byte(f.profile.Key))
	caFile := writeFile(t, f.dir, "server-ca.pem", []byte(f.profile.ServerCA))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "dashboard.mjs")
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(),
		"BOOTGATE_URL="+f.url, "BOOTGATE_CERT="+certFile, "BOOTGATE_KEY="+keyFile, "NODE_EXTRA_CA_CERTS="+caFile,
		"CHROMIUM="+chromium,
		// The newest incident is on the first page: host nIncidents-1's.
		fmt.Sprintf("BOOTGATE_INCIDENT=%d", nIncidents),
		"BOOTGATE_RULE=secure_boot.enabled",
		"BOOTGATE_DIFF=Secure Boot: on → off",
		fmt.Sprintf("BOOTGATE_QUARANTINED=%d", nIncidents),
		"BOOTGATE_ADMITTED_HOST="+hostName(nIncidents), // the first admitted host
	)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var result map[string]float64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "CHANGE":
			// Another host fails while the page is open.
			record(t, f.st, "late-host", time.Now(), loadEvidence(t, badLog, f.pol), f.pol)
			io.WriteString(stdin, "changed\n")
		case strings.HasPrefix(line, "RESULT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), &result); err != nil {
				t.Errorf("result %q: %v", line, err)
			}
		default:
			t.Logf("browser: %s", line)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dashboard test in Chromium failed: %v\n%s", err, stderr.String())
	}
	if result == nil {
		t.Fatalf("the browser script reported nothing\n%s", stderr.String())
	}
	audit, err := f.st.ListAudit(context.Background(), 0, 1)
	if err != nil || len(audit) != 1 || audit[0].Action != "quarantine" || audit[0].Target != hostName(nIncidents) || audit[0].Actor != "alice" {
		t.Errorf("the dashboard's quarantine is not in the audit log as alice's: %+v %v", audit, err)
	}
	t.Logf("in Chromium with %d hosts and %d incidents: first list %.0f ms, open incident %.0f ms, live update %.0f ms",
		nHosts, nIncidents, result["listMs"], result["openIncidentMs"], result["liveUpdateMs"])
}

package appliance

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/verifier/config"
)

// unitFile is the appliance's systemd unit.
const unitFile = "../../dist/bootgate.service"

// maxExposure is the highest `systemd-analyze security` exposure the unit
// may have (0 is fully locked down, 10 unprotected; systemd calls below
// 2.0 "OK"). The unit scores 1.7: what remains is what the appliance is
// for (the host's network, INET/NETLINK sockets, CAP_NET_ADMIN and
// CAP_NET_BIND_SERVICE as ambient capabilities, hence no PrivateUsers).
const maxExposure = 2.0

// unitDirectives reads the unit's Key=Value lines (all values of
// repeated keys, in order).
func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TestUnitDirectives: the unit waits for READY=1, reloads with SIGHUP (the
// policy), grants only the capabilities it needs, and gives
// RLIMIT_NOFILE room for the default caps' descriptor budget.
func TestUnitDirectives(t *testing.T) {
	d := unitDirectives(t)
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "User": "bootgate", "StateDirectory": "bootgate",
		"CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "AmbientCapabilities": "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
	} {
		if got := strings.Join(d[k], " | "); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	if r := strings.Join(d["ExecReload"], " | "); r != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%s, want /bin/kill -HUP $MAINPID (the appliance reloads its policy on SIGHUP)", r)
	}
	limit, err := strconv.ParseUint(strings.Join(d["LimitNOFILE"], ""), 10, 64)
	if err != nil {
		t.Fatalf("LimitNOFILE: %v", err)
	}
	b, err := planFiles(&config.Config{Admin: &config.Admin{}, BootFiles: &config.BootFiles{Dir: "b", TFTP: "x", HTTP: "y"}}, limit)
	if err != nil {
		t.Fatalf("LimitNOFILE=%d does not fit the default caps: %v", limit, err)
	}
	t.Logf("LimitNOFILE=%d, the default caps need %d", limit, b.Need())
}

// TestUnitSystemdAnalyze checks the unit with systemd-analyze: verify
// must accept it, and security --offline=yes must rate its exposure at
// most maxExposure.
func TestUnitSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: cannot verify the unit")
	}
	// verify checks that ExecStart exists: point it at this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "bootgate.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/bootgate"), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("bootgate.service")) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for bootgate\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if exposure > maxExposure {
		t.Fatalf("exposure %.1f above %.1f:\n%s", exposure, maxExposure, out)
	}
	t.Logf("systemd-analyze security: exposure %.1f (at most %.1f)", exposure, maxExposure)
}

package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/bootgate/bootgate/internal/nettest"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// topology: a quarantine-side host (10.24.0.100) and a production host
// (10.25.0.2), each in its own namespace, routed through the appliance's
// namespace, whose boot interface is "boot".
type topology struct{ appl, boot, prod string }

func newTopology(t *testing.T) topology {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	tp := topology{appl: "bga-" + id, boot: "bgb-" + id, prod: "bgp-" + id}
	for _, ns := range []string{tp.appl, tp.boot, tp.prod} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "link", "add", "boot", "netns", tp.appl, "type", "veth", "peer", "name", "eth0", "netns", tp.boot)
	sh(t, "ip", "link", "add", "prod", "netns", tp.appl, "type", "veth", "peer", "name", "eth0", "netns", tp.prod)
	for _, c := range [][]string{
		{tp.appl, "addr", "add", "10.24.0.1/24", "dev", "boot"}, {tp.appl, "link", "set", "boot", "up"},
		{tp.appl, "addr", "add", "10.25.0.1/24", "dev", "prod"}, {tp.appl, "link", "set", "prod", "up"},
		{tp.boot, "addr", "add", "10.24.0.100/24", "dev", "eth0"}, {tp.boot, "link", "set", "eth0", "up"},
		{tp.boot, "route", "add", "default", "via", "10.24.0.1"},
		{tp.prod, "addr", "add", "10.25.0.2/24", "dev", "eth0"}, {tp.prod, "link", "set", "eth0", "up"},
		{tp.prod, "route", "add", "default", "via", "10.25.0.1"},
	} {
		sh(t, append([]string{"ip", "-n", c[0]}, c[1:]...)...)
	}
	sh(t, "ip", "netns", "exec", tp.appl, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return tp
}

// reach reports whether the boot-side host reaches the production host by
// ICMP and by TCP (a listener on the production host).
func (tp topology) reach(t *testing.T) (icmp, tcp bool) {
	t.Helper()
	icmp = exec.Command("ip", "netns", "exec", tp.boot, "busybox", "ping", "-c", "1", "-W", "1", "10.25.0.2").Run() == nil
	tcp = nettest.Reaches(t, tp.boot, nettest.Listen(t, tp.prod, "10.25.0.2:0"), 1, time.Second)
	return icmp, tcp
}

// macOf returns the MAC address of dev in the namespace ns.
func macOf(t *testing.T, ns, dev string) net.HardwareAddr {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s: %v\n%s", dev, err, out)
	}
	m := regexp.MustCompile(`link/ether ([0-9a-f:]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no MAC in %q", out)
	}
	hw, err := net.ParseMAC(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// listen starts a TCP listener on the production host that accepts and
// closes connections until the test ends, and returns its address.
func (tp topology) listen(t *testing.T) string {
	t.Helper()
	return nettest.Listen(t, tp.prod, "10.25.0.2:0")
}

// dialer returns a function that tries one TCP connection from the
// boot-side host to addr, waiting at most wait.
func (tp topology) dialer(t *testing.T, addr string, wait time.Duration) func() bool {
	return func() bool { return nettest.Reaches(t, tp.boot, addr, 1, wait) }
}

func gatewayIn(t *testing.T, tp topology, timeout time.Duration) *Gateway {
	t.Helper()
	ns, err := netns.GetFromName(tp.appl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() }) // the gateway uses it until the end
	g, err := New("boot", int(ns), timeout)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestAdmissionAtTheGateway(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox is needed for ping")
	}
	tp := newTopology(t)
	g := gatewayIn(t, tp, time.Minute)
	host := Host{IP: net.ParseIP("10.24.0.100"), MAC: macOf(t, tp.boot, "eth0")}
	other := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 1}
	for _, step := range []struct {
		name  string
		set   []Host
		reach bool
	}{
		{"quarantined", nil, false},
		{"admitted", []Host{host}, true},
		// The host's address admitted for another MAC: the host's own
		// packets (its MAC) are dropped.
		{"address admitted for another MAC", []Host{{IP: host.IP, MAC: other}}, false},
		// The host's MAC admitted with another address.
		{"MAC admitted with another address", []Host{{IP: net.ParseIP("10.24.0.101"), MAC: host.MAC}}, false},
		{"revoked", []Host{{IP: net.ParseIP("10.24.0.101"), MAC: other}}, false},
		{"admitted again", []Host{host, host}, true},
	} {
		if err := g.Sync(step.set); err != nil {
			t.Fatal(err)
		}
		icmp, tcp := tp.reach(t)
		if icmp != step.reach || tcp != step.reach {
			t.Errorf("%s: ICMP %v, TCP %v; want %v", step.name, icmp, tcp, step.reach)
		}
	}
	// A bad host changes nothing.
	if err := g.Sync([]Host{host, {IP: net.ParseIP("::1"), MAC: host.MAC}}); !errors.Is(err, ErrBadHost) {
		t.Errorf("IPv6 host: %v, want ErrBadHost", err)
	}
	if err := g.Sync([]Host{{IP: host.IP, MAC: host.MAC[:4]}}); !errors.Is(err, ErrBadHost) {
		t.Errorf("short MAC: %v, want ErrBadHost", err)
	}
	if icmp, tcp := tp.reach(t); !icmp || !tcp {
		t.Errorf("a refused Sync changed the set: ICMP %v, TCP %v", icmp, tcp)
	}
	// Stopping fails closed.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if icmp, tcp := tp.reach(t); icmp || tcp {
		t.Errorf("after Close the host still reaches production: ICMP %v, TCP %v", icmp, tcp)
	}
	// The appliance itself stays reachable from quarantine.
	if exec.Command("ip", "netns", "exec", tp.boot, "busybox", "ping", "-c", "1", "-W", "1", "10.24.0.1").Run() != nil {
		t.Error("a quarantined host cannot reach the appliance")
	}
}

// TestSyncRearmsTimeouts: elements live Timeout after the Sync that wrote
// them; syncing more often than that keeps a host forwarded well past one
// timeout, and stopping the syncs closes the gate.
func TestSyncRearmsTimeouts(t *testing.T) {
	tp := newTopology(t)
	const timeout = time.Second
	g := gatewayIn(t, tp, timeout)
	dial := tp.dialer(t, tp.listen(t), 300*time.Millisecond)
	host := Host{IP: net.ParseIP("10.24.0.100"), MAC: macOf(t, tp.boot, "eth0")}
	start := time.Now()
	for i := 0; i < 12 && time.Since(start) < 3*timeout+5*time.Second; i++ {
		if err := g.Sync([]Host{host}); err != nil {
			t.Fatal(err)
		}
		if !dial() {
			t.Fatalf("sync %d (%v after the first): the host is not forwarded", i, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(timeout / 4)
	}
	last := time.Now()
	if err := g.Sync([]Host{host}); err != nil {
		t.Fatal(err)
	}
	stop, ok := waitClosed(dial, 3*timeout+5*time.Second)
	if !ok {
		t.Fatalf("still forwarded %v after the last sync (timeout %v)", time.Since(last), timeout)
	}
	t.Logf("forwarding stopped %v after the last sync (timeout %v)", stop.Sub(last).Round(10*time.Millisecond), timeout)
}

// waitClosed polls dial (at most 200 times, and until limit has passed)
// until a connection fails, and returns when that attempt started.
func waitClosed(dial func() bool, limit time.Duration) (time.Time, bool) {
	start := time.Now()
	for i := 0; i < 200 && time.Since(start) < limit; i++ {
		at := time.Now()
		if !dial() {
			return at, true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Time{}, false
}

// Environment of the helper process of TestFailsClosedAfterSIGKILL.
const (
	helperEnv = "BOOTGATE_GATEWAY_HELPER" // the appliance namespace
	helperMAC = "BOOTGATE_GATEWAY_HELPER_MAC"
)

// Helper timing: the helper syncs every helperSync with elements living
// helperTimeout (3 × the sync interval, as the appliance does).
const (
	helperSync    = 500 * time.Millisecond
	helperTimeout = 3 * helperSync
)

// TestGatewayHelperProcess is not a test: run by TestFailsClosedAfterSIGKILL
// as a subprocess, it owns the gateway in the namespace it is given and
// syncs one admitted host every helperSync, as the appliance does, until
// it is killed (or a minute has passed).
func TestGatewayHelperProcess(t *testing.T) {
	ns := os.Getenv(helperEnv)
	if ns == "" {
		t.Skip("helper process of TestFailsClosedAfterSIGKILL")
	}
	mac, err := net.ParseMAC(os.Getenv(helperMAC))
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New("boot", int(h), helperTimeout)
	if err != nil {
		t.Fatal(err)
	}
	host := []Host{{IP: net.ParseIP("10.24.0.100"), MAC: mac}}
	for i := 0; i < int(time.Minute/helperSync); i++ {
		if err := g.Sync(host); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			fmt.Println("synced")
		}
		time.Sleep(helperSync)
	}
}

// TestFailsClosedAfterSIGKILL: the process that owns the gateway is killed
// with SIGKILL (it cannot empty the sets on its way out); forwarding of the
// host it admitted stops within the element timeout, measured with TCP
// connections through the forward path.
func TestFailsClosedAfterSIGKILL(t *testing.T) {
	tp := newTopology(t)
	dial := tp.dialer(t, tp.listen(t), 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGatewayHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+tp.appl, helperMAC+"="+macOf(t, tp.boot, "eth0").String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "synced" {
				ready <- true
				break
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the helper never synced")
	}
	// Forwarded while the owner lives, for longer than one timeout.
	for start := time.Now(); time.Since(start) < 2*helperTimeout; time.Sleep(200 * time.Millisecond) {
		if !dial() {
			t.Fatalf("not forwarded %v after the helper's first sync", time.Since(start))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	killed = true
	cmd.Wait()
	// The bound: the timeout after the last sync, which was at most one
	// sync interval before the kill. Asserted with a generous margin.
	const margin = 5 * time.Second
	stop, ok := waitClosed(dial, helperTimeout+margin)
	if !ok {
		t.Fatalf("still forwarded %v after SIGKILL (element timeout %v)", time.Since(killedAt), helperTimeout)
	}
	t.Logf("forwarding stopped %v after SIGKILL (sync %v, element timeout %v)", stop.Sub(killedAt).Round(10*time.Millisecond), helperSync, helperTimeout)
	// And stays stopped.
	time.Sleep(helperSync)
	if dial() {
		t.Error("forwarded again after the gate closed")
	}
}

// TestSyncManyHosts: a sync of 20 000 admitted hosts (beyond what the
// kernel's default netlink buffers hold, and beyond one 16-bit netlink
// attribute of elements) goes through in one transaction, and a second one
// re-arms them all.
func TestSyncManyHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	var r [3]byte
	rand.Read(r[:])
	name := "bgm-" + hex.EncodeToString(r[:])
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	g, err := New("boot", int(ns), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]Host, 20000)
	for i := range hosts {
		hosts[i] = Host{IP: net.IPv4(10, 30, byte(i>>8), byte(i)), MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}}
	}
	for i := range 2 {
		start := time.Now()
		if err := g.Sync(hosts); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		t.Logf("sync %d of %d hosts: %v", i, len(hosts), time.Since(start).Round(time.Millisecond))
	}
	out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "set", "inet", TableName, SetName).CombinedOutput()
	if err != nil {
		t.Skipf("nft not usable to count the elements: %v %s", err, out)
	}
	if n := strings.Count(string(out), "expires"); n != len(hosts) {
		t.Errorf("%d elements with a timeout in the set, want %d", n, len(hosts))
	}
}

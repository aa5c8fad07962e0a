package dhcpgate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/bootgate/bootgate/internal/nettest"
)

// pair is two network namespaces joined by a veth pair: the appliance's side
// ("s", 10.24.0.1/24) and a client's side ("c", unconfigured).
type pair struct {
	server, client string
	clientMAC      net.HardwareAddr
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newPair(t *testing.T) *pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	p := &pair{server: "bgs-" + id, client: "bgc-" + id}
	run(t, "ip", "netns", "add", p.server)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", p.server).Run() })
	run(t, "ip", "netns", "add", p.client)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", p.client).Run() })
	run(t, "ip", "link", "add", "vs"+id, "netns", p.server, "type", "veth", "peer", "name", "vc"+id, "netns", p.client)
	run(t, "ip", "-n", p.server, "addr", "add", "10.24.0.1/24", "dev", "vs"+id)
	run(t, "ip", "-n", p.server, "link", "set", "vs"+id, "up")
	run(t, "ip", "-n", p.client, "link", "set", "vc"+id, "up")
	out := run(t, "ip", "-n", p.client, "-o", "link", "show", "vc"+id)
	m := regexp.MustCompile(`link/ether ([0-9a-f:]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no MAC in %q", out)
	}
	p.clientMAC, _ = net.ParseMAC(m[1])
	return p
}

func (p *pair) serverIf() string { return "vs" + p.server[4:] }
func (p *pair) clientIf() string { return "vc" + p.client[4:] }

// serve runs the gate in the server namespace until the test ends.
func serve(t *testing.T, p *pair, s *Server) { serveOn(t, p.server, p.serverIf(), s) }

// serveOn runs the gate on ifname in the namespace ns until the test ends.
func serveOn(t *testing.T, ns, ifname string, s *Server) {
	var conn net.PacketConn
	nettest.InNS(t, ns, func() {
		c, err := server4.NewIPv4UDPConn(ifname, &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

var leaseRE = regexp.MustCompile(`(?:fixed-address|lease of) (\d+\.\d+\.\d+\.\d+)`)

// dhclient runs ISC dhclient once in the client namespace and returns the
// address it was given.
func dhclient(t *testing.T, p *pair) net.IP {
	t.Helper()
	return dhclientIn(t, p.client, p.clientIf())
}

// dhclientIn runs ISC dhclient once on ifname in the namespace ns and
// returns the address it was given (it configures nothing).
func dhclientIn(t *testing.T, ns, ifname string) net.IP {
	t.Helper()
	if _, err := exec.LookPath("dhclient"); err != nil {
		t.Skip("dhclient not installed (Debian package isc-dhcp-client)")
	}
	dir := t.TempDir()
	lf := filepath.Join(dir, "leases")
	cmd := exec.Command("ip", "netns", "exec", ns, "timeout", "30", "dhclient", "-1", "-v", "-lf", lf,
		"-pf", filepath.Join(dir, "pid"), "-sf", "/bin/true", ifname)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dhclient: %v\n%s", err, out)
	}
	exec.Command("ip", "netns", "exec", ns, "dhclient", "-x", "-pf", filepath.Join(dir, "pid")).Run()
	b, _ := os.ReadFile(lf)
	m := leaseRE.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("dhclient got no lease:\n%s\n%s", out, b)
	}
	return net.ParseIP(m[1])
}

// udhcpc runs busybox's udhcpc once and returns the address it was given.
func udhcpc(t *testing.T, p *pair) net.IP {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox not installed")
	}
	out, err := exec.Command("ip", "netns", "exec", p.client, "timeout", "30", "busybox", "udhcpc", "-i", p.clientIf(),
		"-n", "-q", "-f", "-s", "/bin/true", "-t", "5", "-T", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	m := leaseRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("udhcpc got no lease:\n%s", out)
	}
	return net.ParseIP(m[1])
}

// TestRealClients runs DHCP clients no one here wrote against the gate: an
// unknown host gets a quarantine lease, the same host once admitted a
// production lease, and garbage, unknown message types and a flood of
// DISCOVERs leave the server serving.
func TestRealClients(t *testing.T) {
	p := newPair(t)
	s, adm, _, _ := newTestServer(t)
	serve(t, p, s)

	if ip := dhclient(t, p); !s.cfg.Quarantine.Contains(ip) {
		t.Fatalf("dhclient, unknown host: %v, want the quarantine pool", ip)
	}
	adm.admit(p.clientMAC, true)
	if ip := udhcpc(t, p); !s.cfg.Production.Contains(ip) {
		t.Fatalf("udhcpc, admitted host: %v, want the production pool", ip)
	}

	// Garbage from the client side: random bytes, a truncated DISCOVER, an
	// unknown message type, and a bounded flood of DISCOVERs from made-up MACs.
	nettest.InNS(t, p.client, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dst := &net.UDPAddr{IP: net.IPv4(10, 24, 0, 1), Port: dhcpv4.ServerPort}
		run(t, "ip", "-n", p.client, "addr", "add", "10.24.0.77/24", "dev", p.clientIf())
		junk := make([]byte, 300)
		rand.Read(junk)
		c.WriteTo(junk, dst)
		disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 1})
		c.WriteTo(disc.ToBytes()[:100], dst)
		odd, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 2}, dhcpv4.WithMessageType(dhcpv4.MessageType(99)))
		c.WriteTo(odd.ToBytes(), dst)
		deadline := time.Now().Add(2 * time.Second)
		for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
			hw := net.HardwareAddr{2, 1, 0, byte(i >> 16), byte(i >> 8), byte(i)}
			d, _ := dhcpv4.NewDiscovery(hw)
			c.WriteTo(d.ToBytes(), dst)
		}
		run(t, "ip", "-n", p.client, "addr", "flush", "dev", p.clientIf())
	})
	time.Sleep(500 * time.Millisecond)
	if ip := dhclient(t, p); !s.cfg.Production.Contains(ip) {
		t.Fatalf("after the garbage and the flood: %v", ip)
	}
	t.Logf("received %d, malformed %d, dropped %d, offers %d, acks %d, naks %d",
		s.Stats.Received.Load(), s.Stats.Malformed.Load(), s.Stats.Dropped.Load(), s.Stats.Offers.Load(), s.Stats.Acks.Load(), s.Stats.Naks.Load())
	if s.Stats.Malformed.Load() < 2 {
		t.Errorf("malformed packets not counted: %d", s.Stats.Malformed.Load())
	}
}

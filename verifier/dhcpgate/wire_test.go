package dhcpgate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"

	"github.com/bootgate/bootgate/internal/nettest"
	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/gateway"
	"github.com/bootgate/bootgate/verifier/store"
)

// lan is a boot network segment: the appliance's namespace with a bridge
// "boot" (10.24.0.1/24) and a link "prod" to a production host
// (10.25.0.2), and two machines on the bridge, host and intruder, each
// with an unconfigured eth0.
type lan struct {
	appl, prod, host, intruder string
	hostMAC, intruderMAC       net.HardwareAddr
}

func linkMAC(t *testing.T, ns, dev string) net.HardwareAddr {
	t.Helper()
	out := run(t, "ip", "-n", ns, "-o", "link", "show", dev)
	m := regexp.MustCompile(`link/ether ([0-9a-f:]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no MAC in %q", out)
	}
	hw, _ := net.ParseMAC(m[1])
	return hw
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and nftables need root")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	n := &lan{appl: "bgla-" + id, prod: "bglp-" + id, host: "bglh-" + id, intruder: "bgli-" + id}
	for _, ns := range []string{n.appl, n.prod, n.host, n.intruder} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", n.appl, "link", "add", "boot", "type", "bridge")
	run(t, "ip", "-n", n.appl, "addr", "add", "10.24.0.1/24", "dev", "boot")
	run(t, "ip", "-n", n.appl, "link", "set", "boot", "up")
	for i, ns := range []string{n.host, n.intruder} {
		port := []string{"ph", "pi"}[i]
		run(t, "ip", "link", "add", port, "netns", n.appl, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", n.appl, "link", "set", port, "master", "boot")
		run(t, "ip", "-n", n.appl, "link", "set", port, "up")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	run(t, "ip", "link", "add", "prod", "netns", n.appl, "type", "veth", "peer", "name", "eth0", "netns", n.prod)
	run(t, "ip", "-n", n.appl, "addr", "add", "10.25.0.1/24", "dev", "prod")
	run(t, "ip", "-n", n.appl, "link", "set", "prod", "up")
	run(t, "ip", "-n", n.prod, "addr", "add", "10.25.0.2/24", "dev", "eth0")
	run(t, "ip", "-n", n.prod, "link", "set", "eth0", "up")
	run(t, "ip", "-n", n.prod, "route", "add", "default", "via", "10.25.0.1")
	run(t, "ip", "netns", "exec", n.appl, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	n.hostMAC, n.intruderMAC = linkMAC(t, n.host, "eth0"), linkMAC(t, n.intruder, "eth0")
	return n
}

// configure gives ns's eth0 the address ip/24 and a default route through
// the appliance, or (ip nil) removes them.
func configure(t *testing.T, ns string, ip net.IP) {
	t.Helper()
	run(t, "ip", "-n", ns, "addr", "flush", "dev", "eth0")
	if ip != nil {
		run(t, "ip", "-n", ns, "addr", "add", ip.String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", ns, "route", "add", "default", "via", "10.24.0.1")
	}
}

// listenProd accepts (and closes) TCP connections on the production host
// until the test ends.
func listenProd(t *testing.T, ns string) string {
	t.Helper()
	return nettest.Listen(t, ns, "10.25.0.2:0")
}

// reaches reports whether a TCP connection from ns to addr succeeds (two
// tries of 500 ms).
func reaches(t *testing.T, ns, addr string) bool {
	t.Helper()
	return nettest.Reaches(t, ns, addr, 2, 500*time.Millisecond)
}

// rawClient is a DHCP client on ns's eth0 that puts hw in chaddr, whatever
// the interface's own MAC is.
func rawClient(t *testing.T, ns string, hw net.HardwareAddr) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	nettest.InNS(t, ns, func() {
		var err error
		c, err = nclient4.New("eth0", nclient4.WithHWAddr(hw), nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSpoofedMACOnTheWire: a host is admitted and forwarded; an intruder on
// the same segment copies its MAC into DHCP REQUESTs (for another
// production address, and for the host's own), sends RELEASE and DECLINE
// of the host's address under its own MAC, and uses the addresses it tried
// for with its own MAC. It gets no forwarded address; the host keeps its
// lease and its forwarding. (An intruder that also sends frames with the
// host's MAC and address is a neighbour spoofing both: only switch-port
// enforcement stops that, docs/dhcp.md.)
func TestSpoofedMACOnTheWire(t *testing.T) {
	n := newLAN(t)
	l := mustOpen(t, filepath.Join(t.TempDir(), "l.db"))
	t.Cleanup(func() { l.Close() })
	hosts := fakeHosts{"host-a": store.HostAdmitted}
	s, err := New(testConfig(), l, StoreAdmission{Leases: l, Hosts: hosts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, n.appl, "boot", s)
	ns, err := netns.GetFromName(n.appl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	gw, err := gateway.New("boot", int(ns), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sync := func() {
		t.Helper()
		adm, err := l.AdmittedLeases(context.Background(), time.Now(), hosts)
		if err != nil {
			t.Fatal(err)
		}
		var hs []gateway.Host
		for _, le := range adm {
			hs = append(hs, gateway.Host{IP: le.IP, MAC: le.MAC})
		}
		if err := gw.Sync(hs); err != nil {
			t.Fatal(err)
		}
	}
	prod := listenProd(t, n.prod)

	// The host: quarantine lease, attestation from it, production lease.
	q := dhclientIn(t, n.host, "eth0")
	if err := l.attested(context.Background(), "host-a", q, time.Now()); err != nil {
		t.Fatal(err)
	}
	p := dhclientIn(t, n.host, "eth0")
	if !s.cfg.Production.Contains(p) {
		t.Fatalf("admitted host got %v", p)
	}
	configure(t, n.host, p)
	sync()
	if !reaches(t, n.host, prod) {
		t.Fatal("the admitted host is not forwarded")
	}
	hostKeeps := func(step string) {
		t.Helper()
		sync()
		if h := holder(l, p); h != n.hostMAC.String() {
			t.Fatalf("%s: the host's address %v is held by %q", step, p, h)
		}
		run(t, "ip", "-n", n.appl, "neigh", "flush", "dev", "boot") // see below
		if !reaches(t, n.host, prod) {
			t.Fatalf("%s: the host lost its forwarding", step)
		}
	}

	spoof := rawClient(t, n.intruder, n.hostMAC)
	ctx := context.Background()
	other := net.IPv4(10, 24, 0, 240)
	req := request(n.hostMAC, dhcpv4.WithBroadcast(true), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(other)))
	if r, err := spoof.SendAndRead(ctx, nclient4.DefaultServers, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)); err != nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST for %v with the host's MAC: %v %v, want a NAK", other, r, err)
	}
	hostKeeps("REQUEST for another address")
	// For the host's own address: the lease is only renewed.
	req = request(n.hostMAC, dhcpv4.WithBroadcast(true), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p)))
	if r, err := spoof.SendAndRead(ctx, nclient4.DefaultServers, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)); err != nil || !r.YourIPAddr.Equal(p) {
		t.Fatalf("REQUEST for the host's address with its MAC: %v %v", r, err)
	}
	hostKeeps("REQUEST for the host's address")
	// A full exchange with the copied MAC gets the host's address again.
	if lease, err := spoof.Request(ctx); err != nil || !lease.ACK.YourIPAddr.Equal(p) {
		t.Fatalf("DISCOVER/REQUEST with the host's MAC: %v %v", lease, err)
	}
	hostKeeps("a full exchange")

	// RELEASE and DECLINE of the host's address under the intruder's own MAC.
	own := rawClient(t, n.intruder, n.intruderMAC)
	for _, m := range []*dhcpv4.DHCPv4{
		mustNew(n.intruderMAC, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(p)),
		mustNew(n.intruderMAC, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(p))),
	} {
		if r, err := own.SendAndRead(ctx, nclient4.DefaultServers, m, nil); !errors.Is(err, nclient4.ErrNoResponse) {
			t.Fatalf("%v: answered %v %v", m.MessageType(), r, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.Refused.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if s.Stats.Refused.Load() < 2 {
		t.Fatalf("%d RELEASE/DECLINE refused, want 2", s.Stats.Refused.Load())
	}
	hostKeeps("RELEASE and DECLINE from a stranger")

	// RELEASE of the host's address under the host's own MAC, one datagram
	// not sent from that address: dropped (RFC 2131 §4.4.6).
	refused := s.Stats.Refused.Load()
	if r, err := spoof.SendAndRead(ctx, nclient4.DefaultServers, mustNew(n.hostMAC, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(p)), nil); !errors.Is(err, nclient4.ErrNoResponse) {
		t.Fatalf("RELEASE with the host's MAC: answered %v %v", r, err)
	}
	for deadline := time.Now().Add(5 * time.Second); s.Stats.Refused.Load() == refused && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if s.Stats.Refused.Load() == refused { // the client retries: one or more
		t.Fatal("the RELEASE with the host's MAC from another source was not refused")
	}
	hostKeeps("RELEASE with the host's MAC and address from another source")

	// The intruder uses the refused address, then the host's, with its own
	// MAC: nothing is forwarded.
	for _, ip := range []net.IP{other, p} {
		configure(t, n.intruder, ip)
		if reaches(t, n.intruder, prod) {
			t.Errorf("the intruder is forwarded with %v and its own MAC", ip)
		}
		configure(t, n.intruder, nil)
		// Using the host's address, the intruder also answered ARP for it
		// and the appliance may send the host's return traffic to the
		// intruder's MAC until the entry is renewed: that is an L2 attack
		// only the switch stops. hostKeeps flushes the neighbour entries.
		hostKeeps("the intruder using " + ip.String())
	}
}

// udpIn opens a UDP socket on addr in the namespace ns.
func udpIn(t *testing.T, ns string, addr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	nettest.InNS(t, ns, func() {
		var err error
		if c, err = net.ListenUDP("udp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// readDHCP returns the next DHCP message on c with transaction ID xid, or
// nil when none comes within wait.
func readDHCP(c *net.UDPConn, xid dhcpv4.TransactionID, wait time.Duration) *dhcpv4.DHCPv4 {
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for i := 0; i < 100; i++ {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return nil
		}
		if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.TransactionID == xid {
			return m
		}
	}
	return nil
}

// TestRelaysOnTheWire: a relay agent (the client namespace at 10.24.0.77)
// forwards requests with option 82 to the gate. Until it is configured its
// requests get no answer; once configured, the lease records its circuit
// and remote IDs. A request naming the relay but sent from another
// address, or naming an unknown relay, gets no answer.
func TestRelaysOnTheWire(t *testing.T) {
	p := newPair(t)
	run(t, "ip", "-n", p.client, "addr", "add", "10.24.0.77/24", "dev", p.clientIf())
	run(t, "ip", "-n", p.client, "addr", "add", "10.24.0.78/24", "dev", p.clientIf())
	l := mustOpen(t, filepath.Join(t.TempDir(), "l.db"))
	t.Cleanup(func() { l.Close() })
	cfg := testConfig()
	cfg.Relays = []net.IP{net.IPv4(10, 24, 0, 77)}
	s, err := New(cfg, l, &fakeAdmission{set: map[string]bool{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, p, s)
	relay := udpIn(t, p.client, &net.UDPAddr{IP: net.IPv4(10, 24, 0, 77), Port: dhcpv4.ServerPort})
	impostor := udpIn(t, p.client, &net.UDPAddr{IP: net.IPv4(10, 24, 0, 78), Port: dhcpv4.ServerPort})
	server := &net.UDPAddr{IP: net.IPv4(10, 24, 0, 1), Port: dhcpv4.ServerPort}
	opt82 := dhcpv4.OptRelayAgentInfo(
		dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte("Ethernet1/7\x07")),
		dhcpv4.OptGeneric(dhcpv4.AgentRemoteIDSubOption, []byte("leaf-3")))
	hw := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 1}

	for _, tc := range []struct {
		name   string
		from   *net.UDPConn
		giaddr net.IP
	}{
		{"unknown relay", relay, net.IPv4(10, 24, 0, 99)},
		{"configured relay's address from another source", impostor, net.IPv4(10, 24, 0, 77)},
	} {
		disc, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithGatewayIP(tc.giaddr), dhcpv4.WithOption(opt82))
		if _, err := tc.from.WriteTo(disc.ToBytes(), server); err != nil {
			t.Fatal(err)
		}
		if m := readDHCP(tc.from, disc.TransactionID, 1500*time.Millisecond); m != nil {
			t.Errorf("%s: answered %v", tc.name, m.MessageType())
		}
		if m := readDHCP(relay, disc.TransactionID, 100*time.Millisecond); m != nil {
			t.Errorf("%s: the relay got %v", tc.name, m.MessageType())
		}
	}
	if s.Stats.UnknownRelay.Load() != 2 {
		t.Errorf("%d requests from unknown relays counted, want 2", s.Stats.UnknownRelay.Load())
	}

	disc, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithGatewayIP(net.IPv4(10, 24, 0, 77)), dhcpv4.WithOption(opt82))
	relay.WriteTo(disc.ToBytes(), server)
	offer := readDHCP(relay, disc.TransactionID, 3*time.Second)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("configured relay: no OFFER (%v)", offer)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithGatewayIP(net.IPv4(10, 24, 0, 77)), dhcpv4.WithOption(opt82))
	relay.WriteTo(req.ToBytes(), server)
	ack := readDHCP(relay, req.TransactionID, 3*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("configured relay: no ACK (%v)", ack)
	}
	if ri := ack.RelayAgentInfo(); ri == nil || string(ri.Get(dhcpv4.AgentCircuitIDSubOption)) != "Ethernet1/7\x07" {
		t.Errorf("option 82 not echoed: %v", ack.Options.Get(dhcpv4.OptionRelayAgentInformation))
	}
	le, err := l.ByIP(context.Background(), ack.YourIPAddr, time.Now())
	if err != nil || le.Relay == nil || string(le.Relay.RemoteID) != "leaf-3" || textsafe.Bytes(le.Relay.CircuitID) != `Ethernet1/7\x07` {
		t.Fatalf("lease %+v (%v): option 82 not recorded", le, err)
	}
	t.Logf("lease %v for %v, %s", le.IP, le.MAC, le.Relay)
}

// TestDeclinesOnTheWire: made-up clients on the wire each take an offer and
// decline it; at most MaxDeclined addresses are set aside and dhclient
// still gets a lease. Then a stranger's RELEASE and DECLINE of that lease,
// and a DECLINE of an address outside every pool, change nothing.
func TestDeclinesOnTheWire(t *testing.T) {
	p := newPair(t)
	s, _, l, _ := newTestServer(t)
	serve(t, p, s)
	run(t, "ip", "-n", p.client, "addr", "add", "10.24.0.77/24", "dev", p.clientIf())
	c := udpIn(t, p.client, &net.UDPAddr{Port: dhcpv4.ClientPort})
	server := &net.UDPAddr{IP: net.IPv4(10, 24, 0, 1), Port: dhcpv4.ServerPort}
	start := time.Now()
	offers := 0
	for i := 0; i < 50 && time.Since(start) < 30*time.Second; i++ {
		hw := net.HardwareAddr{0x02, 0xdc, 0, 0, 0, byte(i)}
		disc, _ := dhcpv4.NewDiscovery(hw)
		c.WriteTo(disc.ToBytes(), server)
		offer := readDHCP(c, disc.TransactionID, time.Second)
		if offer == nil {
			continue
		}
		offers++
		dec := mustNew(hw, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)))
		c.WriteTo(dec.ToBytes(), server)
	}
	if offers < 40 {
		t.Fatalf("only %d of 50 DISCOVERs offered", offers)
	}
	time.Sleep(300 * time.Millisecond)
	if n := countRows(t, l, `SELECT COUNT(*) FROM dhcp_leases WHERE pool = 'declined'`); n > MaxDeclined(&s.cfg.Quarantine) {
		t.Fatalf("%d addresses declined; the pool allows %d", n, MaxDeclined(&s.cfg.Quarantine))
	}
	c.Close() // dhclient needs the port
	run(t, "ip", "-n", p.client, "addr", "flush", "dev", p.clientIf())
	ip := dhclient(t, p)
	if !s.cfg.Quarantine.Contains(ip) {
		t.Fatalf("after the DECLINE flood dhclient got %v", ip)
	}

	run(t, "ip", "-n", p.client, "addr", "add", "10.24.0.77/24", "dev", p.clientIf())
	c = udpIn(t, p.client, &net.UDPAddr{Port: dhcpv4.ClientPort})
	stranger := net.HardwareAddr{0x02, 0xdc, 0, 0, 1, 0}
	refused := s.Stats.Refused.Load()
	for _, m := range []*dhcpv4.DHCPv4{
		mustNew(stranger, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(ip)),
		mustNew(stranger, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))),
		mustNew(p.clientMAC, dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 9)))),
	} {
		c.WriteTo(m.ToBytes(), server)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.Refused.Load() < refused+3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := s.Stats.Refused.Load() - refused; got != 3 {
		t.Errorf("%d of 3 messages refused", got)
	}
	if holder(l, ip) != p.clientMAC.String() {
		t.Errorf("dhclient's lease of %v is held by %q after a stranger's RELEASE and DECLINE", ip, holder(l, ip))
	}
	if n := countRows(t, l, fmt.Sprintf(`SELECT COUNT(*) FROM dhcp_leases WHERE ip = %d`, ip4(net.IPv4(192, 0, 2, 9)))); n != 0 {
		t.Error("a DECLINE outside every pool was stored")
	}
}

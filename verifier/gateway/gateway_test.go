package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
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
	var ln net.Listener
	nettest.InNS(t, tp.prod, func() {
		var err error
		if ln, err = net.Listen("tcp4", "10.25.0.2:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	nettest.InNS(t, tp.boot, func() {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), time.Second)
		if err == nil {
			tcp = true
			c.Close()
		}
	})
	return icmp, tcp
}

func TestAdmissionAtTheGateway(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox is needed for ping")
	}
	tp := newTopology(t)
	ns, err := netns.GetFromName(tp.appl)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	g, err := New("boot", int(ns))
	if err != nil {
		t.Fatal(err)
	}
	host := net.ParseIP("10.24.0.100")
	for _, step := range []struct {
		name  string
		set   []net.IP
		reach bool
	}{
		{"quarantined", nil, false},
		{"admitted", []net.IP{host}, true},
		{"revoked", []net.IP{net.ParseIP("10.24.0.101")}, false},
		{"admitted again", []net.IP{host}, true},
	} {
		if err := g.Sync(step.set); err != nil {
			t.Fatal(err)
		}
		icmp, tcp := tp.reach(t)
		if icmp != step.reach || tcp != step.reach {
			t.Errorf("%s: ICMP %v, TCP %v; want %v", step.name, icmp, tcp, step.reach)
		}
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

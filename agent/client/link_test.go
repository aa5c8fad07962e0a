package client

import (
	"net"
	"net/netip"
	"testing"
)

// TestLocalLink: the link of a connection is its local IPv4 address and
// that interface's MAC (six zero bytes for loopback); anything else is an
// error, never a made-up link.
func TestLocalLink(t *testing.T) {
	mac, ip, err := LocalLink(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
	if err != nil || ip != netip.MustParseAddr("127.0.0.1") || mac.String() != "00:00:00:00:00:00" {
		t.Errorf("LocalLink(127.0.0.1) = %s %s %v, want the loopback link", mac, ip, err)
	}
	for _, c := range []struct {
		name string
		addr net.Addr
	}{
		{"IPv6", &net.TCPAddr{IP: net.IPv6loopback, Port: 40000}},
		{"no interface holds it", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 77), Port: 40000}},
		{"not TCP", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}},
		{"none", nil},
	} {
		if mac, ip, err := LocalLink(c.addr); err == nil {
			t.Errorf("%s: LocalLink(%v) = %s %s, want an error", c.name, c.addr, mac, ip)
		}
	}
}

package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Limits
		ok   bool
	}{
		{"ok", Limits{Total: 4, PerSource: 2}, true},
		{"equal", Limits{Total: 1, PerSource: 1}, true},
		{"zero total", Limits{PerSource: 1}, false},
		{"zero per source", Limits{Total: 1}, false},
		{"negative", Limits{Total: -1, PerSource: -1}, false},
		{"per source above total", Limits{Total: 2, PerSource: 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrLimits)) {
				t.Fatalf("Validate(%+v) = %v", tc.l, err)
			}
		})
	}
}

func TestCounterCaps(t *testing.T) {
	c, err := NewCounter(Limits{Total: 3, PerSource: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, b, d := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	for i := 0; i < 2; i++ {
		if !c.Acquire(a) {
			t.Fatalf("acquire %d refused within the per-source cap", i+1)
		}
	}
	if c.Acquire(a) {
		t.Fatal("the per-source cap let a third one in")
	}
	if !c.Acquire(b) {
		t.Fatal("another source refused within the total")
	}
	if c.Acquire(d) {
		t.Fatal("the total cap let a fourth one in")
	}
	if got := c.Shed(); got != 2 {
		t.Errorf("Shed = %d, want 2", got)
	}
	c.Release(a)
	if !c.Acquire(d) {
		t.Fatal("a released slot was not reusable")
	}
	c.Release(a)
	c.Release(b)
	c.Release(d)
	c.Release(d) // unbalanced: ignored
	if total, sources := c.Active(); total != 0 || sources != 0 {
		t.Fatalf("after release: %d active from %d sources, want none (no entries left behind)", total, sources)
	}
}

func TestSource(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 1, Zone: "eth0"}, "2001:db8:1:2::"},
		{&net.UnixAddr{Name: "@x", Net: "unix"}, "invalid IP"},
	} {
		if got := Source(tc.addr).String(); got != tc.want {
			t.Errorf("Source(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// shed dials addr from src and reports whether the peer closed the
// connection at once (a reset may already fail the dial).
func shed(t *testing.T, src, addr string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return true
		}
		t.Fatal(err)
	}
	defer c.Close()
	return closedByPeer(c)
}

// closedByPeer reports whether the peer closed c within half a second
// (a shed connection is closed within microseconds on loopback).
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestListenerShedsOverCaps: the n+1th connection from one source is
// closed at once; another source still gets in up to the total, and a
// closed connection frees its slot.
func TestListenerShedsOverCaps(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCounter(Limits{Total: 3, PerSource: 2})
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(raw, c, "test", nil)
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- conn
		}
	}()
	addr := raw.Addr().String()
	take := func() net.Conn {
		t.Helper()
		select {
		case conn := <-accepted:
			return conn
		case <-time.After(2 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	dialFrom(t, "127.0.0.1", addr)
	dialFrom(t, "127.0.0.1", addr)
	first, _ := take(), take()
	if !shed(t, "127.0.0.1", addr) {
		t.Fatal("the third connection from one source was not shed")
	}
	other := dialFrom(t, "127.0.0.2", addr)
	take()
	if closedByPeer(other) {
		t.Fatal("a connection from another source within the total was shed")
	}
	if !shed(t, "127.0.0.3", addr) {
		t.Fatal("a connection over the total was not shed")
	}
	first.Close()
	first.Close() // a second Close gives nothing back twice
	again := dialFrom(t, "127.0.0.3", addr)
	take()
	if closedByPeer(again) {
		t.Fatal("a freed slot was not reused")
	}
	if got := c.Shed(); got != 2 {
		t.Errorf("Shed = %d, want 2", got)
	}
	if total, _ := c.Active(); total != 3 {
		t.Errorf("active = %d, want 3", total)
	}
}

// TestLimitedConnPassesThrough: the wrapper keeps sendfile and half-close
// reachable.
func TestLimitedConnPassesThrough(t *testing.T) {
	var conn net.Conn = &limitedConn{}
	if _, ok := conn.(io.ReaderFrom); !ok {
		t.Error("no ReadFrom")
	}
	if _, ok := conn.(interface{ CloseWrite() error }); !ok {
		t.Error("no CloseWrite")
	}
}

func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:80":          "10.0.0.1",
		"[::ffff:10.0.0.1]:80": "10.0.0.1",
		"[2001:db8::1:2]:443":  "2001:db8::",
		"[fe80::1%eth0]:443":   "fe80::",
		"not an address":       "invalid IP",
		"10.0.0.1":             "invalid IP",
	} {
		if got := SourceOf(in).String(); got != want {
			t.Errorf("SourceOf(%q) = %s, want %s", in, got, want)
		}
	}
}

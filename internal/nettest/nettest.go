// Package nettest helps tests that use network namespaces.
package nettest

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// InNS runs f on an OS thread switched into the named network namespace.
// Sockets made in f stay in that namespace after f returns, so a test can
// listen or dial "from" a namespace and then use the socket anywhere.
func InNS(t testing.TB, name string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}

// Listen listens for TCP on addr ("10.25.0.2:0") in the named namespace,
// accepts and closes every connection until the test ends, and returns the
// listener's address: a production host the boot network may or may not
// reach.
func Listen(t testing.TB, ns, addr string) string {
	t.Helper()
	var ln net.Listener
	InNS(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// Reaches reports whether a TCP connection from the named namespace to addr
// succeeds, trying tries times with wait for each.
func Reaches(t testing.TB, ns, addr string, tries int, wait time.Duration) bool {
	t.Helper()
	ok := false
	InNS(t, ns, func() {
		for i := 0; i < tries && !ok; i++ {
			if c, err := net.DialTimeout("tcp4", addr, wait); err == nil {
				ok = true
				c.Close()
			}
		}
	})
	return ok
}

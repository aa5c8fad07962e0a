// Package nettest helps tests that use network namespaces.
package nettest

import (
	"runtime"
	"testing"

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

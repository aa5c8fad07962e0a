package dhcpgate

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestBoundTo: only a live, bound lease names its MAC; an offer, an expired
// lease, a declined or unknown address name none.
func TestBoundTo(t *testing.T) {
	l, err := OpenLeases(filepath.Join(t.TempDir(), "leases.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, now := context.Background(), time.Now()
	p := testConfig().Quarantine
	bound, offered := mac(1), mac(2)
	ip := net.IPv4(10, 24, 0, 100)
	if ok, err := l.Bind(ctx, &p, bound, ip, now, time.Minute); !ok || err != nil {
		t.Fatalf("Bind: %v %v", ok, err)
	}
	off, err := l.Offer(ctx, &p, offered, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := l.BoundTo(ctx, ip, now); !ok || got.String() != bound.String() {
		t.Errorf("BoundTo(%s) = %s %v, want %s", ip, got, ok, bound)
	}
	if got, ok := l.BoundTo(ctx, ip, now.Add(2*time.Minute)); ok {
		t.Errorf("BoundTo(%s) after expiry = %s, want none", ip, got)
	}
	if got, ok := l.BoundTo(ctx, off.IP, now); ok {
		t.Errorf("BoundTo(offered %s) = %s, want none", off.IP, got)
	}
	if err := l.Decline(ctx, &p, offered, off.IP, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, ok := l.BoundTo(ctx, off.IP, now); ok {
		t.Errorf("BoundTo(declined %s) = %s, want none", off.IP, got)
	}
	if got, ok := l.BoundTo(ctx, net.IPv4(10, 24, 0, 250), now); ok {
		t.Errorf("BoundTo(unknown) = %s, want none", got)
	}
}

package appliance

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/server"
)

type auditEntry struct{ actor, action, target, detail string }

type fakeAudit struct{ entries []auditEntry }

func (a *fakeAudit) RecordAction(_ context.Context, actor, action, target, detail string) error {
	a.entries = append(a.entries, auditEntry{actor, action, target, detail})
	return nil
}

// TestRecordedKeepsABoundMAC: a verdict recorded over a MAC bound to
// another host (two attestations over one link racing past the API's
// check) does not move the binding; the refusal is audited against the
// host whose verdict was recorded.
func TestRecordedKeepsABoundMAC(t *testing.T) {
	leases, err := dhcpgate.OpenLeases(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer leases.Close()
	ctx, now := context.Background(), time.Now()
	p := &dhcpgate.Pool{Name: dhcpgate.PoolQuarantine, Start: net.IPv4(10, 9, 0, 10).To4(), End: net.IPv4(10, 9, 0, 20).To4(), LeaseTime: time.Minute}
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 7}
	le, err := leases.Offer(ctx, p, mac, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := leases.Bind(ctx, p, mac, le.IP, now, time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	audit := &fakeAudit{}
	rec := (&dhcpGate{leases: leases}).recorded(slog.New(slog.NewTextHandler(io.Discard, nil)), audit)
	link := server.Link{MAC: mac, IP: netip.MustParseAddr(le.IP.String())}
	rec(ctx, "host-a", link)
	rec(ctx, "host-x", link)
	if id, _ := leases.HostOf(ctx, mac); id != "host-a" {
		t.Errorf("the MAC is bound to %q after another host's verdict, want host-a", id)
	}
	if len(audit.entries) != 1 {
		t.Fatalf("audit entries %+v, want one refused binding", audit.entries)
	}
	e := audit.entries[0]
	if e.actor != server.ActorAttestationAPI || e.action != ActionBindRefused || e.target != "host-x" || !strings.Contains(e.detail, mac.String()) {
		t.Errorf("audit entry %+v", e)
	}
}

// TestRelayWarnings: relays are warned about (quarantine-only service,
// unverified option 82); no relays, no warning.
func TestRelayWarnings(t *testing.T) {
	if w := relayWarnings(&config.DHCP{}); len(w) != 0 {
		t.Errorf("warnings without relays: %q", w)
	}
	w := relayWarnings(&config.DHCP{Relays: []string{"10.23.8.1"}})
	if len(w) != 1 {
		t.Fatalf("warnings %q, want one", w)
	}
	for _, want := range []string{"10.23.8.1", "quarantine-only", "never forwards", "unverified", "4.3.1"} {
		if !strings.Contains(w[0], want) {
			t.Errorf("warning %q does not say %q", w[0], want)
		}
	}
}

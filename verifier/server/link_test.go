package server_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// fakeLeases is a boot network's lease table: address → MAC, and the
// MACs' host bindings.
type fakeLeases struct {
	mu    sync.Mutex
	m     map[netip.Addr]net.HardwareAddr
	hosts map[string]string // MAC → host ID
}

func (l *fakeLeases) HostOf(_ context.Context, mac net.HardwareAddr) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[mac.String()], nil
}

func (l *fakeLeases) BoundTo(_ context.Context, ip net.IP, _ time.Time) (net.HardwareAddr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, _ := netip.AddrFromSlice(ip)
	mac, ok := l.m[a.Unmap()]
	return mac, ok
}

// recordedLinks keeps what Options.Recorded was told.
type recordedLinks struct {
	mu    sync.Mutex
	calls []recordedLink
}

type recordedLink struct {
	host string
	link server.Link
}

func (r *recordedLinks) record(_ context.Context, host string, link server.Link) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, recordedLink{host, link})
}

func (r *recordedLinks) get() []recordedLink {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedLink(nil), r.calls...)
}

// refusedAttempts returns the audit log's refused link attempts, newest
// first.
func refusedAttempts(t testing.TB, st *store.SQLite) []store.AuditEntry {
	t.Helper()
	all, err := st.ListAudit(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEntry
	for _, e := range all {
		if e.Action == server.ActionLinkRefused {
			out = append(out, e)
		}
	}
	return out
}

// wantLinkRefused posts q, wants 403 link_mismatch and one more refused
// attempt in the audit log naming host and every one of mentions, and that
// the session's nonce was consumed.
func wantLinkRefused(t *testing.T, f *fixture, q wire.QuoteRequest, host string, before int, mentions ...string) {
	t.Helper()
	status, body := f.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusForbidden, wire.CodeLinkMismatch)
	got := refusedAttempts(t, f.st)
	if len(got) != before+1 {
		t.Fatalf("audit log holds %d refused attempts, want %d", len(got), before+1)
	}
	e := got[0]
	if e.Actor != server.ActorAttestationAPI || e.Target != host {
		t.Errorf("refused attempt %+v, want by %s against host %s", e, server.ActorAttestationAPI, host)
	}
	for _, m := range mentions {
		if !strings.Contains(e.Detail, m) {
			t.Errorf("refused attempt %q does not name %q", e.Detail, m)
		}
	}
	status, body = f.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)
}

// hostUnchanged checks that the store holds exactly want for the host, and
// no more attestations and incidents than given.
func hostUnchanged(t *testing.T, f *fixture, want *store.Host, attestationsWant, incidentsWant int) {
	t.Helper()
	if as := attestations(t, f.st); len(as) != attestationsWant {
		t.Errorf("store holds %d attestations, want %d", len(as), attestationsWant)
	}
	if in := incidents(t, f.st); len(in) != incidentsWant {
		t.Errorf("store holds incidents %+v, want %d", in, incidentsWant)
	}
	if want == nil {
		if hs := hosts(t, f.st); len(hs) != 0 {
			t.Errorf("store holds hosts %+v, want none", hs)
		}
		return
	}
	h, err := f.st.Host(context.Background(), want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *h != *want {
		t.Errorf("host %+v, want it unchanged: %+v", h, want)
	}
}

// TestQuoteNotOverItsLink: quotes that the host's TPM signed, but not over
// the session's nonce and the link the request names, are refused with
// link_mismatch and audited; nothing is recorded against the host.
func TestQuoteNotOverItsLink(t *testing.T) {
	_, raw, h, rec, f := linkHost(t)
	id := h.hostID(t)
	otherMAC := net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}

	cases := []struct {
		name     string
		answer   func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest
		mentions []string
	}{
		{"quote over the bare nonce", func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest {
			q := h.answer(t, enr, raw)
			q.Quote, q.Signature, q.PCRs = h.quoteWith(t, h.ak, enr.Nonce, enr.PCRs)
			return q
		}, []string{"bare session nonce", "127.0.0.1"}},
		{"MAC changed after quoting", func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest {
			q := h.answer(t, enr, raw)
			q.MAC = otherMAC.String()
			return q
		}, []string{otherMAC.String()}},
		{"IP changed after quoting", func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest {
			q := h.answerFrom(t, enr, raw, loopbackMAC, netip.MustParseAddr("10.23.0.117"))
			q.IP = loopbackIP.String() // now the connection's source address
			return q
		}, []string{"127.0.0.1"}},
		{"quote over another session's nonce", func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest {
			q := h.answer(t, enr, raw)
			old := h.answer(t, f.enroll(t, h.enrollRequest()), raw)
			q.Quote, q.Signature, q.PCRs = old.Quote, old.Signature, old.PCRs
			return q
		}, nil},
		{"no link named", func(t *testing.T, enr wire.EnrollResponse) wire.QuoteRequest {
			q := h.answer(t, enr, raw)
			q.MAC, q.IP = "", ""
			return q
		}, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := c.answer(t, f.enroll(t, h.enrollRequest()))
			wantLinkRefused(t, f, q, id, i, c.mentions...)
			hostUnchanged(t, f, nil, 0, 0)
			if r := rec.get(); len(r) != 0 {
				t.Errorf("Recorded told of %+v", r)
			}
		})
	}
	// The same host, quoting over nonce and link, passes.
	if res := f.quote(t, h.answer(t, f.enroll(t, h.enrollRequest()), raw)); res.Verdict != wire.VerdictPass {
		t.Fatalf("honest attestation after the refusals: %+v", res)
	}
	if r := rec.get(); len(r) != 1 || r[0].host != id || !bytes.Equal(r[0].link.MAC, loopbackMAC) || r[0].link.IP != loopbackIP {
		t.Errorf("Recorded told of %+v, want host %s on the loopback link", r, id)
	}
}

// TestRelayedAttestation: a machine relays (NATs) an admitted host's honest
// attestation, so that it arrives from the relay's address. It is refused
// with link_mismatch and audited with both addresses; the host stays
// admitted with no incident, and the lease store learns nothing. With
// BehindNAT the source address is not compared.
func TestRelayedAttestation(t *testing.T) {
	ca, raw, h, rec, f := linkHost(t)
	id := h.hostID(t)

	first := f.quote(t, h.answer(t, f.enroll(t, h.enrollRequest()), raw))
	if first.Verdict != wire.VerdictPass {
		t.Fatalf("the host's own attestation: %+v", first)
	}
	admitted, err := f.st.Host(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	// The host leased 10.23.0.117 on its NIC; the relay's address is the
	// fixture's client address, 127.0.0.1.
	hostMAC, hostIP := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}, netip.MustParseAddr("10.23.0.117")
	for round := range 2 {
		q := h.answerFrom(t, f.enroll(t, h.enrollRequest()), raw, hostMAC, hostIP)
		wantLinkRefused(t, f, q, id, round, "source 127.0.0.1", hostIP.String(), hostMAC.String())
	}
	hostUnchanged(t, f, admitted, 1, 0)
	if r := rec.get(); len(r) != 1 {
		t.Errorf("Recorded told of %+v, want the host's own attestation only", r)
	}

	// Behind NAT the same request is the host's.
	nat := newFixture(t, ca.Roots(), func(o *server.Options) { o.Recorded = rec.record; o.BehindNAT = true })
	res := nat.quote(t, h.answerFrom(t, nat.enroll(t, h.enrollRequest()), raw, hostMAC, hostIP))
	if res.Verdict != wire.VerdictPass {
		t.Fatalf("behind NAT: %+v", res)
	}
	if r := rec.get(); len(r) != 2 || !bytes.Equal(r[1].link.MAC, hostMAC) || r[1].link.IP != hostIP {
		t.Errorf("behind NAT, Recorded told of %+v, want the quoted link %s %s", r, hostMAC, hostIP)
	}
}

// TestLinkLeases: with a lease store, the quoted address must be leased to
// the quoted MAC now; an address leased to another MAC, or not leased, is a
// refused attempt and changes nothing, and the host is bound to the MAC its
// TPM quoted.
func TestLinkLeases(t *testing.T) {
	leases := &fakeLeases{m: map[netip.Addr]net.HardwareAddr{}}
	_, raw, h, rec, f := linkHost(t, func(o *server.Options) { o.Leases = leases })
	id := h.hostID(t)
	relayMAC := net.HardwareAddr{0x52, 0x54, 0, 0x66, 0x66, 0x66}

	// No lease of the quoted address.
	wantLinkRefused(t, f, h.answer(t, f.enroll(t, h.enrollRequest()), raw), id, 0, "no lease")
	hostUnchanged(t, f, nil, 0, 0)
	// The quoted address is leased to another MAC.
	leases.m[loopbackIP] = relayMAC
	wantLinkRefused(t, f, h.answer(t, f.enroll(t, h.enrollRequest()), raw), id, 1, relayMAC.String(), loopbackMAC.String())
	hostUnchanged(t, f, nil, 0, 0)
	if r := rec.get(); len(r) != 0 {
		t.Errorf("Recorded told of %+v", r)
	}
	// Leased to the quoted MAC: the verdict is recorded and the host bound
	// to that MAC.
	leases.m[loopbackIP] = loopbackMAC
	if res := f.quote(t, h.answer(t, f.enroll(t, h.enrollRequest()), raw)); res.Verdict != wire.VerdictPass {
		t.Fatalf("attestation over its lease: %+v", res)
	}
	if r := rec.get(); len(r) != 1 || r[0].host != id || !bytes.Equal(r[0].link.MAC, loopbackMAC) {
		t.Errorf("Recorded told of %+v, want host %s on MAC %s", r, id, loopbackMAC)
	}
}

// linkHost starts a simulated TPM that booted the good log, its host, and a
// verifier that tells rec of every link it binds; opts adjust the verifier.
func linkHost(t *testing.T, opts ...func(*server.Options)) (ca *tpmtest.CA, raw []byte, h *host, rec *recordedLinks, f *fixture) {
	t.Helper()
	ca = tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw = tpmtest.ReplayLog(t, tp, goodLog)
	h = newHost(t, tp)
	rec = &recordedLinks{}
	f = newFixture(t, ca.Roots(), append([]func(*server.Options){func(o *server.Options) { o.Recorded = rec.record }}, opts...)...)
	return ca, raw, h, rec, f
}

package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestForeignTPMCannotTakeOverAdmittedLink: an attacker with its own TPM
// (any EK from a trusted manufacturer; its boot state fails the policy)
// quotes the link of an admitted host: the host's MAC and its production
// address. The address is leased to that MAC, so only the MAC's binding to
// the admitted host stands in the way: the quote is refused with
// link_mismatch and audited, no verdict is recorded, the MAC stays bound to
// the admitted host, which keeps its production lease and forwarding and
// may attest again over its own link. Behind NAT (attest_behind_nat) the
// attacker needs no spoofing; without it, it sends from the host's address
// (a neighbour on the segment).
func TestForeignTPMCannotTakeOverAdmittedLink(t *testing.T) {
	for _, nat := range []bool{false, true} {
		t.Run(map[bool]string{false: "source checked", true: "behind NAT"}[nat], func(t *testing.T) {
			ctx := context.Background()
			leases, err := dhcpgate.OpenLeases(filepath.Join(t.TempDir(), "leases.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { leases.Close() })
			quar := &dhcpgate.Pool{Name: dhcpgate.PoolQuarantine, Start: net.IPv4(127, 0, 0, 2).To4(), End: net.IPv4(127, 0, 0, 9).To4(), LeaseTime: time.Minute}
			prod := &dhcpgate.Pool{Name: dhcpgate.PoolProduction, Start: net.IPv4(127, 0, 0, 10).To4(), End: net.IPv4(127, 0, 0, 19).To4(), LeaseTime: time.Hour}

			ca := tpmtest.NewCA(t)
			// The simulator is a process-wide singleton (one per subtest,
			// closed at its cleanup): two certified EKs of it stand for
			// host A's TPM and the attacker's.
			tp := tpmtest.Simulator(t, nil)
			for i, idx := range []tpm2.TPMHandle{tpmtest.NVIndexECCP256, tpmtest.NVIndexRSA2048} {
				x := make([]byte, 32)
				x[31] = byte(i + 1)
				tpmtest.AddEK(t, tp, ca, tpmtest.UniqueECCEKTemplate(x), idx, tpm2.TPMHandle(0x81010100+i))
			}
			rawA := tpmtest.ReplayLog(t, tp, goodLog)
			hostA, hostX := eksHosts(t, tp)
			rawX := tpmtest.EventLog(t, badLog) // does not replay: the attacker's verdict would be a fail

			var bindErrs []error
			f := newFixture(t, ca.Roots(), func(o *server.Options) {
				o.Leases = leases
				o.BehindNAT = nat
				o.Recorded = func(ctx context.Context, hostID string, link server.Link) {
					if err := leases.BindHost(ctx, link.MAC, hostID, time.Now()); err != nil {
						bindErrs = append(bindErrs, err)
					}
				}
			})
			from := func(src string) { // the source address of the next requests
				tr := f.ts.Client().Transport.(*http.Transport)
				tr.CloseIdleConnections()
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				tr.DialContext = d.DialContext
			}

			// Host A: quarantine lease, passing attestation from it, then
			// its production lease.
			macA := net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0, 1}
			now := time.Now()
			q, err := leases.Offer(ctx, quar, macA, now, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := leases.Bind(ctx, quar, macA, q.IP, now, quar.LeaseTime); !ok || err != nil {
				t.Fatal(ok, err)
			}
			from(q.IP.String())
			res := f.quote(t, hostA.answerFrom(t, f.enroll(t, hostA.enrollRequest()), rawA, macA, netip.MustParseAddr(q.IP.String())))
			if res.Verdict != wire.VerdictPass {
				t.Fatalf("host A: %+v", res)
			}
			p, err := leases.Offer(ctx, prod, macA, time.Now(), 30*time.Second)
			if err != nil || p.Pool != dhcpgate.PoolProduction {
				t.Fatalf("production offer for A: %+v %v", p, err)
			}
			if ok, err := leases.Bind(ctx, prod, macA, p.IP, time.Now(), prod.LeaseTime); !ok || err != nil {
				t.Fatal(ok, err)
			}
			adm, _ := leases.AdmittedLeases(ctx, time.Now(), f.st)
			if len(adm) != 1 || !adm[0].IP.Equal(p.IP) {
				t.Fatalf("before the attack the gateway forwards %+v, want A at %s", adm, p.IP)
			}
			hA, err := f.st.Host(ctx, hostA.hostID(t))
			if err != nil {
				t.Fatal(err)
			}

			// The attacker quotes A's link with its own TPM: refused,
			// audited against the attacker's host, nothing recorded.
			if nat {
				from("127.0.0.1") // anywhere: nothing compares the source
			} else {
				from(p.IP.String()) // a neighbour using A's address
			}
			attack := hostX.answerFrom(t, f.enroll(t, hostX.enrollRequest()), rawX, macA, netip.MustParseAddr(p.IP.String()))
			wantLinkRefused(t, f, attack, hostX.hostID(t), len(refusedAttempts(t, f.st)), macA.String(), p.IP.String(), "bound to another host")
			hostUnchanged(t, f, hA, 1, 0)
			if _, err := f.st.Host(ctx, hostX.hostID(t)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the attacker's host is in the store (%v): a verdict was recorded over A's link", err)
			}
			if len(bindErrs) != 0 {
				t.Errorf("binding attempts after the refusal: %v", bindErrs)
			}
			adm, _ = leases.AdmittedLeases(ctx, time.Now(), f.st)
			admitted, _ := dhcpgate.StoreAdmission{Leases: leases, Hosts: f.st}.Admitted(ctx, macA)
			bound, _ := leases.HostOf(ctx, macA)
			if len(adm) != 1 || !admitted || bound != hostA.hostID(t) {
				t.Errorf("host A lost its link: gateway holds %+v, production pool %v, its MAC bound to %.12s (A is %.12s)",
					adm, admitted, bound, hostA.hostID(t))
			}

			// Host A itself still attests over its own (bound) link.
			from(p.IP.String())
			res = f.quote(t, hostA.answerFrom(t, f.enroll(t, hostA.enrollRequest()), rawA, macA, netip.MustParseAddr(p.IP.String())))
			if res.Verdict != wire.VerdictPass {
				t.Errorf("host A over its own link after the attack: %+v", res)
			}
			if len(bindErrs) != 0 {
				t.Errorf("host A's own binding refused: %v", bindErrs)
			}
		})
	}
}

// eksHosts is a host for each of tp's two EKs, each with a fresh AK.
func eksHosts(t *testing.T, tp *tpm.TPM) (*host, *host) {
	t.Helper()
	eks, err := tp.EKs()
	if err != nil || len(eks) != 2 {
		t.Fatalf("EKs: %d %v", len(eks), err)
	}
	var hs [2]*host
	for i, ek := range eks {
		ak, err := tp.NewAK(tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ak.Close(); tp.CloseEK(ek) })
		hs[i] = &host{tp: tp, ek: ek, ak: ak}
	}
	return hs[0], hs[1]
}

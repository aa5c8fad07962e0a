package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/internal/nettest"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// The boot network of TestRelayedAttestationNetns: the appliance's bridge and
// the DHCP gate's pools.
var (
	relayNetServer = net.IPv4(10, 31, 0, 1).To4()
	relayNetQStart = net.IPv4(10, 31, 0, 100).To4()
	relayNetQEnd   = net.IPv4(10, 31, 0, 149).To4()
	relayNetPStart = net.IPv4(10, 31, 0, 150).To4()
	relayNetPEnd   = net.IPv4(10, 31, 0, 199).To4()
)

func runCmd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bootNet is an appliance namespace with a bridge, and machines: namespaces
// each joined to the bridge by a veth pair.
type bootNet struct {
	id        string
	appliance string // namespace
	bridge    string
}

type machine struct {
	ns, ifname string
	mac        net.HardwareAddr
}

func newBootNet(t *testing.T) *bootNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"ip", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages iproute2, busybox)", tool)
		}
	}
	var r [3]byte
	rand.Read(r[:])
	n := &bootNet{id: hex.EncodeToString(r[:])}
	n.appliance, n.bridge = "bga-"+n.id, "br"+n.id
	runCmd(t, "ip", "netns", "add", n.appliance)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", n.appliance).Run() })
	runCmd(t, "ip", "-n", n.appliance, "link", "add", n.bridge, "type", "bridge")
	runCmd(t, "ip", "-n", n.appliance, "addr", "add", relayNetServer.String()+"/24", "dev", n.bridge)
	runCmd(t, "ip", "-n", n.appliance, "link", "set", n.bridge, "up")
	runCmd(t, "ip", "-n", n.appliance, "link", "set", "lo", "up")
	return n
}

// machine adds a namespace named by tag (one letter) with an interface of the
// given MAC on the bridge.
func (n *bootNet) machine(t *testing.T, tag string, mac net.HardwareAddr) *machine {
	t.Helper()
	m := &machine{ns: "bg" + tag + "-" + n.id, ifname: "v" + tag + n.id, mac: mac}
	runCmd(t, "ip", "netns", "add", m.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", m.ns).Run() })
	peer := "a" + tag + n.id
	runCmd(t, "ip", "link", "add", m.ifname, "netns", m.ns, "address", mac.String(), "type", "veth", "peer", "name", peer, "netns", n.appliance)
	runCmd(t, "ip", "-n", n.appliance, "link", "set", peer, "master", n.bridge)
	runCmd(t, "ip", "-n", n.appliance, "link", "set", peer, "up")
	runCmd(t, "ip", "-n", m.ns, "link", "set", m.ifname, "up")
	runCmd(t, "ip", "-n", m.ns, "link", "set", "lo", "up")
	return m
}

var udhcpcLease = regexp.MustCompile(`lease of (\d+\.\d+\.\d+\.\d+)`)

// dhcp runs busybox udhcpc once on m's interface (at most 5 discovers, 2 s
// apart, within 30 s) and configures the address it got.
func (m *machine) dhcp(t *testing.T) netip.Addr {
	t.Helper()
	out := runCmd(t, "ip", "netns", "exec", m.ns, "timeout", "30", "busybox", "udhcpc", "-i", m.ifname,
		"-n", "-q", "-f", "-s", "/bin/true", "-t", "5", "-T", "2")
	g := udhcpcLease.FindStringSubmatch(out)
	if g == nil {
		t.Fatalf("udhcpc in %s got no lease:\n%s", m.ns, out)
	}
	ip := netip.MustParseAddr(g[1])
	exec.Command("ip", "-n", m.ns, "addr", "flush", "dev", m.ifname).Run()
	runCmd(t, "ip", "-n", m.ns, "addr", "add", ip.String()+"/24", "dev", m.ifname)
	return ip
}

// dialIn returns a DialContext that opens connections from namespace ns.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread is left in no namespace but its own: it ends with
			// this goroutine (no UnlockOSThread after a failed switch back).
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			h, err := netns.GetFromName(ns)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				ch <- result{nil, err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// agentHTTP is an HTTPS client whose connections leave from namespace ns
// and that trusts ts's certificate (issued for example.com).
func agentHTTP(ts *httptest.Server, ns string) *http.Client {
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = dialIn(ns)
	tr.TLSClientConfig.ServerName = "example.com"
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// tcpRelay forwards every connection to ln to upstream, dialled from
// namespace ns: a machine relaying another's traffic as its own (NAT in user
// space). It serves at most 16 connections, each for at most a minute, and
// closes them all when the test ends.
func tcpRelay(t *testing.T, ln net.Listener, ns, upstream string) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	dial := dialIn(ns)
	wg.Go(func() {
		for range 16 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Go(func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				u, err := dial(ctx, "tcp", upstream)
				cancel()
				if err != nil {
					return
				}
				track(u)
				defer u.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				_ = u.SetDeadline(time.Now().Add(time.Minute))
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); done <- struct{}{} }()
				go func() { io.Copy(c, u); done <- struct{}{} }()
				<-done
			})
		}
	})
}

func inPool(ip netip.Addr, start, end net.IP) bool {
	s, _ := netip.AddrFromSlice(start)
	e, _ := netip.AddrFromSlice(end)
	return ip.Compare(s) >= 0 && ip.Compare(e) <= 0
}

// TestRelayedAttestationNetns: on a real boot network (namespaces, the real
// DHCP gate, busybox udhcpc), a host with a TPM (swtpm) gets a quarantine
// lease and attests; a second machine with no TPM, on a quarantine lease of
// its own, relays the host's next attestation through a TCP proxy, so that
// it reaches the appliance from the relay's address. The relay is refused
// (link_mismatch) and gets no production lease; the host stays admitted,
// without incident, and gets its production lease.
func TestRelayedAttestationNetns(t *testing.T) {
	requireSwtpm(t)
	n := newBootNet(t)
	dir := t.TempDir()

	// The appliance: store, leases, DHCP gate and attestation API, as
	// `bootgate serve` wires them.
	st, err := store.OpenSQLite(filepath.Join(dir, "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	leases, err := dhcpgate.OpenLeases(filepath.Join(dir, "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leases.Close() })
	mask := net.CIDRMask(24, 32)
	gate, err := dhcpgate.New(dhcpgate.Config{
		ServerIP:   relayNetServer,
		Quarantine: dhcpgate.Pool{Name: dhcpgate.PoolQuarantine, Start: relayNetQStart, End: relayNetQEnd, Netmask: mask, LeaseTime: 10 * time.Minute},
		Production: dhcpgate.Pool{Name: dhcpgate.PoolProduction, Start: relayNetPStart, End: relayNetPEnd, Netmask: mask, LeaseTime: time.Hour},
		Endpoint:   "https://" + relayNetServer.String() + ":8443",
	}, leases, dhcpgate.StoreAdmission{Leases: leases, Hosts: st}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var dhcpConn net.PacketConn
	var apiLn net.Listener
	nettest.InNS(t, n.appliance, func() {
		if dhcpConn, err = server4.NewIPv4UDPConn(n.bridge, &net.UDPAddr{Port: dhcpv4.ServerPort}); err != nil {
			t.Fatal(err)
		}
		if apiLn, err = net.Listen("tcp", relayNetServer.String()+":0"); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gate.Serve(ctx, dhcpConn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("DHCP gate: %v", err)
		}
	})

	ca := newSwtpmCA(t, filepath.Join(dir, "manufacturer"))
	tp := startSwtpm(t, ca, filepath.Join(dir, "host-tpm"))
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	srv, err := server.New(server.Options{
		Roots: attest.NewRoots(swtpmRoots(t, ca), nil), Policy: learnedPolicy(t), Store: st,
		Leases: leases,
		Recorded: func(ctx context.Context, hostID string, link server.Link) {
			if err := leases.BindHost(ctx, link.MAC, hostID, time.Now()); err != nil {
				t.Errorf("bind host: %v", err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener.Close()
	ts.Listener = apiLn
	ts.StartTLS()
	t.Cleanup(ts.Close)

	// The host and the relay, each on a quarantine lease.
	host := n.machine(t, "h", net.HardwareAddr{0x52, 0x54, 0x00, 0x31, 0x00, 0x01})
	relay := n.machine(t, "r", net.HardwareAddr{0x52, 0x54, 0x00, 0x31, 0x00, 0x02})
	start := time.Now()
	hostIP, relayIP := host.dhcp(t), relay.dhcp(t)
	t.Logf("quarantine leases: host %s (%s), relay %s (%s) in %v", hostIP, host.mac, relayIP, relay.mac, time.Since(start))
	for name, ip := range map[string]netip.Addr{"host": hostIP, "relay": relayIP} {
		if !inPool(ip, relayNetQStart, relayNetQEnd) {
			t.Fatalf("the %s's first lease %s is not a quarantine address", name, ip)
		}
	}
	agent := func(baseURL string) *client.Client {
		return &client.Client{BaseURL: baseURL, HTTP: agentHTTP(ts, host.ns),
			Link: func() (net.HardwareAddr, netip.Addr, error) { return host.mac, hostIP, nil }}
	}
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer acancel()

	// The host attests over its own link and is admitted.
	rep, err := agent(ts.URL).Attest(actx, tp, raw)
	if err != nil {
		t.Fatalf("the host's attestation: %v", err)
	}
	if rep.Result.Verdict != wire.VerdictPass {
		t.Fatalf("the host's attestation: %+v", rep.Result)
	}
	hostID := rep.Result.HostID
	admitted, err := st.Host(context.Background(), hostID)
	if err != nil || admitted.State != store.HostAdmitted {
		t.Fatalf("host after its attestation: %+v, %v", admitted, err)
	}
	if id, _ := leases.HostOf(context.Background(), host.mac); id != hostID {
		t.Fatalf("the host's MAC is bound to %q, want %s", id, hostID)
	}

	// The relay forwards the host's next attestation as its own traffic.
	var relayLn net.Listener
	nettest.InNS(t, relay.ns, func() {
		if relayLn, err = net.Listen("tcp", relayIP.String()+":0"); err != nil {
			t.Fatal(err)
		}
	})
	tcpRelay(t, relayLn, relay.ns, apiLn.Addr().String())
	_, err = agent("https://"+relayLn.Addr().String()).Attest(actx, tp, raw)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || apiErr.Code != wire.CodeLinkMismatch {
		t.Errorf("relayed attestation: %v, want 403 %s", err, wire.CodeLinkMismatch)
	}
	audit := refusedAttempts(t, st)
	if len(audit) != 1 || audit[0].Target != hostID || !strings.Contains(audit[0].Detail, "source "+relayIP.String()) || !strings.Contains(audit[0].Detail, hostIP.String()) {
		t.Errorf("refused attempts %+v, want one against %s naming %s and %s", audit, hostID, relayIP, hostIP)
	}

	// The relay gained nothing, the host lost nothing.
	if id, _ := leases.HostOf(context.Background(), relay.mac); id != "" {
		t.Errorf("the relay's MAC is bound to host %s", id)
	}
	after, err := st.Host(context.Background(), hostID)
	if err != nil || *after != *admitted {
		t.Errorf("host after the relay: %+v, %v; want it unchanged: %+v", after, err, admitted)
	}
	if in, err := st.Incidents(context.Background()); err != nil || len(in) != 0 {
		t.Errorf("incidents after the relay: %+v, %v", in, err)
	}
	start = time.Now()
	if ip := relay.dhcp(t); !inPool(ip, relayNetQStart, relayNetQEnd) {
		t.Errorf("the relay's next lease is %s, not a quarantine address", ip)
	}
	if ip := host.dhcp(t); !inPool(ip, relayNetPStart, relayNetPEnd) {
		t.Errorf("the host's next lease is %s, not a production address", ip)
	}
	t.Logf("second leases in %v", time.Since(start))
}

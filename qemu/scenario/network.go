package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The boot network's addressing: the appliance is the bridge's address, which
// the agent UKI's command line names; hosts get leases from the pool.
const (
	ApplianceIP   = "10.23.0.1"
	ApplianceAddr = ApplianceIP + ":18443"
	networkCIDR   = ApplianceIP + "/24"
	poolStart     = "10.23.0.100"
	poolEnd       = "10.23.0.199"
)

// Network is a test boot network in its own network namespace: a bridge
// holding the appliance's address, a DHCP server, and a tap per test host.
// Nothing in it is routed anywhere else.
type Network struct {
	NS     string
	dir    string
	taps   int
	dhcp   *exec.Cmd
	dhcpCh chan error
}

// NetworkAvailable reports why a namespaced boot network cannot be made here.
func NetworkAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces, bridges and taps need root")
	}
	for _, b := range []string{"ip", "dnsmasq"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found (Debian packages iproute2 and dnsmasq-base)", b)
		}
	}
	return nil
}

// NewNetwork creates the namespace, the bridge and the DHCP server (dnsmasq,
// DHCP only, until the appliance serves DHCP itself). dir keeps its lease file
// and log.
func NewNetwork(ctx context.Context, dir string) (*Network, error) {
	if err := NetworkAvailable(); err != nil {
		return nil, err
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir) // dnsmasq changes to / before it opens its files
	if err != nil {
		return nil, err
	}
	n := &Network{NS: "bootgate-" + hex.EncodeToString(r[:]), dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "netns", "add", n.NS); err != nil {
		return nil, err
	}
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", networkCIDR, "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		if err := n.ip(ctx, c...); err != nil {
			n.Close()
			return nil, err
		}
	}
	logf, err := os.Create(filepath.Join(dir, "dhcp.log"))
	if err != nil {
		n.Close()
		return nil, err
	}
	n.dhcp = exec.Command("ip", "netns", "exec", n.NS, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--port=0", "--interface=br0", "--bind-interfaces", "--log-dhcp", "--log-facility=-",
		"--dhcp-range="+poolStart+","+poolEnd+",10m", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
	n.dhcp.Stdout, n.dhcp.Stderr = logf, logf
	if err := n.dhcp.Start(); err != nil {
		logf.Close()
		n.Close()
		return nil, fmt.Errorf("start DHCP server: %w", err)
	}
	n.dhcpCh = make(chan error, 1)
	go func() { n.dhcpCh <- n.dhcp.Wait(); logf.Close() }()
	// dnsmasq reports bad options by exiting at once.
	select {
	case err := <-n.dhcpCh:
		n.dhcp = nil
		n.Close()
		b, _ := os.ReadFile(filepath.Join(dir, "dhcp.log"))
		return nil, fmt.Errorf("DHCP server exited: %v: %s", err, strings.TrimSpace(string(b)))
	case <-time.After(500 * time.Millisecond):
	}
	return n, nil
}

// AddTap creates a tap device on the bridge for one host and returns the
// harness's Net value for it.
func (n *Network) AddTap(ctx context.Context) (string, error) {
	n.taps++
	tap := fmt.Sprintf("tap%d", n.taps)
	for _, c := range [][]string{
		{"tuntap", "add", "dev", tap, "mode", "tap"},
		{"link", "set", tap, "master", "br0"},
		{"link", "set", tap, "up"},
	} {
		if err := n.ip(ctx, c...); err != nil {
			return "", err
		}
	}
	return "tap:" + tap + ",ns=" + n.NS, nil
}

// Command runs name in the namespace.
func (n *Network) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.NS, name}, args...)...)
}

// Close stops the DHCP server and deletes the namespace with everything in it.
func (n *Network) Close() {
	if n.dhcp != nil && n.dhcp.Process != nil {
		_ = n.dhcp.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.dhcpCh:
		case <-time.After(5 * time.Second):
			_ = n.dhcp.Process.Kill()
			<-n.dhcpCh
		}
	}
	_ = run(context.Background(), "ip", "netns", "delete", n.NS)
}

func (n *Network) ip(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"-n", n.NS}, args...)...)
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

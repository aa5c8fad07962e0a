package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The boot network's addressing: the appliance is the bridge's address, which
// the agent UKI's command line names; hosts get leases from the pool.
const (
	ApplianceIP   = "10.23.0.1"
	ApplianceAddr = ApplianceIP + ":18443"
	networkCIDR   = ApplianceIP + "/24"
)

// Network is a test boot network in its own network namespace: a bridge
// holding the appliance's address (the appliance is its DHCP server) and a
// tap per test host. Nothing in it is routed anywhere else.
type Network struct {
	NS   string
	dir  string
	taps int
}

// NetworkAvailable reports why a namespaced boot network cannot be made here.
func NetworkAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces, bridges and taps need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("ip not found (Debian package iproute2)")
	}
	return nil
}

// NewNetwork creates the namespace and the bridge.
func NewNetwork(ctx context.Context, dir string) (*Network, error) {
	if err := NetworkAvailable(); err != nil {
		return nil, err
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
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

// Close deletes the namespace with everything in it.
func (n *Network) Close() {
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

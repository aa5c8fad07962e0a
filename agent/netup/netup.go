// Package netup brings the boot network up in the initramfs: it loads the NIC
// drivers in a given order and configures the first interface that gets a
// DHCP lease.
package netup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/verifier/wire"
)

// LoadModules loads the kernel modules named, one per line, in dir/order,
// in that order (u-root's init would load them alphabetically, without
// regard to dependencies). A module that is already loaded is not an error.
func LoadModules(dir string, log *slog.Logger) (int, error) {
	f, err := os.Open(filepath.Join(dir, "order"))
	if err != nil {
		return 0, fmt.Errorf("load modules: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		m, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return n, fmt.Errorf("load module %s: %w", name, err)
		}
		err = kmodule.FileInit(m, "", 0)
		m.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return n, fmt.Errorf("load module %s: %w", name, err)
		}
		log.Debug("loaded module", "module", name)
		n++
	}
	return n, sc.Err()
}

// Lease is the address an interface got, and what the appliance told the
// agent in its vendor option (43, wire.Vendor): where to attest, and the
// SHA-256 of the CA certificate it must present.
type Lease struct {
	Interface string
	// MAC is the interface's hardware address: with Address, the link the
	// agent's attestation is bound to.
	MAC           net.HardwareAddr
	Address       net.IP
	Server        net.IP
	Took          time.Duration
	Endpoint      string
	CAFingerprint []byte
	// Alternates are other replicas' endpoints, to try when Endpoint
	// cannot be reached.
	Alternates []string
}

// DHCP brings up every non-loopback interface, asks for a DHCPv4 lease on
// each, and configures the first that answers. It gives up when ctx ends.
func DHCP(ctx context.Context, log *slog.Logger) (*Lease, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var ifs []netlink.Link
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 || l.Type() != "device" {
			continue
		}
		ifs = append(ifs, l)
	}
	if len(ifs) == 0 {
		return nil, errors.New("dhcp: no network interface (is the NIC driver loaded?)")
	}
	return lease(ctx, ifs, log)
}

// Renew drops the interface's addresses and routes and asks for a new lease:
// after a passing attestation the appliance moves the host from its
// quarantine pool to its production pool.
func Renew(ctx context.Context, ifname string, log *slog.Logger) (*Lease, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(l, &a); err != nil {
			return nil, fmt.Errorf("renew lease: drop %s: %w", a.IPNet, err)
		}
	}
	return lease(ctx, []netlink.Link{l}, log)
}

func lease(ctx context.Context, ifs []netlink.Link, log *slog.Logger) (*Lease, error) {
	start := time.Now()
	cfg := dhclient.Config{Timeout: 5 * time.Second, Retries: 3, LogLevel: dhclient.LogInfo}
	for r := range dhclient.SendRequests(ctx, ifs, true, false, cfg, 10*time.Second) {
		if r.Err != nil {
			log.Warn("dhcp", "interface", r.Interface.Attrs().Name, "err", r.Err)
			continue
		}
		if err := r.Lease.Configure(); err != nil {
			log.Warn("configure lease", "interface", r.Interface.Attrs().Name, "err", err)
			continue
		}
		l := &Lease{Interface: r.Interface.Attrs().Name, MAC: r.Interface.Attrs().HardwareAddr, Took: time.Since(start)}
		if p, ok := r.Lease.(*dhclient.Packet4); ok {
			msg, _ := p.Message()
			if msg != nil {
				l.Address, l.Server = msg.YourIPAddr, msg.ServerIPAddr
				// A malformed option keeps what was read before the
				// fault: the endpoint is checked against the agent's own
				// CA anyway, and a bad fingerprint is left out.
				v, err := wire.ParseVendor(msg.Options.Get(dhcpv4.OptionVendorSpecificInformation))
				if err != nil {
					log.Warn("dhcp vendor option", "interface", l.Interface, "err", err)
				}
				l.Endpoint, l.CAFingerprint, l.Alternates = v.Endpoint, v.CAFingerprint, v.Alternates
			}
		}
		return l, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	return nil, errors.New("dhcp: no interface got a lease")
}

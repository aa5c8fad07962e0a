// Package netup brings the boot network up in the initramfs: it configures
// the first interface that gets a DHCP lease (the NIC drivers are loaded
// before, by package drivers).
package netup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"

	"github.com/bootgate/bootgate/verifier/wire"
)

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

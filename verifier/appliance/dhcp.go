package appliance

import (
	"context"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/dhcpgate"
	"github.com/bootgate/bootgate/verifier/gateway"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
)

// dhcpGate is the running DHCP gate of the appliance.
type dhcpGate struct {
	server *dhcpgate.Server
	leases *dhcpgate.Leases
	conn   net.PacketConn
}

func pool(name string, c config.Pool) (dhcpgate.Pool, error) {
	p := dhcpgate.Pool{Name: name, Start: net.ParseIP(c.Start).To4(), End: net.ParseIP(c.End).To4(),
		Netmask: net.CIDRMask(c.PrefixLen, 32), LeaseTime: c.LeaseTime}
	if p.Start == nil || p.End == nil {
		return p, fmt.Errorf("dhcp.%s: start and end must be IPv4 addresses", name)
	}
	if c.Router != "" {
		if p.Router = net.ParseIP(c.Router).To4(); p.Router == nil {
			return p, fmt.Errorf("dhcp.%s.router: %q is not an IPv4 address", name, c.Router)
		}
	}
	for _, d := range c.DNS {
		ip := net.ParseIP(d).To4()
		if ip == nil {
			return p, fmt.Errorf("dhcp.%s.dns: %q is not an IPv4 address", name, d)
		}
		p.DNS = append(p.DNS, ip)
	}
	return p, nil
}

// startDHCP opens the lease tables in the store file and binds the DHCP
// socket to the boot network interface.
func startDHCP(c *config.DHCP, storePath string, st store.Store, log *slog.Logger) (*dhcpGate, error) {
	q, err := pool(dhcpgate.PoolQuarantine, c.Quarantine)
	if err != nil {
		return nil, err
	}
	p, err := pool(dhcpgate.PoolProduction, c.Production)
	if err != nil {
		return nil, err
	}
	cfg := dhcpgate.Config{ServerIP: net.ParseIP(c.ServerIP).To4(), Quarantine: q, Production: p,
		Endpoint: c.Endpoint, BootFile: c.BootFile, BootURL: c.BootURL}
	if cfg.ServerIP == nil {
		return nil, fmt.Errorf("dhcp.server_ip: %q is not an IPv4 address", c.ServerIP)
	}
	for _, r := range c.Relays {
		ip := net.ParseIP(r).To4()
		if ip == nil {
			return nil, fmt.Errorf("dhcp.relays: %q is not an IPv4 address", r)
		}
		cfg.Relays = append(cfg.Relays, ip)
	}
	if c.CA != "" {
		b, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("dhcp.ca: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("dhcp.ca: no PEM certificate in %s", c.CA)
		}
		cfg.CACert = blk.Bytes
	}
	leases, err := dhcpgate.OpenLeases(storePath)
	if err != nil {
		return nil, err
	}
	srv, err := dhcpgate.New(cfg, leases, dhcpgate.StoreAdmission{Leases: leases, Hosts: st}, log.With("component", "dhcp"))
	if err != nil {
		leases.Close()
		return nil, err
	}
	conn, err := server4.NewIPv4UDPConn(c.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		leases.Close()
		return nil, fmt.Errorf("dhcp: listen on %s: %w", c.Interface, err)
	}
	return &dhcpGate{server: srv, leases: leases, conn: conn}, nil
}

// recorded binds the client whose link the host's TPM quoted (and whose
// lease the attestation API checked) to the host: the MAC the TPM signed,
// not whichever client holds the address by now.
func (g *dhcpGate) recorded(log *slog.Logger) func(context.Context, string, server.Link) {
	return func(ctx context.Context, hostID string, link server.Link) {
		if err := g.leases.BindHost(ctx, link.MAC, hostID, time.Now()); err != nil {
			log.Warn("bind the attested link to its host", "host", hostID, "mac", link.MAC.String(), "ip", link.IP.String(), "err", err)
		}
	}
}

// reconcile keeps the gateway's admitted sets equal to the admitted hosts'
// production leases (address and MAC) until ctx ends, then empties them
// (fail closed). It syncs every interval whether or not anything changed:
// each sync re-arms the elements' timeouts (gatewayTimeout), so the gate
// also closes when this loop stops without reaching Close.
func reconcile(ctx context.Context, gw *gateway.Gateway, leases *dhcpgate.Leases, st store.Store, every time.Duration, log *slog.Logger) {
	every = syncInterval(every)
	t := time.NewTicker(every)
	defer t.Stop()
	last := -1
	for {
		var hosts []gateway.Host
		admitted, err := leases.AdmittedLeases(ctx, time.Now(), st)
		if err == nil {
			for _, le := range admitted {
				hosts = append(hosts, gateway.Host{IP: le.IP, MAC: le.MAC})
			}
			err = gw.Sync(hosts)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("gateway sync", "err", err)
		case len(hosts) != last:
			log.Info("gateway: admitted hosts", "count", len(hosts))
			last = len(hosts)
		}
		select {
		case <-ctx.Done():
			if err := gw.Close(); err != nil {
				log.Error("gateway close", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// syncInterval is the gateway's sync interval: gateway.sync, 1 s by default.
func syncInterval(every time.Duration) time.Duration {
	if every <= 0 {
		return time.Second
	}
	return every
}

// gatewayTimeout is how long the gateway forwards an admitted host after
// the last sync: three sync intervals, so that one or two late syncs do
// not interrupt admitted hosts, and a crashed or frozen appliance closes
// the gate within 3 × gateway.sync (docs/dhcp.md).
func gatewayTimeout(every time.Duration) time.Duration { return 3 * syncInterval(every) }

// adminLeases shows the DHCP gate's leases on the admin API.
type adminLeases struct{ l *dhcpgate.Leases }

func (a adminLeases) HostLeases(ids []string, now time.Time) map[string]admin.Lease {
	out := map[string]admin.Lease{}
	for id, le := range a.l.HostLeases(ids, now) {
		al := admin.Lease{IP: le.IP.String(), MAC: le.MAC.String(), Pool: le.Pool, Expires: le.Expires}
		if le.Relay != nil {
			al.Relay = &admin.LeaseRelay{Addr: le.Relay.Addr.String(),
				CircuitID: dhcpgate.Printable(le.Relay.CircuitID), RemoteID: dhcpgate.Printable(le.Relay.RemoteID)}
		}
		out[id] = al
	}
	return out
}

func (a adminLeases) CountByPool(now time.Time) map[string]int { return a.l.CountByPool(now) }

// Package gateway keeps the appliance's forwarding rules: traffic between the
// boot network and anything beyond the appliance passes only for addresses of
// admitted hosts. Quarantined addresses still reach the appliance itself
// (its DHCP, boot files and attestation API are local, not forwarded).
//
// The rules live in their own nftables table (inet bootgate) with one set of
// admitted IPv4 addresses; github.com/google/nftables talks netlink to the
// kernel. The set's content is derived from the store by Sync, so that a
// quarantine decided anywhere (a failed re-attestation, an operator) takes
// effect at the next sync, and a restarted appliance forwards nothing it
// should not.
package gateway

import (
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names in the kernel.
const (
	TableName = "bootgate"
	SetName   = "admitted"
	ChainName = "forward"
)

// Gateway is the forwarding policy for one boot network interface.
type Gateway struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	set   *nftables.Set
	have  map[string]bool // the set's content as last written
}

// New installs (replacing any previous one) the table, the set and the
// forward chain for bootIface. With netnsFd ≥ 0 it works in that network
// namespace.
func New(bootIface string, netnsFd int) (*Gateway, error) {
	var opts []nftables.ConnOption
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{conn: c, have: map[string]bool{}}
	g.table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	// Start from nothing: delete a table left by a previous run.
	c.AddTable(g.table)
	c.DelTable(g.table)
	c.AddTable(g.table)
	g.set = &nftables.Set{Table: g.table, Name: SetName, KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(g.set, nil); err != nil {
		return nil, fmt.Errorf("gateway: add set: %w", err)
	}
	drop := nftables.ChainPolicyAccept // only boot-network traffic is governed, by the rules
	chain := c.AddChain(&nftables.Chain{
		Name: ChainName, Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	ifname := func(meta expr.MetaKey) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: meta, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(bootIface)},
		}
	}
	ipv4 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	addr := func(offset uint32) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: g.set.Name, SetID: g.set.ID},
		}
	}
	verdict := func(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: k}} }
	for _, r := range [][]expr.Any{
		// From the boot network: admitted sources pass, everything else drops.
		slices.Concat(ifname(expr.MetaKeyIIFNAME), ipv4, addr(12), verdict(expr.VerdictAccept)),
		slices.Concat(ifname(expr.MetaKeyIIFNAME), verdict(expr.VerdictDrop)),
		// Into the boot network: admitted destinations only.
		slices.Concat(ifname(expr.MetaKeyOIFNAME), ipv4, addr(16), verdict(expr.VerdictAccept)),
		slices.Concat(ifname(expr.MetaKeyOIFNAME), verdict(expr.VerdictDrop)),
	} {
		c.AddRule(&nftables.Rule{Table: g.table, Chain: chain, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("gateway: install rules: %w", err)
	}
	return g, nil
}

func ifnameBytes(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Sync makes the admitted set exactly ips (IPv4): addresses no longer
// admitted lose forwarding at once.
func (g *Gateway) Sync(ips []net.IP) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := map[string]bool{}
	var add, del []nftables.SetElement
	for _, ip := range ips {
		if v := ip.To4(); v != nil && !want[v.String()] {
			want[v.String()] = true
			if !g.have[v.String()] {
				add = append(add, nftables.SetElement{Key: v})
			}
		}
	}
	for s := range g.have {
		if !want[s] {
			del = append(del, nftables.SetElement{Key: net.ParseIP(s).To4()})
		}
	}
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	if len(del) > 0 {
		if err := g.conn.SetDeleteElements(g.set, del); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if len(add) > 0 {
		if err := g.conn.SetAddElements(g.set, add); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("gateway: update the admitted set: %w", err)
	}
	g.have = want
	return nil
}

// Close empties the admitted set and leaves the rules: when the appliance
// stops, the boot network fails closed.
func (g *Gateway) Close() error {
	return g.Sync(nil)
}

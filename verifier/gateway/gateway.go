// Package gateway keeps the appliance's forwarding rules: traffic between the
// boot network and anything beyond the appliance passes only for admitted
// hosts. Quarantined addresses still reach the appliance itself (its DHCP,
// boot files and attestation API are local, not forwarded).
//
// The rules live in their own nftables table (inet bootgate);
// github.com/google/nftables talks netlink to the kernel. Two sets, both
// with per-element timeouts, hold what is admitted:
//
//   - admitted (ipv4_addr . ether_addr): the (address, MAC) pairs of admitted
//     hosts' production leases. A packet from the boot interface is
//     forwarded only if its IPv4 source and Ethernet source together are in
//     it: an address used from another MAC, or a MAC with another address,
//     is dropped.
//   - admitted_addrs (ipv4_addr): the same addresses, for the way back: a
//     packet out of the boot interface is forwarded only to an admitted
//     address. (Matching by destination address rather than by conntrack
//     state lets production peers open connections to admitted hosts, and a
//     revoked or expired address loses its return traffic at once instead of
//     when its conntrack entries time out. The destination MAC is not known
//     yet at the forward hook; see docs/dhcp.md for what that leaves to the
//     switch.)
//
// Every element expires Timeout after the Sync that wrote it, and every
// Sync rewrites all elements: the caller syncs periodically (at least every
// Timeout/3), so that an appliance that crashes or freezes stops forwarding
// within Timeout: the gate fails closed. Sync derives the sets' content from
// the store, so that a quarantine decided anywhere takes effect at the next
// sync, and a restarted appliance forwards nothing it should not.
//
// The gate holds only while its table does: something else on the
// appliance that replaces the ruleset (`nft flush ruleset`, a reload of
// nftables.service or firewalld) removes it, and the boot network then
// forwards by the kernel's default. Every Sync checks the chain and
// installs the table again when it is missing or altered
// (ErrReinstalled), so the gate is open at most one sync interval.
package gateway

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Names in the kernel.
const (
	TableName   = "bootgate"
	SetName     = "admitted"       // ipv4_addr . ether_addr
	AddrSetName = "admitted_addrs" // ipv4_addr
	ChainName   = "forward"
)

// DefaultTimeout is the element timeout when New is given none: three
// times the appliance's default sync interval (1 s).
const DefaultTimeout = 3 * time.Second

// ErrReinstalled: Sync found the table, its sets or its forward chain
// missing or altered (something else on the appliance replaced the
// ruleset: `nft flush ruleset`, a reload of nftables.service or
// firewalld), or could not write the sets, and installed the table again
// with the hosts it was given. The gate is in place when Sync returns an
// error wrapping ErrReinstalled alone; the caller should log it as an
// error: the gate was open since the table was removed.
var ErrReinstalled = errors.New("gateway: the nftables table was missing or altered and has been reinstalled")

// ErrBadHost: Sync was given a host without an IPv4 address or a 6-byte
// MAC address; nothing was changed.
var ErrBadHost = errors.New("gateway: host needs an IPv4 address and an Ethernet MAC address")

// Host is one admitted host as the gateway forwards it: the IPv4 address of
// its production lease and the Ethernet MAC address that holds the lease.
type Host struct {
	IP  net.IP
	MAC net.HardwareAddr
}

// Gateway is the forwarding policy for one boot network interface.
type Gateway struct {
	mu      sync.Mutex
	conn    *nftables.Conn
	table   *nftables.Table
	pairs   *nftables.Set // admitted: ipv4_addr . ether_addr
	addrs   *nftables.Set // admitted_addrs: ipv4_addr
	chain   *nftables.Chain
	iface   string
	timeout time.Duration
}

// New installs (replacing any previous one) the table, the sets and the
// forward chain for bootIface. Elements written by Sync expire after
// timeout (DefaultTimeout when ≤ 0; millisecond granularity, at least
// 1 ms). With netnsFd ≥ 0 it works in that network namespace; the
// descriptor must stay open while the Gateway is used.
func New(bootIface string, netnsFd int, timeout time.Duration) (*Gateway, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	timeout = max(timeout.Truncate(time.Millisecond), time.Millisecond)
	if bootIface == "" || len(bootIface) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("gateway: interface name %q: empty or longer than %d bytes", bootIface, unix.IFNAMSIZ-1)
	}
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{conn: c, timeout: timeout, iface: bootIface}
	if err := g.queueInstall(); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("gateway: install rules: %w", err)
	}
	return g, nil
}

// ruleCount is how many rules the forward chain holds as installed.
const ruleCount = 4

// queueInstall queues, without sending, the transaction that installs the
// table from nothing: it deletes the table if there is one (adding it
// first, so that the deletion cannot fail for a missing table), then adds
// the table, the empty sets and the forward chain with its rules. Applied
// in one transaction it is idempotent, whatever is left of the table.
func (g *Gateway) queueInstall() error {
	c := g.conn
	g.table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	c.AddTable(g.table)
	c.DelTable(g.table)
	c.AddTable(g.table)
	g.pairs = &nftables.Set{Table: g.table, Name: SetName, KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeEtherAddr),
		Concatenation: true, HasTimeout: true, Timeout: g.timeout}
	g.addrs = &nftables.Set{Table: g.table, Name: AddrSetName, KeyType: nftables.TypeIPAddr, HasTimeout: true, Timeout: g.timeout}
	for _, s := range []*nftables.Set{g.pairs, g.addrs} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("gateway: add set %s: %w", s.Name, err)
		}
	}
	accept := nftables.ChainPolicyAccept // only boot-network traffic is governed, by the rules
	g.chain = c.AddChain(&nftables.Chain{
		Name: ChainName, Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	ifname := func(meta expr.MetaKey) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: meta, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(g.iface)},
		}
	}
	ipv4 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	// ip saddr . ether saddr @admitted: the address into register 1 (the
	// first 32-bit word), the MAC into the next two (NFT_REG32_01, 9),
	// padded with zeros to the set's 12-byte key.
	fromAdmitted := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Lookup{SourceRegister: 1, SetName: g.pairs.Name, SetID: g.pairs.ID},
	}
	toAdmitted := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: g.addrs.Name, SetID: g.addrs.ID},
	}
	verdict := func(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: k}} }
	rules := [][]expr.Any{
		// From the boot network: admitted (address, MAC) pairs pass,
		// everything else drops.
		slices.Concat(ifname(expr.MetaKeyIIFNAME), ipv4, fromAdmitted, verdict(expr.VerdictAccept)),
		slices.Concat(ifname(expr.MetaKeyIIFNAME), verdict(expr.VerdictDrop)),
		// Into the boot network: admitted destinations only.
		slices.Concat(ifname(expr.MetaKeyOIFNAME), ipv4, toAdmitted, verdict(expr.VerdictAccept)),
		slices.Concat(ifname(expr.MetaKeyOIFNAME), verdict(expr.VerdictDrop)),
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: g.table, Chain: g.chain, Exprs: r})
	}
	return nil
}

// Netlink socket buffers. A sync is one batch of netlink messages, about 80
// bytes per host, which must fit in the send buffer (the kernel's default,
// about 200 KiB, holds some 2 500 hosts; 16 MiB some 200 000); the kernel
// acknowledges each message (elementsPerMessage elements) into the receive
// buffer.
const (
	sendBuffer    = 16 << 20
	receiveBuffer = 4 << 20
)

// bigBuffers raises the netlink socket's buffers to sendBuffer and
// receiveBuffer, past the system's limits (net.core.wmem_max, rmem_max)
// where the process has CAP_NET_ADMIN, which managing nftables needs anyway.
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink buffers: %w", err)
	}
	var serr error
	set := func(fd int, force, plain, n int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, n); err == nil {
			return nil
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, n)
	}
	if err := raw.Control(func(fd uintptr) {
		serr = errors.Join(set(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sendBuffer),
			set(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, receiveBuffer))
	}); err != nil {
		return fmt.Errorf("netlink buffers: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("netlink buffers: %w", serr)
	}
	return nil
}

func ifnameBytes(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Timeout is how long an element lives after the Sync that wrote it: the
// longest the gate stays open after the last Sync.
func (g *Gateway) Timeout() time.Duration { return g.timeout }

// elementsPerMessage bounds one netlink message of set elements: their
// list is one netlink attribute, whose length must fit in 16 bits (512
// elements are about 25 KiB).
const elementsPerMessage = 512

// Sync makes the admitted sets exactly hosts, each element expiring
// Timeout from now, in one nftables transaction: hosts no longer admitted
// lose forwarding at once, and those still admitted have their timeout
// re-armed (call Sync at least every Timeout/3, whether or not anything
// changed). A host without an IPv4 address or a 6-byte MAC makes Sync
// return ErrBadHost and change nothing. Duplicate hosts are written once.
//
// Sync first checks that the forward chain of the table is there with its
// rules (one netlink dump). When it is not, or the sets cannot be written,
// Sync installs the whole table again (as New does) together with hosts,
// in one transaction, and returns an error wrapping ErrReinstalled that
// says what was found; the gate is then in place again. When even that
// fails it returns the error (not wrapping ErrReinstalled): the gate is
// open if the table is gone, and the caller should retry at its next sync.
// A removed table is therefore reinstalled at the next Sync: the gate stays
// open at most one sync interval.
func (g *Gateway) Sync(hosts []Host) error {
	var pairs, addrs []nftables.SetElement
	seenPair, seenAddr := map[[10]byte]bool{}, map[[4]byte]bool{}
	for _, h := range hosts {
		ip := h.IP.To4()
		if ip == nil || len(h.MAC) != 6 {
			return fmt.Errorf("%w: %v %v", ErrBadHost, h.IP, h.MAC)
		}
		var k [10]byte
		copy(k[:4], ip)
		copy(k[4:], h.MAC)
		if !seenPair[k] {
			seenPair[k] = true
			key := make([]byte, 12) // 4 + 6, padded to 32-bit words
			copy(key, k[:])
			pairs = append(pairs, nftables.SetElement{Key: key, Timeout: g.timeout})
		}
		if a := [4]byte(ip); !seenAddr[a] {
			seenAddr[a] = true
			addrs = append(addrs, nftables.SetElement{Key: slices.Clone(ip), Timeout: g.timeout})
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	why := g.check()
	if why == nil {
		// Flushing and re-adding in one transaction: packets see the old
		// content or the new one, never an empty set in between, and every
		// element gets a fresh timeout.
		g.conn.FlushSet(g.pairs)
		g.conn.FlushSet(g.addrs)
		why = g.queueElements(pairs, addrs)
		if why == nil {
			if why = g.conn.Flush(); why == nil {
				return nil
			}
		}
		why = fmt.Errorf("update the admitted sets: %w", why)
	}
	// Install from nothing, with the elements, in one transaction.
	if err := g.queueInstall(); err != nil {
		return fmt.Errorf("gateway: reinstall after %v: %w", why, err)
	}
	if err := g.queueElements(pairs, addrs); err != nil {
		return fmt.Errorf("gateway: reinstall after %v: %w", why, err)
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("gateway: reinstall after %v: %w", why, err)
	}
	return fmt.Errorf("%w: %v", ErrReinstalled, why)
}

// Ensure checks the table as Sync does and, when it is missing or altered,
// installs it again with empty sets (forwarding nothing) and returns an
// error wrapping ErrReinstalled; it returns nil, changing nothing, when the
// table is in place. It is for a sync round that has no hosts to write
// (the store could not be read): the elements in place run out as usual,
// and a removed gate does not stay removed. Any other error means the
// table could not be installed.
func (g *Gateway) Ensure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	why := g.check()
	if why == nil {
		return nil
	}
	if err := g.queueInstall(); err != nil {
		return fmt.Errorf("gateway: reinstall after %v: %w", why, err)
	}
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("gateway: reinstall after %v: %w", why, err)
	}
	return fmt.Errorf("%w: %v", ErrReinstalled, why)
}

// check reports, as an error, why the table is not as installed: its
// forward chain (hence the table) is missing or does not hold the
// installed number of rules. A set cannot be deleted while the rules refer
// to it, so rules in place imply their sets.
func (g *Gateway) check() error {
	rules, err := g.conn.GetRules(g.table, g.chain)
	if err != nil {
		return fmt.Errorf("read chain %s of table %s: %w", ChainName, TableName, err)
	}
	if len(rules) != ruleCount {
		return fmt.Errorf("chain %s of table %s holds %d rules, want %d", ChainName, TableName, len(rules), ruleCount)
	}
	return nil
}

// queueElements queues, without sending, the addition of the elements to
// the sets, in messages of at most elementsPerMessage elements.
func (g *Gateway) queueElements(pairs, addrs []nftables.SetElement) error {
	for _, w := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{g.pairs, pairs}, {g.addrs, addrs}} {
		for chunk := range slices.Chunk(w.elems, elementsPerMessage) {
			if err := g.conn.SetAddElements(w.set, chunk); err != nil {
				return fmt.Errorf("gateway: %w", err)
			}
		}
	}
	return nil
}

// Close empties the admitted sets and leaves the rules: when the appliance
// stops, the boot network fails closed at once (and, should Close not run,
// within Timeout).
func (g *Gateway) Close() error {
	return g.Sync(nil)
}

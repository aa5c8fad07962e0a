// Package connlimit bounds what network peers can make the appliance hold
// open: a Counter of active connections (or transfers) by source address
// with a total and a per-source cap, and a Listener that sheds, by closing
// at once, every accepted connection beyond the caps.
//
// A source is an IPv4 address, or an IPv6 /64 prefix (one host can pick any
// address in its /64). Accounting takes one map entry per source with at
// least one active connection: at most Limits.Total entries, whatever the
// number of peers.
package connlimit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are the caps of one Counter.
type Limits struct {
	// Total is the most connections active at once, from all sources (> 0).
	Total int
	// PerSource is the most active at once from one source (1..Total).
	PerSource int
}

// WithDefaults returns l with a zero Total taken from d, and a zero
// PerSource from d or the total, whichever is lower.
func (l Limits) WithDefaults(d Limits) Limits {
	if l.Total == 0 {
		l.Total = d.Total
	}
	if l.PerSource == 0 {
		l.PerSource = min(d.PerSource, l.Total)
	}
	return l
}

// ErrLimits reports caps that cannot be enforced.
var ErrLimits = errors.New("connection limits")

// Validate reports caps that are not positive, or a per-source cap above
// the total, as an error wrapping ErrLimits.
func (l Limits) Validate() error {
	if l.Total <= 0 || l.PerSource <= 0 {
		return fmt.Errorf("%w: total %d and per-source %d must be positive", ErrLimits, l.Total, l.PerSource)
	}
	if l.PerSource > l.Total {
		return fmt.Errorf("%w: per-source %d above total %d", ErrLimits, l.PerSource, l.Total)
	}
	return nil
}

// Counter counts active connections by source against Limits. It is safe
// for concurrent use.
type Counter struct {
	lim    Limits
	mu     sync.Mutex
	total  int
	source map[netip.Addr]int // sources with at least one active connection
	shed   atomic.Uint64

	lastLog atomic.Int64 // unix nanoseconds of the last shedding report
}

// ReportShed logs, at most once per logEvery, that what src asked for was
// shed: msg, then the counts and limits, then attrs. A flood gets one line
// per interval, whoever sheds it.
func (c *Counter) ReportShed(log *slog.Logger, msg string, src netip.Addr, attrs ...any) {
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if now-last < int64(logEvery) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	total, sources := c.Active()
	log.Warn(msg, append([]any{"source", src.String(), "shed_total", c.Shed(), "active", total, "sources", sources,
		"max", c.lim.Total, "max_per_source", c.lim.PerSource}, attrs...)...)
}

// NewCounter returns a Counter enforcing l; invalid limits are an error
// wrapping ErrLimits.
func NewCounter(l Limits) (*Counter, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Counter{lim: l, source: make(map[netip.Addr]int)}, nil
}

// Limits returns the caps the counter enforces.
func (c *Counter) Limits() Limits { return c.lim }

// Acquire takes one slot for src (a Source key) and reports whether it
// was within both caps; a refusal is counted in Shed. Every true Acquire
// needs exactly one Release.
func (c *Counter) Acquire(src netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= c.lim.Total || c.source[src] >= c.lim.PerSource {
		c.shed.Add(1)
		return false
	}
	c.total++
	c.source[src]++
	return true
}

// Release gives back a slot taken by Acquire for src.
func (c *Counter) Release(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.source[src]
	if !ok {
		return
	}
	if n <= 1 {
		delete(c.source, src)
	} else {
		c.source[src] = n - 1
	}
	c.total--
}

// Active returns the number of slots held now and the number of sources
// holding them.
func (c *Counter) Active() (total, sources int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, len(c.source)
}

// Shed returns the number of refused Acquires since the counter was made.
func (c *Counter) Shed() uint64 { return c.shed.Load() }

// Source returns the accounting key of a peer address (*net.TCPAddr,
// *net.UDPAddr, or anything whose String is host:port): the IPv4 address,
// or the IPv6 address masked to /64. Addresses it cannot parse share the
// zero key, so they are still capped, together.
func Source(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if a != nil {
			if ap, err := netip.ParseAddrPort(a.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// SourceOf returns the accounting key (as Source does) of a peer given as
// host:port, such as net/http's Request.RemoteAddr. Addresses it cannot
// parse share the zero key.
func SourceOf(hostPort string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return netip.Addr{}
	}
	return Source(net.TCPAddrFromAddrPort(ap))
}

// Listener sheds connections beyond its Counter's caps: Accept closes them
// at once (with a TCP reset, so that no state lingers) and waits for the
// next. An accepted connection holds its slot until it is closed.
type Listener struct {
	net.Listener
	c    *Counter
	name string
	log  *slog.Logger
}

// logEvery spaces out shedding reports: a flood gets one line per interval.
const logEvery = 10 * time.Second

// NewListener wraps ln; name labels its log lines (e.g. "boot-http"). A
// nil log discards them.
func NewListener(ln net.Listener, c *Counter, name string, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, c: c, name: name, log: log}
}

// Counter returns the listener's counter.
func (l *Listener) Counter() *Counter { return l.c }

// Accept returns the next connection within the caps. Errors of the
// underlying listener are returned as they are.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := Source(conn.RemoteAddr())
		if l.c.Acquire(src) {
			return &limitedConn{Conn: conn, release: func() { l.c.Release(src) }}, nil
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		conn.Close()
		l.c.ReportShed(l.log, "connections over the caps shed", src, "listener", l.name)
	}
}

// limitedConn gives its slot back on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom keeps the underlying connection's ReadFrom (sendfile for a
// *net.TCPConn) reachable to net/http.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite half-closes the underlying connection where it can.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

package bootfiles

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/bootgate/bootgate/verifier/connlimit"
)

func TestLimitsDefaultsAndValidation(t *testing.T) {
	d := Limits{}.WithDefaults()
	if d != DefaultLimits {
		t.Fatalf("zero limits: %+v, want the defaults", d)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := d.Descriptors(); got != 643 {
		t.Errorf("default descriptors = %d, documented as 643", got)
	}
	if got := (Limits{HTTPConns: connlimit.Limits{Total: 3}}).WithDefaults().HTTPConns; got != (connlimit.Limits{Total: 3, PerSource: 3}) {
		t.Errorf("per-source default above a small total: %+v", got)
	}
	for _, tc := range []struct {
		name string
		l    Limits
	}{
		{"per source above total", Limits{HTTPConns: connlimit.Limits{Total: 2, PerSource: 3}}},
		{"negative tftp total", Limits{TFTPTransfers: connlimit.Limits{Total: -1}}},
		{"negative timeout", Limits{HTTPIdleTimeout: -time.Second}},
		{"too many retries", Limits{TFTPRetries: 11}},
		{"negative retries", Limits{TFTPRetries: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(t.TempDir(), tc.l, nil); err == nil {
				t.Fatalf("New accepted %+v", tc.l)
			}
		})
	}
}

// serveHTTP serves f on a loopback listener until the test ends.
func serveHTTP(t *testing.T, f *Files) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ServeHTTPOn(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHTTPOn: %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, src, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// closedWithin reports how long the peer took to close c, or false if it
// did not within limit.
func closedWithin(c net.Conn, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, false
	}
	return time.Since(start), true
}

// TestHTTPIdleConnectionClosed: a keep-alive connection is closed after
// the idle timeout, not before.
func TestHTTPIdleConnectionClosed(t *testing.T) {
	f, _ := setupWith(t, Limits{HTTPIdleTimeout: 300 * time.Millisecond})
	c, err := dial(t, "127.0.0.1", serveHTTP(t, f))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "HEAD /bootgate/agent.efi HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("HEAD: %s, close %v", resp.Status, resp.Close)
	}
	took, closed := closedWithin(c, 5*time.Second)
	if !closed {
		t.Fatal("an idle keep-alive connection was still open after 5 s")
	}
	if took < 200*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", took)
	}
	t.Logf("idle connection closed after %v (idle timeout 300ms)", took)
}

// TestHTTPSlowlorisCut: headers trickled in are cut at the read-header
// timeout.
func TestHTTPSlowlorisCut(t *testing.T) {
	f, _ := setupWith(t, Limits{HTTPReadHeaderTimeout: 300 * time.Millisecond})
	c, err := dial(t, "127.0.0.1", serveHTTP(t, f))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fmt.Fprint(c, "GET /bootgate/agent.efi HTTP/1.1\r\nHost: x\r\n")
	var werr error
	for i := 0; i < 50 && werr == nil; i++ { // at most 5 s
		time.Sleep(100 * time.Millisecond)
		_, werr = fmt.Fprintf(c, "X-Slow-%d: y\r\n", i)
	}
	if werr == nil {
		t.Fatal("the server still took header lines after 5 s")
	}
	if _, closed := closedWithin(c, 2*time.Second); !closed {
		t.Fatal("the connection stayed open")
	}
	took := time.Since(start)
	if took < 300*time.Millisecond {
		t.Fatalf("cut after %v, before the read-header timeout", took)
	}
	t.Logf("slowloris cut after %v (read-header timeout 300ms)", took)
}

// TestHTTPPerSourceCap: the n+1th connection of a source is closed at once,
// while another source is still served.
func TestHTTPPerSourceCap(t *testing.T) {
	const n = 3
	f, _ := setupWith(t, Limits{HTTPConns: connlimit.Limits{Total: 10, PerSource: n}})
	addr := serveHTTP(t, f)
	for i := 0; i < n; i++ {
		c, err := dial(t, "127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, closed := closedWithin(c, 200*time.Millisecond); closed {
			t.Fatalf("connection %d within the cap was closed", i+1)
		}
	}
	if c, err := dial(t, "127.0.0.1", addr); err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
	} else if took, closed := closedWithin(c, time.Second); !closed || took > 500*time.Millisecond {
		t.Fatalf("connection %d of one source was not shed at once (closed %v after %v)", n+1, closed, took)
	}
	c, err := dial(t, "127.0.0.2", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "HEAD /bootgate/agent.efi HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another source: %v %v", resp, err)
	}
	if got := f.HTTPShed(); got != 1 {
		t.Errorf("shed %d connections, want 1", got)
	}
}

// serveTFTP serves f on a loopback socket until the test ends.
func serveTFTP(t *testing.T, f *Files) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ServeTFTP(ctx, conn) }()
	t.Cleanup(func() { cancel(); <-done })
	return conn.LocalAddr().(*net.UDPAddr)
}

// tftpPeer is a raw TFTP client that never acknowledges anything.
type tftpPeer struct {
	conn *net.UDPConn
}

func newPeer(t *testing.T, src string) *tftpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tftpPeer{conn: c}
}

func rrq(name string, opts ...string) []byte {
	b := []byte{0, opRRQ}
	for _, s := range append([]string{name, "octet"}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

func (p *tftpPeer) send(t *testing.T, to *net.UDPAddr, b []byte) {
	t.Helper()
	if _, err := p.conn.WriteToUDP(b, to); err != nil {
		t.Fatal(err)
	}
}

// packet is one datagram received by a peer.
type packet struct {
	op, block uint16
	from      int // source port
}

// collect reads what arrives until nothing has for quiet, or until limit.
func (p *tftpPeer) collect(quiet, limit time.Duration) []packet {
	var got []packet
	buf := make([]byte, 2048)
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		d := time.Now().Add(quiet)
		if d.After(end) {
			d = end
		}
		p.conn.SetReadDeadline(d)
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			break
		}
		if n >= 4 {
			got = append(got, packet{op: binary.BigEndian.Uint16(buf), block: binary.BigEndian.Uint16(buf[2:]), from: from.Port})
		}
	}
	return got
}

// TestTFTPUnacknowledgedTransferStops: a read request that is never
// acknowledged gets block 1, sent 1 + TFTPRetries times, then at most an
// error packet, then nothing; its slot is free again.
func TestTFTPUnacknowledgedTransferStops(t *testing.T) {
	const retries = 2
	f, _ := setupWith(t, Limits{TFTPTimeout: 100 * time.Millisecond, TFTPRetries: retries})
	srv := serveTFTP(t, f)
	p := newPeer(t, "127.0.0.1")
	p.send(t, srv, rrq("bootgate/agent.efi"))
	got := p.collect(time.Second, 5*time.Second)
	var data, errs int
	for _, pk := range got {
		switch pk.op {
		case 3:
			data++
			if pk.block != 1 {
				t.Errorf("block %d sent before block 1 was acknowledged", pk.block)
			}
		case opERROR:
			errs++
		default:
			t.Errorf("unexpected opcode %d", pk.op)
		}
	}
	if data != 1+retries || errs > 1 {
		t.Fatalf("got %d data packets and %d errors, want %d and at most 1: %+v", data, errs, 1+retries, got)
	}
	if st := f.TFTPStats(); st.Active != 0 || st.Admitted != 1 {
		t.Fatalf("after the transfer gave up: %+v", st)
	}
	t.Logf("unacknowledged request: %d copies of block 1, %d error packet", data, errs)
}

// TestTFTPCaps: read requests over the per-source or the total cap get no
// transfer; a request repeated once its transfer has had a block
// acknowledged does not start a second one; writes get an
// error; a finished transfer frees its slot.
func TestTFTPCaps(t *testing.T) {
	f, uki := setupWith(t, Limits{
		TFTPTransfers: connlimit.Limits{Total: 2, PerSource: 1},
		TFTPTimeout:   time.Second, TFTPRetries: 1,
	})
	srv := serveTFTP(t, f)
	req := rrq("bootgate/agent.efi")
	a1, a2, b, c := newPeer(t, "127.0.0.1"), newPeer(t, "127.0.0.1"), newPeer(t, "127.0.0.2"), newPeer(t, "127.0.0.3")

	a1.send(t, srv, req)
	got := a1.collect(200*time.Millisecond, time.Second)
	if len(got) == 0 || got[0].op != 3 {
		t.Fatalf("within the caps: %+v", got)
	}
	a1.send(t, &net.UDPAddr{IP: srv.IP, Port: got[0].from}, []byte{0, opACK, 0, 1})
	if got := a1.collect(200*time.Millisecond, time.Second); len(got) == 0 || got[0].op != 3 || got[0].block != 2 {
		t.Fatalf("after block 1 was acknowledged: %+v", got)
	}
	a1.send(t, srv, req) // repeated after an acknowledgement: the running transfer answers, not a new one
	a2.send(t, srv, req) // same source: over the per-source cap
	b.send(t, srv, req)  // another source: within the total
	if got := b.collect(200*time.Millisecond, time.Second); len(got) == 0 || got[0].op != 3 {
		t.Fatalf("another source within the total: %+v", got)
	}
	c.send(t, srv, req) // over the total
	if got := a2.collect(300*time.Millisecond, time.Second); len(got) != 0 {
		t.Errorf("over the per-source cap: got %+v, want nothing", got)
	}
	if got := c.collect(300*time.Millisecond, time.Second); len(got) != 0 {
		t.Errorf("over the total cap: got %+v, want nothing", got)
	}
	st := f.TFTPStats()
	if st.Admitted != 2 || st.Shed != 2 || st.Dropped != 1 || st.Active != 2 {
		t.Errorf("stats %+v, want 2 admitted, 2 shed, 1 dropped, 2 active", st)
	}

	w := newPeer(t, "127.0.0.4")
	w.send(t, srv, append([]byte{0, opWRQ}, "x\x00octet\x00"...))
	if got := w.collect(200*time.Millisecond, time.Second); len(got) != 1 || got[0].op != opERROR || got[0].block != errAccessViolation {
		t.Errorf("write request: got %+v, want one access-violation error", got)
	}
	for _, junk := range [][]byte{{0, 4, 0, 1}, {0, opRRQ, 'x'}, rrq("x", "mail")[:9], append([]byte{0, opRRQ}, strings.Repeat("a", 300)+"\x00octet\x00"...)} {
		w.send(t, srv, junk)
	}
	if got := w.collect(200*time.Millisecond, time.Second); len(got) != 0 {
		t.Errorf("malformed datagrams answered: %+v", got)
	}

	// Once the two unacknowledged transfers give up (2 × 1 s), a full
	// transfer fits again.
	deadline := time.Now().Add(5 * time.Second)
	for f.TFTPStats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := f.TFTPStats(); st.Active != 0 {
		t.Fatalf("slots not released: %+v", st)
	}
	if got, err := receive(t, srv); err != nil || len(got) != len(uki) {
		t.Fatalf("after the slots were freed: %d bytes, %v", len(got), err)
	}
}

// receive fetches the agent UKI with the library's client.
func receive(t *testing.T, srv *net.UDPAddr) ([]byte, error) {
	t.Helper()
	c, err := tftp.NewClient(srv.String())
	if err != nil {
		return nil, err
	}
	c.SetTimeout(time.Second)
	wt, err := c.Receive("bootgate/agent.efi", "octet")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, err = wt.WriteTo(&b)
	return b.Bytes(), err
}

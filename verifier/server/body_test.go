package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/connlimit"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/wire"
)

// newBodyServer makes a Server with work limits w, body timeout d and
// metrics, as the appliance's, and serves its handler over plain HTTP on
// the loopback. Each request's first read of its body is reported on
// reading, with its source.
func newBodyServer(t *testing.T, w connlimit.Limits, d time.Duration) (*Server, string, <-chan string) {
	t.Helper()
	pol, err := policy.Load("../policy/testdata/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Roots: tpmtest.NewCA(t).Roots(), Policy: pol, Store: noStore{}, Work: w, BodyTimeout: d, Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	reading := make(chan string, 16)
	h := s.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = &readReported{ReadCloser: r.Body, src: r.RemoteAddr, reading: reading}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return s, hs.Listener.Addr().String(), reading
}

// readReported reports its first Read (before it blocks) on reading.
type readReported struct {
	io.ReadCloser
	src     string
	reading chan<- string
	once    sync.Once
}

func (r *readReported) Read(p []byte) (int, error) {
	r.once.Do(func() { r.reading <- r.src })
	return r.ReadCloser.Read(p)
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A bound on every wait of the test, never reached when it works.
	if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return c
}

// stall sends the headers of an enrollment announcing a 2-byte body, and
// no body.
func stall(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: appliance\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n", wire.PathEnroll); err != nil {
		t.Fatal(err)
	}
}

// TestStalledBodiesHoldNoSlot: peers that send a request's headers and
// never its body do not hold work slots while they stall, so an honest
// agent from another address is served, not refused 429.
func TestStalledBodiesHoldNoSlot(t *testing.T) {
	// A body timeout far beyond the test: the stalled requests stay
	// stalled until their connections close.
	s, addr, reading := newBodyServer(t, connlimit.Limits{Total: 2, PerSource: 1}, time.Hour)
	stalled := map[string]bool{}
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		stall(t, dialFrom(t, src, addr))
		stalled[src] = true
	}
	// Both are stuck reading their bodies.
	for range 2 {
		ap := netip.MustParseAddrPort(<-reading)
		if !stalled[ap.Addr().String()] {
			t.Fatalf("a request from %s read its body", ap)
		}
	}

	c := dialFrom(t, "127.0.0.4", addr)
	body := "not even JSON"
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: appliance\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", wire.PathEnroll, len(body), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("the honest request with two stalled bodies elsewhere: %d %s, want 400 for its body (not 429)", resp.StatusCode, b)
	}
	if n, _ := s.WorkInProgress(); n != 0 {
		t.Errorf("%d work slots held by stalled bodies", n)
	}
}

// TestBodyTimeoutAnswered: a body that does not arrive within BodyTimeout
// is answered 408 body_timeout; it never waits for a work slot, so it is
// not refused 429 even with every slot taken.
func TestBodyTimeoutAnswered(t *testing.T) {
	s, addr, _ := newBodyServer(t, connlimit.Limits{Total: 1, PerSource: 1}, 200*time.Millisecond)
	busy := netip.MustParseAddr("192.0.2.1")
	if !s.work.Acquire(busy) {
		t.Fatal("no slot")
	}
	defer s.work.Release(busy)

	c := dialFrom(t, "127.0.0.2", addr)
	stall(t, c)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e wire.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestTimeout || e.Code != wire.CodeBodyTimeout {
		t.Errorf("stalled body: %d %+v, want 408 %s", resp.StatusCode, e, wire.CodeBodyTimeout)
	}
	if got := testutil.ToFloat64(s.opt.Metrics.Refusals.WithLabelValues(string(wire.CodeBodyTimeout))); got != 1 {
		t.Errorf("%v refusals counted as %s, want 1", got, wire.CodeBodyTimeout)
	}
	if shed := s.work.Shed(); shed != 0 {
		t.Errorf("%d requests shed, want none: the stalled one never asked for a slot", shed)
	}
}

package server

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/connlimit"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/wire"
)

// held is a handler that holds its work slot until released: the
// expensive part of an attestation, made to last.
type held struct {
	entered chan string // the request's source, once it holds a slot
	release chan struct{}
}

func (h *held) serve(w http.ResponseWriter, r *http.Request) {
	h.entered <- r.RemoteAddr
	<-h.release
	w.WriteHeader(http.StatusOK)
}

// TestWorkFairUnderAFlood: one source floods the expensive endpoints; it
// holds at most its share of the slots, every request beyond is answered
// 429 retry_later with a Retry-After at once, and other sources still get
// through, until the total is reached.
func TestWorkFairUnderAFlood(t *testing.T) {
	counter, err := connlimit.NewCounter(connlimit.Limits{Total: 4, PerSource: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opt: Options{Logger: slog.New(slog.DiscardHandler), RetryAfter: 1500 * time.Millisecond}, work: counter}
	h := &held{entered: make(chan string, 8), release: make(chan struct{})}
	bounded := s.bounded(h.serve)

	var wg sync.WaitGroup
	answers := make(chan int, 8)
	// hold sends a request from src that gets a slot, and waits until it
	// holds it.
	hold := func(src string) {
		t.Helper()
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, wire.PathQuote, strings.NewReader("{}"))
			r.RemoteAddr = src
			bounded(w, r)
			answers <- w.Code
		}()
		if got := <-h.entered; got != src {
			t.Fatalf("%s got the slot, want %s", got, src)
		}
	}
	// refused sends a request from src that must be refused at once.
	refused := func(src string) {
		t.Helper()
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, wire.PathQuote, strings.NewReader("{}"))
		r.RemoteAddr = src
		bounded(w, r)
		if w.Code != http.StatusTooManyRequests || w.Header().Get(wire.RetryAfterHeader) != "2" || !strings.Contains(w.Body.String(), `"retry_later"`) {
			t.Fatalf("request from %s: %d %q %s, want 429 retry_later with Retry-After 2", src, w.Code, w.Header().Get(wire.RetryAfterHeader), w.Body)
		}
	}

	const flooder, other, third, fourth = "10.0.0.66:40000", "10.0.0.7:40000", "10.0.0.8:40000", "10.0.0.9:40000"
	hold(flooder)
	hold("10.0.0.66:40001") // the same source on another port
	for range 100 {
		refused(flooder)
	}
	hold(other) // the flood does not keep another source out
	hold(third)
	refused(fourth) // the total is reached
	if n, srcs := s.WorkInProgress(); n != 4 || srcs != 3 {
		t.Errorf("work in progress: %d requests from %d sources, want 4 from 3", n, srcs)
	}
	close(h.release)
	wg.Wait()
	close(answers)
	for code := range answers {
		if code != http.StatusOK {
			t.Errorf("a held request was answered %d", code)
		}
	}
	if n, _ := s.WorkInProgress(); n != 0 {
		t.Errorf("%d slots still held after every answer", n)
	}
	if shed := counter.Shed(); shed != 101 {
		t.Errorf("%d requests shed, want 101", shed)
	}
}

// newTestCA makes an identity CA in a temporary directory.
func newTestCA(t *testing.T) *pki.CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// noStore is a Store that must not be reached.
type noStore struct{ Store }

// TestExpensiveEndpointsBounded: enrollment, quote and identity renewal
// go through the work bound; with the source's share taken, each is
// answered 429 retry_later, having done nothing.
func TestExpensiveEndpointsBounded(t *testing.T) {
	pol, err := policy.Load("../policy/testdata/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ca := tpmtest.NewCA(t)
	s, err := New(Options{Roots: ca.Roots(), Policy: pol, Store: noStore{}, Work: connlimit.Limits{Total: 8, PerSource: 1}, CA: newTestCA(t)})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("192.0.2.1")
	if !s.work.Acquire(src) {
		t.Fatal("no slot")
	}
	h := s.Handler()
	for _, path := range []string{wire.PathEnroll, wire.PathQuote, wire.PathIdentityRenew} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader("not even JSON"))
		r.RemoteAddr = "192.0.2.1:5000"
		h.ServeHTTP(w, r)
		if w.Code != http.StatusTooManyRequests || w.Header().Get(wire.RetryAfterHeader) != "1" {
			t.Errorf("%s: %d %s, want 429 with Retry-After 1", path, w.Code, w.Body)
		}
	}
	s.work.Release(src)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, wire.PathEnroll, strings.NewReader("not even JSON"))
	r.RemoteAddr = "192.0.2.1:5000"
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("enroll with the slot free: %d %s, want 400 for its body", w.Code, w.Body)
	}
}

// TestWorkDefaults: zero limits take DefaultWork; behind NAT, where every
// agent shares one source address, the per-source share defaults to the
// total; limits that cannot be enforced are refused.
func TestWorkDefaults(t *testing.T) {
	pol, err := policy.Load("../policy/testdata/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	roots := tpmtest.NewCA(t).Roots()
	for _, tt := range []struct {
		name      string
		work      connlimit.Limits
		behindNAT bool
		want      connlimit.Limits // zero: New refuses
	}{
		{"defaults", connlimit.Limits{}, false, DefaultWork},
		{"total only", connlimit.Limits{Total: 10}, false, connlimit.Limits{Total: 10, PerSource: 4}},
		{"behind NAT", connlimit.Limits{}, true, connlimit.Limits{Total: DefaultWork.Total, PerSource: DefaultWork.Total}},
		{"behind NAT, total only", connlimit.Limits{Total: 32}, true, connlimit.Limits{Total: 32, PerSource: 32}},
		{"behind NAT, share set", connlimit.Limits{Total: 32, PerSource: 8}, true, connlimit.Limits{Total: 32, PerSource: 8}},
		{"share above total", connlimit.Limits{Total: 8, PerSource: 9}, false, connlimit.Limits{}},
		{"negative", connlimit.Limits{Total: -1}, false, connlimit.Limits{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{Roots: roots, Policy: pol, Store: noStore{}, Work: tt.work, BehindNAT: tt.behindNAT})
			if tt.want == (connlimit.Limits{}) {
				if err == nil {
					t.Fatalf("New accepted work limits %+v", tt.work)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.work.Limits(); got != tt.want {
				t.Errorf("work limits %+v, want %+v", got, tt.want)
			}
		})
	}
}

package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/pgtest"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// TestTwoAppliancesDeliverEachAlertOnce: two appliances on one PostgreSQL
// database run their notifiers against one receiver while incidents open
// through both; every alert is posted exactly once, and in order.
func TestTwoAppliancesDeliverEachAlertOnce(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	var stores []*store.DB
	for range 2 {
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	const alerts = 40
	var (
		mu   sync.Mutex
		got  []int64
		done = make(chan struct{})
	)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m Message
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, m.ID)
		if len(got) == alerts {
			close(done)
		}
		mu.Unlock()
	}))
	defer ts.Close()

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, st := range stores {
		n := &Notifier{URL: ts.URL, HTTP: ts.Client(), Outbox: st, Poll: time.Millisecond, MinRetry: time.Millisecond}
		wg.Go(func() { n.Run(rctx) })
	}
	for i := range alerts {
		a := &store.Attestation{HostID: fmt.Sprintf("h%d", i), Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d",
			Reasons: []wire.Reason{{Rule: "secure_boot.enabled", Detail: "off"}}}
		if _, err := stores[i%2].Record(ctx, a, store.Host{ID: a.HostID}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		// A guard against hanging, not a measure: delivery takes
		// milliseconds.
		t.Error("not every alert was delivered")
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]int{}
	for i, id := range got {
		seen[id]++
		if i > 0 && id <= got[i-1] {
			t.Errorf("alert %d posted after %d", id, got[i-1])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("alert %d posted %d times", id, n)
		}
	}
	if len(seen) != alerts {
		t.Errorf("%d alerts posted, want %d", len(seen), alerts)
	}
}

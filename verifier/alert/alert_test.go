package alert

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestDeliveryInOrderAcrossAnOutage opens incidents and moves one through
// its states while the receiver is down for a while; every event arrives
// once, in order, after the receiver comes back.
func TestDeliveryInOrderAcrossAnOutage(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	fail := func(host string) int64 {
		a := &store.Attestation{HostID: host, Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d",
			Reasons: []wire.Reason{{Rule: "secure_boot.enabled", Detail: "off"}}}
		inc, err := st.Record(ctx, a, store.Host{ID: host})
		if err != nil {
			t.Fatal(err)
		}
		return inc
	}
	i1 := fail("h1")
	fail("h2")
	if err := st.Act(ctx, i1, "alice", store.IncidentAction{Kind: "investigate"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Act(ctx, i1, "alice", store.IncidentAction{Kind: "remediate", Text: "reflashed the firmware; post-mortem filed"}); err != nil {
		t.Fatal(err)
	}
	pass := &store.Attestation{HostID: "h1", Time: time.Now(), Verdict: wire.VerdictPass, PolicyName: "p", PolicyDigest: "d"}
	if _, err := st.Record(ctx, pass, store.Host{ID: "h1"}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []Message
	down := 4 // the receiver refuses its first 4 requests
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down > 0 {
			down--
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var m Message
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("body: %v", err)
		}
		got = append(got, m)
	}))
	defer ts.Close()
	n := &Notifier{URL: ts.URL, HTTP: ts.Client(), Outbox: st, Poll: 10 * time.Millisecond, MinRetry: 10 * time.Millisecond, MaxRetry: 50 * time.Millisecond}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go n.Run(rctx)
	want := []string{"incident.opened", "incident.opened", "incident.investigating", "incident.remediated", "incident.closed"}
	for {
		mu.Lock()
		done := len(got) >= len(want)
		mu.Unlock()
		if done || rctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // no duplicates may follow
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("received %d events, want %d", len(got), len(want))
	}
	for i, m := range got {
		var ev struct{ Type string }
		json.Unmarshal(m.Event, &ev)
		if ev.Type != want[i] {
			t.Errorf("event %d is %s, want %s", i, ev.Type, want[i])
		}
		if i > 0 && m.ID <= got[i-1].ID {
			t.Errorf("event %d out of order", i)
		}
	}
	if n.Failures.Load() != 4 {
		t.Errorf("%d failed attempts, want 4", n.Failures.Load())
	}
	if p, _ := st.PendingAlerts(ctx, 10); len(p) != 0 {
		t.Errorf("%d alerts still pending", len(p))
	}
}

package appliance

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestStoreBounds: an empty retention section is the store's defaults;
// fields set replace them one by one.
func TestStoreBounds(t *testing.T) {
	r, l, every := storeBounds(config.Retention{})
	if r != store.DefaultRetention || l != store.DefaultLimits || every != defaultPruneEvery {
		t.Errorf("defaults: %+v %+v %v", r, l, every)
	}
	if r.MaxAge != 90*24*time.Hour || l.StoredFailures != 10 || l.FailureWindow != time.Hour || l.IncidentFailures != 50 {
		t.Errorf("the documented defaults changed: %+v %+v", r, l)
	}
	r, l, every = storeBounds(config.Retention{MaxAge: time.Hour, Every: time.Second, Batch: 5, StoredFailures: 3, FailureWindow: time.Minute, IncidentFailures: 7})
	if r != (store.Retention{MaxAge: time.Hour, Batch: 5}) || l != (store.Limits{StoredFailures: 3, FailureWindow: time.Minute, IncidentFailures: 7}) || every != time.Second {
		t.Errorf("set: %+v %+v %v", r, l, every)
	}
}

// TestPrune: the appliance's pruning loop deletes an attestation past the
// retention as soon as it starts, keeps the host's latest, and returns
// when its context ends.
func TestPrune(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "bootgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	old := time.Now().Add(-200 * 24 * time.Hour)
	var ids []int64
	for i := range 2 {
		a := &store.Attestation{HostID: "h", Time: old.Add(time.Duration(i) * time.Hour), Verdict: wire.VerdictPass,
			Evidence: store.Evidence{EKType: "rsa", EventLog: []byte{byte(i)}}}
		if _, err := st.Record(ctx, a, store.Host{EKType: "rsa"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	changed := st.Changed()
	done := make(chan struct{})
	go func() {
		defer close(done)
		prune(ctx, st, store.DefaultRetention, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	<-changed // the first prune committed
	cancel()
	<-done
	if _, err := st.Attestation(context.Background(), ids[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the older attestation: %v, want it pruned", err)
	}
	if _, err := st.Attestation(context.Background(), ids[1]); err != nil {
		t.Errorf("the host's latest attestation: %v", err)
	}
}

package appliance

import (
	"context"
	"log/slog"
	"time"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/store"
)

// defaultPruneEvery is how often the appliance prunes the store when
// retention.every is not set.
const defaultPruneEvery = time.Minute

// storeBounds turns the configuration's retention section into the store's
// retention, its limits on stored failures and the pruning interval, the
// store's defaults (store.DefaultRetention, store.DefaultLimits) and
// defaultPruneEvery where a field is zero.
func storeBounds(c config.Retention) (store.Retention, store.Limits, time.Duration) {
	r, l, every := store.DefaultRetention, store.DefaultLimits, defaultPruneEvery
	if c.MaxAge > 0 {
		r.MaxAge = c.MaxAge
	}
	if c.Batch > 0 {
		r.Batch = c.Batch
	}
	if c.StoredFailures > 0 {
		l.StoredFailures = c.StoredFailures
	}
	if c.FailureWindow > 0 {
		l.FailureWindow = c.FailureWindow
	}
	if c.IncidentFailures > 0 {
		l.IncidentFailures = c.IncidentFailures
	}
	if c.Every > 0 {
		every = c.Every
	}
	return r, l, every
}

// pruner is the part of the store prune uses.
type pruner interface {
	Prune(ctx context.Context, now time.Time, r store.Retention) (store.Pruned, error)
}

// prune deletes what retention r no longer keeps from st: one batch at
// start and one every interval after, until ctx ends. Each batch is one
// bounded transaction (r.Batch attestations); a backlog is worked off a
// batch per interval, so pruning never competes with admissions for long.
// Errors are logged and the next interval tries again.
func prune(ctx context.Context, st pruner, r store.Retention, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p, err := st.Prune(ctx, time.Now(), r)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("prune the store", "err", err)
		case p.Attestations > 0:
			log.Info("pruned the store", "attestations", p.Attestations, "blobs", p.Blobs, "backlog", p.Attestations == r.Batch)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

package store

import (
	"context"
	"sync"
	"time"
)

// ChangePoll is how often an appliance on PostgreSQL looks for other
// appliances' commits, so that Changed reports them.
const ChangePoll = time.Second

// settlePolls is how many polls a row ID stays in the watcher's window
// after it was first seen as the newest: a transaction that took its ID
// earlier and commits later than that is not noticed (transactions of the
// store last well under a minute).
const settlePolls = 60

// watcher wakes Changed's waiters when any appliance sharing the database
// commits an attestation (every verdict, and with it every incident change
// a verdict makes) or an audit entry (every operator action and incident
// step): it polls, every interval, the number and the newest ID of the rows
// of those two tables above a floor. IDs come from sequences, so a
// transaction may commit a row below the newest ID already seen: counting
// the rows above the floor notices it. The floor follows the newest ID
// seen settlePolls polls before, so the counts cover a bounded window
// (the rows of about a minute). A failed poll changes nothing and is
// tried again at the next interval.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{} // closed after the first poll that read the database
	once   sync.Once
}

// watchQuery reads, for attestations and then audit, the rows above the
// floor, the rows above the next floor, and the newest ID.
const watchQuery = `SELECT
	(SELECT COUNT(*) FROM attestations WHERE id > ?), (SELECT COUNT(*) FROM attestations WHERE id > ?),
	(SELECT COALESCE(MAX(id), 0) FROM attestations),
	(SELECT COUNT(*) FROM audit WHERE id > ?), (SELECT COUNT(*) FROM audit WHERE id > ?),
	(SELECT COALESCE(MAX(id), 0) FROM audit)`

// mark is what one poll saw of one table: the rows above the floor, and
// the newest ID.
type mark struct{ count, newest int64 }

// watch starts a watcher on db that notifies ch every interval in which
// another commit was seen.
func watch(db conn, every time.Duration, ch *changes) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
	go w.run(ctx, db, every, ch)
	return w
}

// stop ends the watcher and waits for it; a nil watcher does nothing.
func (w *watcher) stop() {
	if w == nil {
		return
	}
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

func (w *watcher) run(ctx context.Context, db conn, every time.Duration, ch *changes) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	var (
		floor   [2]int64   // per table
		last    [2]mark    // seen above floor
		history [][2]int64 // newest IDs of the last polls, oldest first
		started bool
	)
	for {
		// The next floor: the newest IDs settlePolls polls ago.
		next, popped := floor, false
		if len(history) >= settlePolls {
			next, history, popped = history[0], history[1:], true
		}
		var now, moved [2]mark
		err := db.QueryRowContext(ctx, watchQuery, floor[0], next[0], floor[1], next[1]).
			Scan(&now[0].count, &moved[0].count, &now[0].newest, &now[1].count, &moved[1].count, &now[1].newest)
		switch {
		case err != nil:
			// Tried again at the next tick, from the same floor.
			if popped {
				history = append([][2]int64{next}, history...)
			}
		case !started:
			// The first read sets the floor at the newest rows: nothing
			// before the appliance started is a change.
			floor = [2]int64{now[0].newest, now[1].newest}
			last = [2]mark{{0, now[0].newest}, {0, now[1].newest}}
			history = append(history, floor)
			started = true
			close(w.ready)
		default:
			if now != last {
				ch.notify()
			}
			floor = next
			moved[0].newest, moved[1].newest = now[0].newest, now[1].newest
			last = moved
			history = append(history, [2]int64{now[0].newest, now[1].newest})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

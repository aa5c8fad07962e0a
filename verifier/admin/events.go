package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// streamLifetime ends a live stream after a while; the browser's
// EventSource reconnects on its own, and a forgotten tab holds nothing for
// long.
const streamLifetime = 10 * time.Minute

// events streams the fleet summary as server-sent events: at once, after
// every committed change (coalesced over a quarter second), and at each
// heartbeat. The dashboard refreshes what it shows on each.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	if n := a.streams.Add(1); int(n) > a.opt.MaxStreams {
		a.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "busy", fmt.Sprintf("at most %d live streams at once", a.opt.MaxStreams))
		return
	}
	defer a.streams.Add(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	end := time.NewTimer(streamLifetime)
	defer end.Stop()
	heartbeat := time.NewTicker(a.opt.Heartbeat)
	defer heartbeat.Stop()
	for seq := 1; ; seq++ {
		// Wait for changes from here on before reading, so none is missed.
		changed := a.opt.Store.Changed()
		sum, err := a.readSummary(r)
		if err != nil {
			a.opt.Logger.Error("live stream", "err", err)
			return
		}
		b, _ := json.Marshal(sum)
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "id: %d\nevent: summary\ndata: %s\n\n", seq, b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-end.C:
			return
		case <-heartbeat.C:
		case <-changed:
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}
}

package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// streamLifetime ends a live stream after a while; the browser's
// EventSource reconnects on its own, and a forgotten tab holds nothing for
// long.
const streamLifetime = 10 * time.Minute

// events streams the fleet summary as server-sent events: at once, after
// every committed change (coalesced over a quarter second), and at each
// heartbeat. The dashboard refreshes what it shows on each.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	// A page of another site cannot hold streams open with the operator's
	// certificate (browsers say where a request comes from).
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		writeError(w, http.StatusForbidden, wire.CodeCSRF, "live streams are for the dashboard's own pages")
		return
	}
	op := operator(r)
	if !a.takeStream(op) {
		writeError(w, http.StatusServiceUnavailable, wire.CodeBusy,
			fmt.Sprintf("at most %d live streams at once, %d per operator", a.opt.MaxStreams, maxStreamsPerOperator))
		return
	}
	defer a.releaseStream(op)
	rc := http.NewResponseController(w)
	// The server's read timeout would end the stream: the request has no
	// body to read.
	_ = rc.SetReadDeadline(time.Time{})
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
			// An operator revoked while watching stops watching.
			if _, err := a.opt.Operators.Verify(r.TLS.PeerCertificates, time.Now()); err != nil {
				return
			}
		case <-changed:
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}
}

// maxStreamsPerOperator bounds one operator's live streams (tabs).
const maxStreamsPerOperator = 8

func (a *API) takeStream(op string) bool {
	a.streamMu.Lock()
	defer a.streamMu.Unlock()
	if a.streams >= a.opt.MaxStreams || a.perOperator[op] >= maxStreamsPerOperator {
		return false
	}
	if a.perOperator == nil {
		a.perOperator = map[string]int{}
	}
	a.streams++
	a.perOperator[op]++
	return true
}

func (a *API) releaseStream(op string) {
	a.streamMu.Lock()
	defer a.streamMu.Unlock()
	a.streams--
	if a.perOperator[op]--; a.perOperator[op] <= 0 {
		delete(a.perOperator, op)
	}
}

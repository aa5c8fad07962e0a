// Package event writes the agent's typed events to the console: one line
// "BOOTGATE-EVENT {json}" each (wire.EventMarker, wire.Event), which people
// can read and test harnesses parse instead of scraping free text.
package event

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// Emitter writes events; it is safe for concurrent use.
type Emitter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// New writes events to w, timing them from now.
func New(w io.Writer) *Emitter { return &Emitter{w: w, start: time.Now()} }

// Emit writes one event. Fields must be JSON-encodable; "event" and "t_ms"
// (milliseconds since the emitter was made) are set by Emit.
func (e *Emitter) Emit(name wire.Event, fields map[string]any) {
	m := make(map[string]any, len(fields)+2)
	for k, v := range fields {
		m[k] = v
	}
	m["event"] = name
	m["t_ms"] = time.Since(e.start).Milliseconds()
	b, err := json.Marshal(m)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"event": name, "encode_error": err.Error()})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// One write per line, so that lines from several writers do not interleave.
	_, _ = e.w.Write(append(append([]byte("\n"+wire.EventMarker+" "), b...), '\n'))
}

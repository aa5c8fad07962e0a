package qemu

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// ExitEvent is the name of the event synthesized when QEMU exits. It is
// always the last event of a VM. Its fields: "reason" (one of the Exit*
// constants), "status" (the process status as text, e.g. "exit status 0" or
// "signal: killed"), "code" (the exit code, -1 if QEMU was killed by a
// signal) and, when QEMU reported an error, "stderr" (its last lines).
const ExitEvent = "exit"

// Reasons for which a VM ends, in the "reason" field of the exit event.
const (
	ExitPowerOff = "poweroff" // the guest powered off (QEMU exited with status 0)
	ExitReset    = "reset"    // the guest reset or rebooted; -no-reboot turned that into an exit
	ExitPanic    = "panic"    // the guest reported a panic to QEMU (pvpanic)
	ExitTimeout  = "timeout"  // Config.Timeout elapsed and the VM was killed
	ExitCanceled = "canceled" // the context given to Start was done and the VM was killed
	ExitStopped  = "stopped"  // Stop killed the VM
	ExitError    = "error"    // QEMU failed (bad arguments, a missing file, a crash)
)

// Event is a typed event from a VM: one the guest printed on its serial
// console, or one synthesized by this package (ExitEvent).
type Event struct {
	// Name is the event's "event" field.
	Name string
	// Time is when the host read the event, since QEMU was started.
	Time time.Duration
	// Fields holds every field of the event's JSON object, "event" included.
	// Numbers are json.Number.
	Fields map[string]any
	// Raw is the JSON object as the guest printed it (empty for synthesized
	// events).
	Raw string
}

// String returns the field key as text: a string as is, other values in
// JSON, and "" if the field is missing or null.
func (e Event) String(key string) string {
	switch v := e.Fields[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}

// Int returns the field key as an integer: a JSON number (truncated if it has
// a fraction), a string holding an integer, or a Go integer; 0 otherwise.
func (e Event) Int(key string) int64 {
	switch v := e.Fields[key].(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return int64(f)
		}
	case string:
		if i, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			return i
		}
	case float64:
		return int64(v)
	case int:
		return int64(v)
	case int64:
		return v
	}
	return 0
}

// Format renders the event for logs: "+12.3s name {json}".
func (e Event) Format() string {
	raw := e.Raw
	if raw == "" && len(e.Fields) > 0 {
		b, _ := json.Marshal(e.Fields)
		raw = string(b)
	}
	return fmt.Sprintf("+%.1fs %s %s", e.Time.Seconds(), e.Name, raw)
}

// ParseEventLine parses one console line holding a typed event: the guest
// prints `BOOTGATE-EVENT {"event":"name",...}` (wire.EventMarker) on a line of
// its own. It tolerates
// serial noise: carriage returns, anything before the marker (firmware
// escape sequences, the tail of a kernel message) and anything after the
// JSON object. It returns false if the line holds no marker followed by a
// well-formed JSON object with a non-empty string "event" field. Time is
// left zero.
func ParseEventLine(line string) (Event, bool) {
	line = strings.ReplaceAll(line, "\r", "")
	for {
		i := strings.Index(line, wire.EventMarker)
		if i < 0 {
			return Event{}, false
		}
		line = line[i+len(wire.EventMarker):]
		if e, ok := parseEventJSON(line); ok {
			return e, true
		}
	}
}

// parseEventJSON parses the JSON object at the start of s (after blanks).
func parseEventJSON(s string) (Event, bool) {
	s = strings.TrimLeft(s, " \t:")
	if !strings.HasPrefix(s, "{") {
		return Event{}, false
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil {
		return Event{}, false
	}
	name, ok := fields["event"].(string)
	if !ok || name == "" {
		return Event{}, false
	}
	return Event{Name: name, Fields: fields, Raw: s[:dec.InputOffset()]}, true
}

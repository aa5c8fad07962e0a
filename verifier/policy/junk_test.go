package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/eventlog"
)

// efiGlobalVariable is EFI_GLOBAL_VARIABLE
// (8be4df61-93ca-11d2-aa0d-00e098032b8c) as laid out in memory.
var efiGlobalVariable = [16]byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}

// junkLog returns the RHEL 8 log with about 950 KiB of junk a host chooses
// and the quote proves: SecureBoot variables of 40 KiB, a 400 KiB kernel
// command line that enables a debugger, a boot application with a 64 KiB
// path, and authorities and variables with long names.
func junkLog(t *testing.T) []byte {
	t.Helper()
	l, _ := rhel8(t)
	const (
		evIPL                  = 0x0d
		evEFIVariableDriverCfg = 0x80000001
		evEFIVariableAuthority = 0x800000e0
	)
	for i := range 10 {
		data := eventlogtest.VariableData(efiGlobalVariable, "SecureBoot", bytes.Repeat([]byte{byte(i), 0xff}, 20<<10))
		l, _ = l.Insert(l.Event(7, evEFIVariableDriverCfg, data, data))
	}
	for i := range 4 {
		name := fmt.Sprintf("%d%s", i, bytes.Repeat([]byte("\x1b[2J"), 4<<10))
		data := eventlogtest.VariableData(eventlogtest.ImageSecurityDatabase, name, []byte("not a certificate"))
		l, _ = l.Insert(l.Event(7, evEFIVariableAuthority, data, data))
	}
	text := append([]byte("quiet kgdboc="), bytes.Repeat([]byte{'x'}, 400<<10)...)
	data := append(append([]byte("kernel_cmdline: "), text...), 0)
	l, _ = l.Insert(l.Event(8, evIPL, data, text))
	return l.Bytes()
}

// TestReasonsOfAJunkLogAreBounded is the attack of a host attesting in a
// loop with junk in its log, whose every attempt stored megabytes of
// reasons: no event data is hex-dumped into a reason, attacker text in a
// reason is clipped, and each reason's detail is at most eventlog.MaxDetailBytes.
func TestReasonsOfAJunkLogAreBounded(t *testing.T) {
	_, pol := rhel8(t)
	raw := junkLog(t)
	st, err := judge(raw, raw)
	if err != nil {
		t.Fatal(err)
	}
	fs := pol.Evaluate(st)
	b, err := json.Marshal(fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("log of %d bytes: %d reasons in %d bytes of JSON", len(raw), len(fs), len(b))
	if len(fs) == 0 {
		t.Fatal("the junk log passes")
	}
	for _, f := range fs {
		if len(f.Detail) > eventlog.MaxDetailBytes+textsafe.ClipMarkerBytes {
			t.Errorf("reason %s: event %d: detail of %d bytes, over %d", f.Rule, f.Event, len(f.Detail), eventlog.MaxDetailBytes)
		}
		if strings.Contains(f.Detail, "00ff00ff00ff") || strings.Contains(f.Detail, "xxxxxxxxxxxxxxxx"+strings.Repeat("x", eventlog.MaxQuoteBytes)) {
			t.Errorf("reason %s: event %d: detail dumps event data: %.200q", f.Rule, f.Event, f.Detail)
		}
		if bytes.Contains([]byte(f.Detail), []byte("\x1b")) {
			t.Errorf("reason %s: event %d: detail carries a control character", f.Rule, f.Event)
		}
	}
	if limit := len(fs) * (eventlog.MaxDetailBytes + textsafe.ClipMarkerBytes + 100); len(b) > limit {
		t.Errorf("reasons take %d bytes, over %d", len(b), limit)
	}
}

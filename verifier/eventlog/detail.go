package eventlog

import (
	"fmt"

	"github.com/bootgate/bootgate/internal/textsafe"
)

// Bounds of the texts that explain a verdict: the detail of an Anomaly or
// of an Unverified event, and (package policy) of a failed rule. A host
// chooses the log, so every text from it that a detail quotes (a variable
// name, a command line, a path, a certificate subject, a parser's error)
// is escaped and clipped to MaxQuoteBytes (textsafe.Clip, whose marker
// gives the text's length), and no event data is ever dumped into a
// detail: a detail names the event, its PCR, type and digest instead.
const (
	MaxDetailBytes = 1024
	MaxQuoteBytes  = 128
)

// Quote returns text from a host as a detail may carry it: escaped and
// clipped to MaxQuoteBytes.
func Quote(s string) string { return textsafe.Clip(s, MaxQuoteBytes) }

// Text is a text already made by Detailf or Quote (an Anomaly's or
// Unverified event's detail): Detailf passes it on as it is.
type Text string

// Detailf formats a detail: every string, error and fmt.Stringer argument
// is first quoted (Quote), a Text is kept, and the result is clipped to
// MaxDetailBytes.
// Other arguments (numbers) are formatted as they are; byte slices must
// not be passed (they are refused as "(bytes)").
func Detailf(format string, args ...any) string {
	q := make([]any, len(args))
	for i, a := range args {
		switch x := a.(type) {
		case Text:
			q[i] = string(x)
		case string:
			q[i] = Quote(x)
		case error:
			q[i] = Quote(x.Error())
		case fmt.Stringer:
			q[i] = Quote(x.String())
		case []byte:
			q[i] = fmt.Sprintf("(%d bytes)", len(x))
		default:
			q[i] = a
		}
	}
	return textsafe.Clip(fmt.Sprintf(format, q...), MaxDetailBytes)
}

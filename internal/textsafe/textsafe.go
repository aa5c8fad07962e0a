// Package textsafe shows text that a host sent (event data, device paths,
// certificate names, failure details) without letting it act on whoever
// reads it: terminal control sequences, carriage returns that overwrite a
// line, bells, and bidirectional overrides that reorder what is displayed.
// Text is stored as received, but for NUL bytes and bytes that are not
// UTF-8, which the store writes as \xNN (Storable) because PostgreSQL
// cannot hold them; it is escaped where it is shown: the CLI, the
// logs, the dashboard's API and the webhook bodies all use Escape. The logs
// also clip it (Clip, MaxAttrBytes), so that a host cannot fill them.
package textsafe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// unsafe reports the runes Escape replaces: the C0 controls (U+0000-U+001F,
// tab and newline included, so that one field stays one line), DEL, the C1
// controls (U+0080-U+009F, which terminals also interpret, CSI among them),
// the line and paragraph separators, every format character (Unicode
// category Cf: the bidirectional formatting characters of UAX #9, which can
// make text display in another order than it is, CVE-2021-42574, and the
// invisible ones, such as the zero-width space and joiners, the word
// joiner, the byte order mark and the soft hyphen, which make different
// names look alike), the space separators other than the ASCII space
// (a no-break space looks like a space), and the other characters that
// display as nothing (the combining grapheme joiner, the Hangul fillers,
// the variation selectors).
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f:
		return true
	case r < 0x7f:
		return false
	case r == 0x2028, r == 0x2029, r == 0x034f, r == 0x115f, r == 0x1160,
		r == 0x3164, r == 0xffa0, r == 0x180b, r == 0x180c, r == 0x180d, r == 0x180f,
		0xfe00 <= r && r <= 0xfe0f, 0xe0100 <= r && r <= 0xe01ef:
		return true
	}
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zs, r)
}

// Escape returns s with every unsafe rune written as \xNN (below U+0100),
// \uNNNN or \UNNNNNNNN (above U+FFFF), and every byte that is not valid
// UTF-8 as \xNN. The result is printable and contains no control character
// and nothing invisible; Escape of its result changes nothing. Backslashes
// are kept as they are (UEFI device paths are full of them), so the four
// characters \x1b in a host's text show as an escaped ESC would: the shown
// text is inert, and the stored record keeps the bytes as received for
// whoever must tell them apart.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafe(r) || r == utf8.RuneError && n == 1 {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r) && r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Clip returns Escape(s) cut to at most n bytes (n >= 0), at a rune
// boundary, followed, when anything was cut, by a marker giving s's length:
// "…[clipped, 1048576 bytes]". The marker adds at most ClipMarkerBytes.
// Only the first n bytes of s are read, so clipping a large text costs
// O(n).
func Clip(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(s) <= n {
		if e := Escape(s); len(e) <= n {
			return e
		}
	}
	raw := min(len(s), n)
	for raw > 0 && raw < len(s) && !utf8.RuneStart(s[raw]) {
		raw--
	}
	e := Escape(s[:raw]) // escaping never shrinks text
	cut := min(len(e), n)
	for cut > 0 && cut < len(e) && !utf8.RuneStart(e[cut]) {
		cut--
	}
	return e[:cut] + fmt.Sprintf("…[clipped, %d bytes]", len(s))
}

// ClipMarkerBytes bounds the length of Clip's marker.
const ClipMarkerBytes = 40

// Escapef formats like fmt.Sprintf and escapes the result: for a line of
// output whose arguments are text from a host.
func Escapef(format string, args ...any) string {
	return Escape(fmt.Sprintf(format, args...))
}

// JSON re-encodes a JSON document with every string in it, keys and values,
// escaped; numbers are kept exactly. Object keys come out sorted. It is for
// documents shown to people (the dashboard's API, webhook bodies); the
// stored record stays as received.
func JSON(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("escape JSON: %w", err)
	}
	out, err := json.Marshal(escapeValue(v))
	if err != nil {
		return nil, fmt.Errorf("escape JSON: %w", err)
	}
	return out, nil
}

func escapeValue(v any) any {
	switch x := v.(type) {
	case string:
		return Escape(x)
	case []any:
		for i := range x {
			x[i] = escapeValue(x[i])
		}
		return x
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[Escape(k)] = escapeValue(e)
		}
		return m
	}
	return v
}

// MaxAttrBytes bounds each string a Handler passes on (the message, each
// key, and each string, error, fmt.Stringer or other non-scalar value),
// before Clip's marker: a host can put a megabyte in a certificate's
// subject or an event's data, and a log line must not carry it.
const MaxAttrBytes = 1024

// Handler wraps a slog.Handler so that the message and every string, error
// and fmt.Stringer attribute value reach it escaped and clipped to
// MaxAttrBytes (Clip).
func Handler(h slog.Handler) slog.Handler { return handler{h} }

func clip(s string) string { return Clip(s, MaxAttrBytes) }

type handler struct{ h slog.Handler }

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, clip(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(escapeAttr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	esc := make([]slog.Attr, len(as))
	for i, a := range as {
		esc[i] = escapeAttr(a)
	}
	return handler{h.h.WithAttrs(esc)}
}

func (h handler) WithGroup(name string) slog.Handler { return handler{h.h.WithGroup(clip(name))} }

func escapeAttr(a slog.Attr) slog.Attr {
	a.Key = clip(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(clip(v.String()))
	case slog.KindGroup:
		g := v.Group()
		esc := make([]slog.Attr, len(g))
		for i, x := range g {
			esc[i] = escapeAttr(x)
		}
		a.Value = slog.GroupValue(esc...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			a.Value = slog.StringValue(clip(x.Error()))
		case fmt.Stringer:
			a.Value = slog.StringValue(clip(x.String()))
		default:
			a.Value = slog.StringValue(clip(fmt.Sprint(x)))
		}
	default:
		a.Value = v
	}
	return a
}

// Bytes shows opaque bytes (a relay's circuit ID, say) for display:
// printable ASCII as it is; every other byte (control characters, DEL,
// bytes of 0x80 and above), the backslash and the double quote as \xNN. The
// result holds no control characters and can be shown between quotes.
func Bytes(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '"' {
			fmt.Fprintf(&sb, "\\x%02x", c)
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// Storable returns s as text every database the store runs on holds:
// valid UTF-8 without NUL. PostgreSQL's text type holds no NUL byte, and a
// UTF-8 database refuses bytes that are not UTF-8; the write of a string
// carrying either fails as a whole. Storable writes each NUL byte and each
// byte that is not valid UTF-8 as \xNN, as Escape does, and leaves every
// other rune as it is (tabs, newlines and other controls stay; Escape them
// where the text is shown). A string that is valid UTF-8 without NUL is
// returned unchanged.
func Storable(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == 0 || r == utf8.RuneError && n == 1 {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == 0 || r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

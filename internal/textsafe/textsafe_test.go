package textsafe

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// hostile is text a host could put in event data or a certificate name:
// clear screen, a bell, a carriage return overwriting the line, a C1 CSI,
// DEL, a right-to-left override and isolate, a line separator, invalid
// UTF-8.
const hostile = "\\EFI\\BOOT\x1b[2J\a\rOK\u009b31m\x7f\u202egnp.exe\u2066x\u2069\u2028\xff\n"

// raw reports whether s contains a rune Escape must have removed.
func raw(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == '\u202e' || r == '\u2066' || r == '\u2069' || r == '\u2028' || r == unicode.ReplacementChar
	})
}

func TestEscape(t *testing.T) {
	got := Escape(hostile)
	want := `\EFI\BOOT\x1b[2J\x07\x0dOK\x9b31m\x7f\u202egnp.exe\u2066x\u2069\u2028\xff\x0a`
	if got != want {
		t.Fatalf("Escape = %q, want %q", got, want)
	}
	if raw(got) {
		t.Fatalf("Escape left control characters: %q", got)
	}
	for _, s := range []string{"", "plain", "HD(1,GPT,…)/EFI/ubuntu/shimx64.efi", "Ünïcödé 日本", "a b"} {
		if Escape(s) != s {
			t.Errorf("Escape(%q) = %q, want it unchanged", s, Escape(s))
		}
	}
}

// TestEscapeInvisible is the attack of a host that hides an invisible
// character in a name, so that two names look alike: what is shown must
// tell them apart. Backslashes stay as they are (device paths are full of
// them), and escaping is idempotent.
func TestEscapeInvisible(t *testing.T) {
	for _, r := range []rune{'\u200b', '\u200d', '\u2060', '\ufeff', '\u00ad', '\u00a0', '\u034f', '\ufe0f', '\U000e0041'} {
		s := "d" + string(r) + "b"
		got := Escape(s)
		if got == s || got == Escape("db") || strings.ContainsRune(got, r) {
			t.Errorf("Escape(%q) = %q: the invisible U+%04X is not escaped", s, got, r)
		}
		if Escape(got) != got {
			t.Errorf("Escape(%q) = %q, not idempotent", got, Escape(got))
		}
	}
	if got := Escape(`\EFI\BOOT\grubx64.efi`); got != `\EFI\BOOT\grubx64.efi` {
		t.Errorf("Escape of a device path = %q, want it unchanged", got)
	}
}

func TestJSON(t *testing.T) {
	in, _ := json.Marshal(map[string]any{"detail": hostile, "id": int64(1) << 60, "list": []any{hostile, true, nil}, hostile: 1})
	out, err := JSON(in)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	// Invalid UTF-8 became U+FFFD when the document was encoded.
	want := Escape(strings.ToValidUTF8(hostile, "\uFFFD"))
	if v["detail"] != want || v["id"] != json.Number("1152921504606846976") || v["list"].([]any)[0] != want || v[want] == nil {
		t.Fatalf("JSON = %s", out)
	}
	if _, err := JSON([]byte("{")); err == nil {
		t.Error("malformed JSON accepted")
	}
}

func TestHandler(t *testing.T) {
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(Handler(h(&buf))).With("issuer", hostile).WithGroup("g")
		log.Warn("enrollment refused: "+hostile, "err", errors.New(hostile), "path", hostile, slog.Group("ek", "subject", hostile), "n", 3)
		out := buf.String()
		var dec string
		if strings.HasPrefix(out, "{") {
			// JSON escapes control characters itself; decode to see what
			// a log reader gets.
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(m)
			dec = string(b)
			if m["msg"] != "enrollment refused: "+Escape(hostile) {
				t.Errorf("msg = %q", m["msg"])
			}
			if strings.Contains(out, `\u001b`) || strings.Contains(out, "\u202e") || strings.Contains(out, "\u009b") {
				t.Errorf("JSON log carries a control character: %s", out)
			}
		} else {
			dec = out
		}
		if raw(strings.TrimSuffix(out, "\n")) || !strings.Contains(dec, `\\x1b[2J`) && !strings.Contains(dec, `\x1b[2J`) {
			t.Errorf("log output %q", out)
		}
	}
}

func TestBytes(t *testing.T) {
	for in, want := range map[string]string{
		"":              "",
		"eth0/1":        "eth0/1",
		"a\\b":          `a\x5cb`,
		`say "hi"`:      `say \x22hi\x22`,
		"\x00\x7f\xff ": `\x00\x7f\xff `,
		"\u202eevil":    `\xe2\x80\xaeevil`,
	} {
		if got := Bytes([]byte(in)); got != want {
			t.Errorf("Bytes(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClip(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven cha…[clipped, 11 bytes]"},
		{"\x1b[2J", 10, `\x1b[2J`},
		{"\x1b\x1b\x1b\x1b", 10, `\x1b\x1b\x…[clipped, 4 bytes]`},
		{"ééééé", 5, "éé…[clipped, 10 bytes]"},
		{"abc", 0, "…[clipped, 3 bytes]"},
	} {
		got := Clip(tt.in, tt.n)
		if got != tt.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
		if raw(got) || len(got) > tt.n+ClipMarkerBytes || !utf8.ValidString(got) {
			t.Errorf("Clip(%q, %d) = %q: unsafe or too long", tt.in, tt.n, got)
		}
	}
}

// TestHandlerClipsAttributes is the attack of a host that puts a megabyte
// of text where a log line quotes it (a certificate subject, an error
// naming event data): every string reaching the log is at most
// MaxAttrBytes and a marker, and the marker says how much was sent.
func TestHandlerClipsAttributes(t *testing.T) {
	huge := strings.Repeat("\x1bA", 1<<19) // 1 MiB, and escaping makes it 2.5 MiB
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewJSONHandler(&buf, nil))).With("subject", huge)
	log.Warn(huge, "err", errors.New(huge), huge, 1, slog.Group("ek", "issuer", huge), "any", []byte(huge))
	if n := buf.Len(); n > 8*(MaxAttrBytes+ClipMarkerBytes) {
		t.Fatalf("one log line of %d bytes for attributes of 1 MiB", n)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	sub, _ := m["subject"].(string)
	if !strings.HasPrefix(sub, `\x1bA\x1bA`) || !strings.HasSuffix(sub, "…[clipped, 1048576 bytes]") {
		t.Errorf("subject logged as %.80q…", sub)
	}
	t.Logf("log line: %d bytes for six 1 MiB attributes", buf.Len())
}

func TestStorable(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"CN=Test EK CA":         "CN=Test EK CA",
		"tab\tnew\nline é ✓":    "tab\tnew\nline é ✓",
		"a\x00b":                `a\x00b`,
		"bad \xff\xfe byte":     `bad \xff\xfe byte`,
		"cut \xe2\x9c":          `cut \xe2\x9c`,
		"\x00\xc3\xa9\x00":      `\x00é\x00`,
		"back\\slash \x00 kept": `back\slash \x00 kept`,
	} {
		got := Storable(in)
		if got != want {
			t.Errorf("Storable(%q) = %q; want %q", in, got, want)
		}
		if !utf8.ValidString(got) || strings.ContainsRune(got, 0) {
			t.Errorf("Storable(%q) = %q: not valid UTF-8 without NUL", in, got)
		}
		if again := Storable(got); again != got {
			t.Errorf("Storable(Storable(%q)) = %q; want %q", in, again, got)
		}
	}
}

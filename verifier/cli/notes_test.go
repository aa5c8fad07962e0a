package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

// learn prints its notes escaped: a variable name the host chose (here in
// a shim authority event that uses the short-digest quirk) reaches the
// operator's terminal without its escapes or overrides.
func TestLearnNotesEscaped(t *testing.T) {
	raw, err := os.ReadFile(logs + "rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	name := "\x1b]0;owned\x07\x1b[2J\u202e" + strings.Repeat("A", 1500)
	sent, _ := l.Insert(l.ShimAuthority(name, eventlogtest.SelfSigned(t, "x")))
	path := filepath.Join(t.TempDir(), "log.bin")
	if err := os.WriteFile(path, sent.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "policy", "learn", "--eventlog", path)
	if code != 0 || !strings.Contains(errOut, "allowed: log.quirks: shim-authority-short-digest") {
		t.Fatalf("exit %d: %q", code, errOut)
	}
	if strings.ContainsAny(errOut, "\x1b\x07\u202e") {
		t.Errorf("stderr carries raw escapes: %q", errOut)
	}
}

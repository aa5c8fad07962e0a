package alert

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestWebhookBodyEscaped: a failure detail quoting hostile event data
// (clear screen, bell, carriage return, right-to-left override) reaches the
// webhook escaped, not raw and not merely JSON-escaped.
func TestWebhookBodyEscaped(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	detail := "boot application (\\EFI\\x\x1b[2J\a\rOK\u202egnp.exe) is not allowed"
	a := &store.Attestation{HostID: "h1", Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d",
		Reasons: []wire.Reason{{Rule: "code_integrity.boot_app", Event: 7, Detail: detail}}}
	if _, err := st.Record(ctx, a, store.Host{ID: "h1"}); err != nil {
		t.Fatal(err)
	}
	bodies := make(chan string, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case bodies <- string(b):
		default:
		}
	}))
	defer ts.Close()
	n := &Notifier{URL: ts.URL, HTTP: ts.Client(), Outbox: st, Poll: 10 * time.Millisecond}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go n.Run(rctx)
	select {
	case b := <-bodies:
		for _, bad := range []string{"\x1b", `\u001b`, "\a", `\u0007`, "\r", `\r`, "\u202e"} {
			if strings.Contains(b, bad) {
				t.Errorf("webhook body carries %q: %s", bad, b)
			}
		}
		if !strings.Contains(b, `\\x1b[2J\\x07\\x0dOK\\u202egnp.exe`) {
			t.Errorf("webhook body lacks the escaped detail: %s", b)
		}
	case <-rctx.Done():
		t.Fatal("no webhook delivery")
	}
}

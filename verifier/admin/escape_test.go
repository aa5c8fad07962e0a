package admin

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestAnswersEscaped: the API the dashboard renders answers text from hosts
// escaped (no control or bidi character, not even JSON-escaped), while the
// evidence bundle keeps it as received.
func TestAnswersEscaped(t *testing.T) {
	f := newFixture(t)
	const hostile = "\x1b[2J\a\r\u202e"
	a := &store.Attestation{HostID: "h1", Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d",
		Reasons: []wire.Reason{{Rule: "code_integrity.boot_app", Event: 7, Detail: "boot application (\\EFI\\" + hostile + ".efi) is not allowed"}}}
	inc, err := f.st.Record(context.Background(), a, store.Host{EKType: "rsa2048", EKIssuer: "CN=" + hostile})
	if err != nil {
		t.Fatal(err)
	}
	hc := f.httpClient(f.clientCert(t, f.profile))
	for _, path := range []string{"/api/v1/incidents/1", "/api/v1/incidents", "/api/v1/hosts/h1", "/api/v1/hosts"} {
		resp, err := hc.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s %s", path, resp.Status, body)
		}
		for _, bad := range []string{"\x1b", `\u001b`, "\a", `\u0007`, "\r", `\r`, "\u202e"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s carries %q: %s", path, bad, body)
			}
		}
		if !strings.Contains(body, `\\x1b[2J\\x07\\x0d\\u202e`) {
			t.Errorf("%s lacks the escaped text: %s", path, body)
		}
	}
	raw, err := f.client.Bundle(context.Background(), inc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `\u001b[2J\u0007\r`) {
		t.Errorf("the evidence bundle does not keep the detail as received: %s", raw)
	}
}

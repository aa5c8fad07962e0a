package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// stripBoundary is a transport that drops the boundary quote from every
// quote request, as an agent that does not send one would.
type stripBoundary struct{ rt http.RoundTripper }

func (s stripBoundary) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == wire.PathQuote {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		var q wire.QuoteRequest
		if err := json.Unmarshal(b, &q); err != nil {
			return nil, err
		}
		q.Boundary = nil
		if b, err = json.Marshal(q); err != nil {
			return nil, err
		}
		r = r.Clone(r.Context())
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	return s.rt.RoundTrip(r)
}

// A host passes under a SHA-256 policy and crosses the boundary; the
// policy then switches to SHA-1, and whatever runs in the boot handed
// over attests again with a SHA-1 quote. It must not pass: not when the
// agent extended the boundary and the OS into every bank (as it does),
// not when only the SHA-256 bank moved (as an agent that left the other
// banks alone did), and not when the boundary quote is left out.
func TestBankSwitchAfterBoundary(t *testing.T) {
	osDigest := sha256.Sum256([]byte("a production OS"))
	for _, tc := range []struct {
		name  string
		cross func(*testing.T, *tpm.TPM)
		strip bool
	}{
		{"every bank", func(t *testing.T, tp *tpm.TPM) {
			b := wire.BoundaryDigest()
			for _, d := range [][]byte{b[:], osDigest[:]} {
				if err := tp.Extend(wire.BoundaryPCR, d); err != nil {
					t.Fatal(err)
				}
			}
		}, false},
		{"SHA-256 bank only", func(t *testing.T, tp *tpm.TPM) {
			b := wire.BoundaryDigest()
			for _, d := range [][]byte{b[:], osDigest[:]} {
				if err := tp.ExtendBank(crypto.SHA256, wire.BoundaryPCR, d); err != nil {
					t.Fatal(err)
				}
			}
		}, false},
		{"SHA-256 bank only, no boundary quote", func(t *testing.T, tp *tpm.TPM) {
			b := wire.BoundaryDigest()
			for _, d := range [][]byte{b[:], osDigest[:]} {
				if err := tp.ExtendBank(crypto.SHA256, wire.BoundaryPCR, d); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := tpmtest.NewCA(t)
			tp := tpmtest.Simulator(t, ca)
			raw := tpmtest.ReplayLog(t, tp, goodLog)
			if _, err := tp.ReplayEventLogSHA1(raw); err != nil {
				t.Skipf("the simulator has no SHA-1 bank to replay into: %v", err)
			}
			f := newFixture(t, ca.Roots())
			agent := f.agent()
			if tc.strip {
				agent.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: stripBoundary{f.ts.Client().Transport}}
			}
			rep, err := agent.Attest(context.Background(), tp, raw)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if rep.Result.Verdict != wire.VerdictPass {
				t.Fatalf("first attestation: verdict %s, reasons %+v", rep.Result.Verdict, rep.Result.Reasons)
			}
			tc.cross(t, tp)
			f.srv.SetPolicy(sha1Policy(t))
			rep, err = agent.Attest(context.Background(), tp, raw)
			if err != nil {
				t.Fatalf("Attest after the switch: %v", err)
			}
			res := rep.Result
			if res.Verdict == wire.VerdictPass || len(res.Credentials) != 0 || len(res.Reasons) != 1 || res.Reasons[0].Rule != attest.CheckBoundary {
				t.Errorf("after the boundary, under a SHA-1 policy: verdict %s, %d credentials, reasons %+v; want a fail by %s", res.Verdict, len(res.Credentials), res.Reasons, attest.CheckBoundary)
			}
		})
	}
}

// Before any boundary, a SHA-1 quote comes with its boundary quote and
// passes; without it, it fails by evidence.boundary.
func TestSHA1QuoteNeedsBoundaryQuote(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	if _, err := tp.ReplayEventLogSHA1(raw); err != nil {
		t.Skipf("the simulator has no SHA-1 bank to replay into: %v", err)
	}
	f := newFixture(t, ca.Roots())
	f.srv.SetPolicy(sha1Policy(t))
	rep, err := f.agent().Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if rep.Result.Verdict != wire.VerdictPass {
		t.Fatalf("with the boundary quote: verdict %s, reasons %+v", rep.Result.Verdict, rep.Result.Reasons)
	}
	agent := f.agent()
	agent.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: stripBoundary{f.ts.Client().Transport}}
	rep, err = agent.Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if res := rep.Result; res.Verdict == wire.VerdictPass || len(res.Reasons) != 1 || res.Reasons[0].Rule != attest.CheckBoundary {
		t.Errorf("without it: verdict %s, reasons %+v", res.Verdict, res.Reasons)
	}
}

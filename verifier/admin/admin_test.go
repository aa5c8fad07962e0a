package admin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestRefusesWithoutOperatorCertificate: no certificate, a host identity
// from the attestation CA, and another appliance's operator are all refused,
// on the API and on the dashboard alike, and nothing changes.
func TestRefusesWithoutOperatorCertificate(t *testing.T) {
	f := newFixture(t)
	f.seed(t, 2, 1, 0)
	other := newFixture(t)
	otherCert := f.clientCert(t, other.profile)
	for _, tc := range []struct {
		name   string
		client *http.Client
		status int
	}{
		{"no certificate", f.httpClient(), http.StatusUnauthorized},
		{"host identity", f.httpClient(f.hostCert), http.StatusForbidden},
		{"another appliance's operator", f.httpClient(otherCert), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, req := range []struct{ method, path, body string }{
				{"GET", "/api/v1/hosts", ""},
				{"GET", "/api/v1/incidents/1/bundle", ""},
				{"GET", "/", ""},
				{"POST", "/api/v1/hosts/host-00001/quarantine", "{}"},
				{"POST", "/api/v1/incidents/1/actions", `{"kind":"note","text":"let me in"}`},
			} {
				r, _ := http.NewRequest(req.method, f.url+req.path, strings.NewReader(req.body))
				r.Header.Set("X-Bootgate-Operator", "alice")
				resp, err := tc.client.Do(r)
				if err != nil {
					t.Fatalf("%s %s: %v", req.method, req.path, err)
				}
				var e Error
				_ = json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				if resp.StatusCode != tc.status || e.Code != wire.CodeNotAnOperator || e.Message == "" {
					t.Errorf("%s %s: %d %+v, want %d not_an_operator", req.method, req.path, resp.StatusCode, e, tc.status)
				}
			}
		})
	}
	ctx := context.Background()
	if h, err := f.st.Host(ctx, "host-00001"); err != nil || h.State != store.HostAdmitted {
		t.Errorf("a refused quarantine changed the host: %+v %v", h, err)
	}
	if audit, err := f.st.ListAudit(ctx, 0, 10); err != nil || len(audit) != 0 {
		t.Errorf("refused calls reached the audit log: %+v %v", audit, err)
	}
	if _, notes, _ := f.st.Incident(ctx, 1); len(notes) != 0 {
		t.Errorf("a refused note was recorded: %+v", notes)
	}
}

func (f *fixture) clientCert(t *testing.T, p *Profile) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair([]byte(p.Certificate), []byte(p.Key))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestOperatorWorkflow walks an incident through the API as the CLI does:
// list, show with the diff against the last pass and against the policy,
// refusals that change nothing, actions recorded under the certificate's
// name, quarantine, the evidence bundle.
func TestOperatorWorkflow(t *testing.T) {
	f := newFixture(t)
	f.seed(t, 5, 2, 1)
	ctx := context.Background()
	c := f.client

	if who, err := c.WhoAmI(ctx); err != nil || who != "alice" {
		t.Fatalf("whoami: %q %v", who, err)
	}
	sum, err := c.Summary(ctx)
	if err != nil || sum.Hosts["admitted"] != 3 || sum.Hosts["quarantined"] != 3 || sum.Incidents["open"] != 3 {
		t.Fatalf("summary %+v %v", sum, err)
	}
	var ids []string
	q := store.HostQuery{Limit: 4}
	for {
		page, err := c.Hosts(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range page.Hosts {
			ids = append(ids, h.ID)
		}
		if page.Next == "" {
			break
		}
		q.After = page.Next
	}
	if len(ids) != 6 || ids[0] != "host-00000" || ids[5] != "new-0000" {
		t.Fatalf("hosts page by page: %v", ids)
	}
	incs, err := c.Incidents(ctx, store.IncidentQuery{State: store.Unresolved})
	if err != nil || len(incs.Incidents) != 3 {
		t.Fatalf("incidents: %+v %v", incs, err)
	}
	if _, err := c.Incidents(ctx, store.IncidentQuery{State: "sideways"}); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("unknown state: %v", err)
	}

	// An incident of a host that passed before: diffed against that pass.
	d, err := c.Incident(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Diff.Against != "last_pass" || !containsLine(d.Diff.Lines, "Secure Boot: on → off") ||
		d.Latest == nil || len(d.Latest.Reasons) == 0 || d.Latest.Reasons[0].Rule != "secure_boot.enabled" || len(d.Latest.PCRs) == 0 {
		t.Fatalf("incident 1: %+v", d)
	}
	// A host that never passed: explained against the policy in force.
	d, err = c.Incident(ctx, 3)
	if err != nil || d.Diff.Against != "policy" || !containsLine(d.Diff.Lines, "secure_boot.enabled") {
		t.Fatalf("incident 3: %+v %v", d, err)
	}
	if _, err := c.Incident(ctx, 99); !isStatus(err, http.StatusNotFound) {
		t.Errorf("unknown incident: %v", err)
	}

	// Refusals change nothing.
	if err := c.Act(ctx, 1, Action{Kind: "remediate"}); !isStatus(err, http.StatusConflict) {
		t.Errorf("remediation without a post-mortem: %v", err)
	}
	if err := c.Act(ctx, 1, Action{Kind: "reboot-it"}); !isStatus(err, http.StatusConflict) {
		t.Errorf("unknown action: %v", err)
	}
	for _, tc := range []struct {
		name, body string
		header     bool
		status     int
	}{
		{"no operator header", `{"kind":"note","text":"x"}`, false, http.StatusForbidden},
		{"unknown field", `{"kind":"note","text":"x","force":true}`, true, http.StatusBadRequest},
		{"two objects", `{"kind":"note","text":"x"}{"kind":"note","text":"y"}`, true, http.StatusBadRequest},
		{"oversized", `{"kind":"note","text":"` + strings.Repeat("a", maxActionBody) + `"}`, true, http.StatusRequestEntityTooLarge},
		{"not JSON", `kind=note`, true, http.StatusBadRequest},
	} {
		r, _ := http.NewRequest("POST", f.url+"/api/v1/incidents/1/actions", strings.NewReader(tc.body))
		if tc.header {
			r.Header.Set("X-Bootgate-Operator", "alice")
		}
		resp, err := c.http.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	if _, notes, _ := f.st.Incident(ctx, 1); len(notes) != 0 {
		t.Fatalf("refused actions were recorded: %+v", notes)
	}

	for _, a := range []Action{{"assign", "bob"}, {"investigate", ""}, {"note", "PCR 7 differs: SB off in firmware setup"}, {"remediate", "firmware setup password set; Secure Boot re-enabled"}} {
		if err := c.Act(ctx, 1, a); err != nil {
			t.Fatalf("%s: %v", a.Kind, err)
		}
	}
	d, err = c.Incident(ctx, 1)
	if err != nil || d.Incident.State != store.IncidentRemediated || d.Incident.Assignee != "bob" || len(d.History) != 4 || d.History[0].Author != "alice" {
		t.Fatalf("after the workflow: %+v %v", d, err)
	}
	if h, _ := c.Host(ctx, "host-00000"); h.State != store.HostQuarantined || len(h.Attestations) != 2 || len(h.Incidents) != 1 {
		t.Fatalf("a remediated host must stay quarantined until it passes: %+v", h)
	}
	if err := c.Quarantine(ctx, "host-00004"); err != nil {
		t.Fatal(err)
	}
	if err := c.Quarantine(ctx, "nobody"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("quarantine of an unknown host: %v", err)
	}
	audit, err := c.Audit(ctx, 0, 0)
	if err != nil || len(audit.Entries) != 5 || audit.Entries[0].Action != "quarantine" || audit.Entries[0].Actor != "alice" {
		t.Fatalf("audit log: %+v %v", audit, err)
	}

	raw, err := c.Bundle(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Attestations) != 1 || len(b.Attestations[0].Evidence.EventLog) == 0 || len(b.Attestations[0].Evidence.Quote) == 0 ||
		b.LastPass == nil || b.Policy == nil || !strings.Contains(b.Policy.Source, "secure_boot") || b.Policy.Digest != f.pol.Digest() ||
		b.Diff.Against != "last_pass" || len(b.History) != 4 {
		t.Fatalf("bundle incomplete: %d attestations, last pass %v, policy %v, diff %+v", len(b.Attestations), b.LastPass != nil, b.Policy != nil, b.Diff)
	}
}

// TestLiveUpdates reads the event stream: a summary at once, and another
// after an operator's action commits.
func TestLiveUpdates(t *testing.T) {
	f := newFixture(t)
	f.seed(t, 2, 1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	next := f.watch(t, ctx, f.url)
	if s := next(); s.Incidents["open"] != 1 {
		t.Fatalf("first summary %+v", s)
	}
	if err := f.client.Act(ctx, 1, Action{Kind: "investigate"}); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.Incidents["investigating"] != 1 || s.Incidents["open"] != 0 {
		t.Fatalf("summary after the action %+v", s)
	}
}

// TestLiveStreamOutlivesReadTimeout: the server's read timeout (30 s, here 1
// s) does not end a live stream.
func TestLiveStreamOutlivesReadTimeout(t *testing.T) {
	f := newFixture(t)
	f.seed(t, 2, 1, 0)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", TLSConfig(f.serverCert))
	if err != nil {
		t.Fatal(err)
	}
	hs := f.api.Server()
	hs.ReadTimeout = time.Second
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	next := f.watch(t, ctx, "https://"+ln.Addr().String())
	next()
	time.Sleep(2 * time.Second)
	if err := f.client.Act(ctx, 1, Action{Kind: "investigate"}); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.Incidents["investigating"] != 1 {
		t.Fatalf("summary after the action %+v", s)
	}
}

// TestLiveStreamLimits: a stream asked for by another site's page is
// refused, and one operator holds at most maxStreamsPerOperator.
func TestLiveStreamLimits(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(site string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/api/v1/events", nil)
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		resp, err := f.client.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := open("cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site stream: %s", resp.Status)
	}
	for i := range maxStreamsPerOperator {
		if resp := open("same-origin"); resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %s", i, resp.Status)
		}
	}
	if resp := open(""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("one stream too many: %s", resp.Status)
	}
}

// watch opens the live stream at base and returns a function that reads
// its next summary.
func (f *fixture) watch(t *testing.T, ctx context.Context, base string) func() Summary {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events", nil)
	resp, err := f.client.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan Summary)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var s Summary
				if json.Unmarshal([]byte(data), &s) == nil {
					select {
					case events <- s:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return func() Summary {
		select {
		case s, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			return s
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return Summary{}
	}
}

// TestBundleIsBounded: an incident with more failures than a bundle holds
// exports the newest and names the others.
func TestBundleIsBounded(t *testing.T) {
	f := newFixture(t)
	// Every failure is stored, beyond the store's default limit per host.
	if err := f.st.SetLimits(store.Limits{StoredFailures: MaxBundleAttestations + 5, FailureWindow: time.Hour, IncidentFailures: MaxBundleAttestations + 5}); err != nil {
		t.Fatal(err)
	}
	bad := loadEvidence(t, badLog, f.pol)
	var inc int64
	for range MaxBundleAttestations + 5 {
		_, inc = record(t, f.st, "flapping", time.Now(), bad, f.pol)
	}
	raw, err := f.client.Bundle(context.Background(), inc)
	if err != nil {
		t.Fatal(err)
	}
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Attestations) != MaxBundleAttestations || len(b.Omitted) != 5 || b.Attestations[len(b.Attestations)-1].ID != b.Incident.LastAttestationID {
		t.Fatalf("%d attestations, %d omitted, last %d (incident's last %d)", len(b.Attestations), len(b.Omitted), b.Attestations[len(b.Attestations)-1].ID, b.Incident.LastAttestationID)
	}
}

func isStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// TestDiffWithUnloggedPCR: a host re-attesting in the same boot quotes
// bootgate's PCR 15 non-zero with no event for it in the firmware log (as
// real QEMU hosts do); its incident is still compared.
func TestDiffWithUnloggedPCR(t *testing.T) {
	f := newFixture(t)
	good, bad := loadEvidence(t, goodLog, f.pol), loadEvidence(t, badLog, f.pol)
	pcr15 := wire.PCR{Index: 15, Digest: bytes.Repeat([]byte{0x11}, 32)}
	good.pcrs = append(good.pcrs, pcr15)
	bad.pcrs = append(bad.pcrs, pcr15)
	record(t, f.st, "h", time.Now(), good, f.pol)
	_, inc := record(t, f.st, "h", time.Now(), bad, f.pol)
	d, err := f.client.Incident(context.Background(), inc)
	if err != nil || d.Diff.Against != "last_pass" || !containsLine(d.Diff.Lines, "Secure Boot: on → off") {
		t.Fatalf("diff %+v, %v", d.Diff, err)
	}
}

// TestDiffAgainstPolicyReference: a host that never passed is compared with
// the known-good log the policy was learned from, when the appliance has it.
func TestDiffAgainstPolicyReference(t *testing.T) {
	f := newFixture(t)
	_, _, ref := replayed(t, goodLog)
	f.api.SetPolicy(f.api.opt.Policy, ref, goodLog+".bin")
	bad := loadEvidence(t, badLog, f.pol)
	// As quoted: PCRs without events (zero, or IMA's) beside the log's.
	bad.pcrs = append(bad.pcrs, wire.PCR{Index: 12, Digest: make([]byte, 32)}, wire.PCR{Index: 10, Digest: bytes.Repeat([]byte{7}, 32)})
	_, inc := record(t, f.st, "newcomer", time.Now(), bad, f.pol)
	d, err := f.client.Incident(context.Background(), inc)
	if err != nil || d.Diff.Against != "reference" || d.Diff.Reference != goodLog+".bin" || !containsLine(d.Diff.Lines, "Secure Boot: on → off") {
		t.Fatalf("diff %+v, %v", d.Diff, err)
	}
	if containsLine(d.Diff.Lines, "PCR 12") || containsLine(d.Diff.Lines, "PCR 10") {
		t.Errorf("PCRs the reference has no value for are shown as differences: %q", d.Diff.Lines)
	}
}

// TestBadQueries: malformed page parameters and unknown paths get a coded
// 4xx, never a 500 or an empty page.
func TestBadQueries(t *testing.T) {
	f := newFixture(t)
	f.seed(t, 3, 1, 0)
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/api/v1/hosts?limit=0", http.StatusBadRequest},
		{"/api/v1/hosts?limit=1000", http.StatusBadRequest},
		{"/api/v1/hosts?limit=abc", http.StatusBadRequest},
		{"/api/v1/hosts?state=sideways", http.StatusBadRequest},
		{"/api/v1/incidents?before=-1", http.StatusBadRequest},
		{"/api/v1/incidents?before=x", http.StatusBadRequest},
		{"/api/v1/incidents?state=lost", http.StatusBadRequest},
		{"/api/v1/audit?limit=-5", http.StatusBadRequest},
		{"/api/v1/incidents/abc", http.StatusBadRequest},
		{"/api/v1/incidents/0/bundle", http.StatusBadRequest},
		{"/api/v1/incidents/99999", http.StatusNotFound},
		{"/api/v1/hosts/nobody", http.StatusNotFound},
		{"/api/v1/nothing", http.StatusNotFound},
		{"/api/v1/hosts?after=" + strings.Repeat("z", 4000), http.StatusOK},
	} {
		resp, err := f.client.http.Get(f.url + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var e Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.status != http.StatusOK && e.Code == "") {
			t.Errorf("%s: %d %+v, want %d with a code", tc.path, resp.StatusCode, e, tc.status)
		}
	}
}

package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	_ "crypto/sha1" // event log digests
	"crypto/sha256"
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/eventlogtest"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Event logs of testdata/eventlogs: the policy is learned from goodLog.
const (
	goodLog = "rhel8-uefi"
	badLog  = "ubuntu-2104-no-secure-boot" // Secure Boot off
)

// ---------------------------------------------------------------------------
// Fixture: a verifier on a real SQLite store behind a real TLS server.

// learnedPolicy learns the policy from goodLog's boot state, verified offline,
// and round-trips it through YAML as an operator's policy file would.
func learnedPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	raw := tpmtest.EventLog(t, goodLog)
	bank, err := eventlog.Replay(raw)
	if err != nil {
		t.Fatalf("replay %s: %v", goodLog, err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		t.Fatalf("verify %s: %v", goodLog, err)
	}
	learned, _, err := policy.Learn(goodLog, st, policy.LearnOptions{})
	if err != nil {
		t.Fatalf("learn policy: %v", err)
	}
	b, err := learned.Marshal()
	if err != nil {
		t.Fatalf("marshal policy: %v", err)
	}
	p, err := policy.Parse(b)
	if err != nil {
		t.Fatalf("parse learned policy: %v\n%s", err, b)
	}
	return p
}

// fakeClock is a settable Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	pol   *policy.Policy
	roots *attest.Roots
	st    *store.SQLite
	srv   *server.Server
	ts    *httptest.Server
}

// newFixture starts a verifier trusting roots, with the learned policy and a
// fresh SQLite store; opts adjust the server options.
func newFixture(t testing.TB, roots *attest.Roots, opts ...func(*server.Options)) *fixture {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "bootgate.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	o := server.Options{Roots: roots, Policy: learnedPolicy(t), Store: st}
	for _, f := range opts {
		f(&o)
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close) // before the store closes
	return &fixture{pol: o.Policy, roots: roots, st: st, srv: srv, ts: ts}
}

// replica is another appliance on f's store, as a second replica sharing
// one database would be; opts apply to its options.
func (f *fixture) replica(t testing.TB, opts ...func(*server.Options)) *fixture {
	t.Helper()
	o := server.Options{Roots: f.roots, Policy: f.pol, Store: f.st}
	for _, fn := range opts {
		fn(&o)
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &fixture{pol: o.Policy, roots: f.roots, st: f.st, srv: srv, ts: ts}
}

func withClock(c *fakeClock) func(*server.Options) {
	return func(o *server.Options) { o.Now = c.Now }
}

// agent is the real agent client, talking to the fixture over TLS.
func (f *fixture) agent() *client.Client {
	return &client.Client{BaseURL: f.ts.URL, HTTP: f.ts.Client()}
}

func (f *fixture) postRaw(t testing.TB, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := f.ts.Client().Post(f.ts.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read answer: %v", path, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST %s: %d answer with Content-Type %q", path, resp.StatusCode, ct)
	}
	return resp.StatusCode, b
}

func (f *fixture) post(t testing.TB, path string, in any) (int, []byte) {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return f.postRaw(t, path, body)
}

// enroll posts req and requires a 200.
func (f *fixture) enroll(t testing.TB, req wire.EnrollRequest) wire.EnrollResponse {
	t.Helper()
	status, body := f.post(t, wire.PathEnroll, req)
	if status != http.StatusOK {
		t.Fatalf("enroll: %d %s", status, body)
	}
	var enr wire.EnrollResponse
	if err := json.Unmarshal(body, &enr); err != nil {
		t.Fatalf("enroll: decode %s: %v", body, err)
	}
	if enr.Session == "" || len(enr.Nonce) != 32 || len(enr.Credential) == 0 || len(enr.Secret) == 0 || !slices.Equal(enr.PCRs, server.DefaultPCRs) {
		t.Fatalf("enroll answer incomplete: %s", body)
	}
	return enr
}

// quote posts req and requires a 200.
func (f *fixture) quote(t testing.TB, req wire.QuoteRequest) wire.Result {
	t.Helper()
	status, body := f.post(t, wire.PathQuote, req)
	if status != http.StatusOK {
		t.Fatalf("quote: %d %s", status, body)
	}
	var res wire.Result
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("quote: decode %s: %v", body, err)
	}
	return res
}

// wantError checks a refusal's status and documented code.
func wantError(t testing.TB, status int, body []byte, wantStatus int, wantCode wire.Code) {
	t.Helper()
	var e wire.Error
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("answer %d is not a wire.Error: %q", status, body)
		return
	}
	if status != wantStatus || e.Code != wantCode || e.Message == "" {
		t.Errorf("answer %d %s (%q), want %d %s", status, e.Code, e.Message, wantStatus, wantCode)
	}
}

// wantAPIError checks that an agent-side error is the verifier's refusal.
func wantAPIError(t testing.TB, err error, wantStatus int, wantCode wire.Code) {
	t.Helper()
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("agent error %v, want a %d %s refusal", err, wantStatus, wantCode)
	}
	if apiErr.Status != wantStatus || apiErr.Code != wantCode {
		t.Errorf("agent error %v, want %d %s", err, wantStatus, wantCode)
	}
}

// ---------------------------------------------------------------------------
// Store assertions.

// attestations returns every stored attestation (IDs are 1, 2, ...).
func attestations(t testing.TB, st *store.SQLite) []*store.Attestation {
	t.Helper()
	var out []*store.Attestation
	for id := int64(1); ; id++ {
		a, err := st.Attestation(context.Background(), id)
		if errors.Is(err, store.ErrNotFound) {
			return out
		}
		if err != nil {
			t.Fatalf("store: %v", err)
		}
		out = append(out, a)
	}
}

func hosts(t testing.TB, st *store.SQLite) []store.Host {
	t.Helper()
	h, err := st.Hosts(context.Background())
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return h
}

func incidents(t testing.TB, st *store.SQLite) []store.Incident {
	t.Helper()
	in, err := st.Incidents(context.Background())
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return in
}

func countVerdict(as []*store.Attestation, verdict string) int {
	n := 0
	for _, a := range as {
		if a.Verdict == verdict {
			n++
		}
	}
	return n
}

// wantNothingStored checks that the store holds no host, attestation or
// incident: what every refusal before activation must leave.
func wantNothingStored(t testing.TB, st *store.SQLite) {
	t.Helper()
	if as, hs, is := attestations(t, st), hosts(t, st), incidents(t, st); len(as)+len(hs)+len(is) != 0 {
		t.Errorf("store holds %d attestations, %d hosts, %d incidents; want nothing", len(as), len(hs), len(is))
	}
}

func hasRule(reasons []wire.Reason, rule string) bool {
	return slices.ContainsFunc(reasons, func(r wire.Reason) bool { return r.Rule == rule })
}

// wantFailRecorded checks a fail verdict naming rule, and that the store
// holds it as a fail with the same reasons, the host quarantined, its open
// incident pointing at it, and no more passes than passes.
func wantFailRecorded(t testing.TB, f *fixture, res wire.Result, rule string, passes int) {
	t.Helper()
	if res.Verdict != wire.VerdictFail || !hasRule(res.Reasons, rule) || res.IncidentID == 0 || res.PolicyDigest != f.pol.Digest() {
		t.Errorf("result %+v, want a fail for %s with an incident", res, rule)
	}
	a, err := f.st.Attestation(context.Background(), res.AttestationID)
	if err != nil {
		t.Fatalf("stored attestation %d: %v", res.AttestationID, err)
	}
	if a.Verdict != wire.VerdictFail || a.HostID != res.HostID || !slices.Equal(a.Reasons, res.Reasons) || len(a.Evidence.Quote) == 0 {
		t.Errorf("stored attestation %+v does not record the fail %+v", a, res)
	}
	if n := countVerdict(attestations(t, f.st), wire.VerdictPass); n != passes {
		t.Errorf("store holds %d passes, want %d", n, passes)
	}
	h, err := f.st.Host(context.Background(), res.HostID)
	if err != nil {
		t.Fatalf("stored host: %v", err)
	}
	if h.State != store.HostQuarantined || h.LastVerdict != wire.VerdictFail || h.LastAttestationID != res.AttestationID {
		t.Errorf("stored host %+v, want quarantined by attestation %d", h, res.AttestationID)
	}
	i := slices.IndexFunc(incidents(t, f.st), func(i store.Incident) bool { return i.ID == res.IncidentID })
	if i < 0 {
		t.Fatalf("incident %d not stored", res.IncidentID)
	}
	in := incidents(t, f.st)[i]
	if in.HostID != res.HostID || in.State != store.IncidentOpen || in.LastAttestationID != res.AttestationID || !slices.Equal(in.Reasons, res.Reasons) {
		t.Errorf("stored incident %+v does not match the fail %+v", in, res)
	}
}

// ---------------------------------------------------------------------------
// A host speaking the protocol by hand with its TPM, so that tests can tamper.

type host struct {
	tp *tpm.TPM
	ek tpm.EK
	ak *tpm.AK
}

// newHost takes tp's first EK and a fresh ECC AK, released at the end of the
// test.
func newHost(t testing.TB, tp *tpm.TPM) *host {
	t.Helper()
	eks, err := tp.EKs()
	if err != nil {
		t.Fatalf("EKs: %v", err)
	}
	for _, ek := range eks[1:] {
		if err := tp.CloseEK(ek); err != nil {
			t.Fatal(err)
		}
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatalf("NewAK: %v", err)
	}
	h := &host{tp: tp, ek: eks[0], ak: ak}
	t.Cleanup(func() {
		if err := errors.Join(ak.Close(), tp.CloseEK(h.ek)); err != nil {
			t.Errorf("release host keys: %v", err)
		}
	})
	return h
}

func (h *host) enrollRequest() wire.EnrollRequest {
	return wire.EnrollRequest{EKCert: h.ek.Cert, EKPublic: h.ek.Public, AK: h.ak.Params()}
}

func (h *host) hostID(t testing.TB) string {
	t.Helper()
	return hostIDOf(t, h.ek.Public)
}

func hostIDOf(t testing.TB, ekPublic []byte) string {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	id, err := attest.HostID(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// activate answers the activation challenge with the TPM.
func (h *host) activate(t testing.TB, enr wire.EnrollResponse) []byte {
	t.Helper()
	secret, err := h.ak.ActivateCredential(h.ek, enr.Credential, enr.Secret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return secret
}

// quoteWith quotes pcrs over nonce with ak and reads their values.
func (h *host) quoteWith(t testing.TB, ak *tpm.AK, nonce []byte, pcrs []int) (quote, sig []byte, values []wire.PCR) {
	t.Helper()
	quote, sig, err := ak.Quote(nonce, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	v, err := h.tp.PCRs(pcrs)
	if err != nil {
		t.Fatalf("PCRs: %v", err)
	}
	for _, i := range pcrs {
		values = append(values, wire.PCR{Index: i, Digest: v[i]})
	}
	return quote, sig, values
}

// The link of a test agent on this machine: the fixtures listen on
// 127.0.0.1, and the loopback interface has no MAC.
var (
	loopbackMAC = make(net.HardwareAddr, wire.MACLen)
	loopbackIP  = netip.MustParseAddr("127.0.0.1")
)

// linked is the qualifying data of a quote over nonce from link (mac, ip).
func linked(t testing.TB, nonce []byte, mac net.HardwareAddr, ip netip.Addr) []byte {
	t.Helper()
	qd, err := wire.QualifyingData(nonce, mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	return qd
}

// local is the qualifying data of a quote over nonce from the loopback link.
func local(t testing.TB, nonce []byte) []byte {
	t.Helper()
	return linked(t, nonce, loopbackMAC, loopbackIP)
}

// answer is the honest answer to enr from the loopback link: activation,
// quote of the requested PCRs over the nonce and the link, their values and
// log.
func (h *host) answer(t testing.TB, enr wire.EnrollResponse, log []byte) wire.QuoteRequest {
	t.Helper()
	return h.answerFrom(t, enr, log, loopbackMAC, loopbackIP)
}

// answerFrom is the honest answer to enr from the link (mac, ip).
func (h *host) answerFrom(t testing.TB, enr wire.EnrollResponse, log []byte, mac net.HardwareAddr, ip netip.Addr) wire.QuoteRequest {
	t.Helper()
	q := wire.QuoteRequest{Session: enr.Session, ActivationSecret: h.activate(t, enr), EventLog: log, MAC: mac.String(), IP: ip.String()}
	q.Quote, q.Signature, q.PCRs = h.quoteWith(t, h.ak, linked(t, enr.Nonce, mac, ip), enr.PCRs)
	return q
}

// recorder keeps the bodies the agent sent and received, by path.
type recorder struct {
	rt       http.RoundTripper
	mu       sync.Mutex
	requests map[string][]byte
	answers  map[string][]byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	clone := req.Clone(req.Context())
	clone.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := r.rt.RoundTrip(clone)
	if err != nil {
		return nil, err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[req.URL.Path], r.answers[req.URL.Path] = body, answer
	return resp, nil
}

func (r *recorder) decode(t testing.TB, m map[string][]byte, path string, v any) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := json.Unmarshal(m[path], v); err != nil {
		t.Fatalf("recorded %s: %v", path, err)
	}
}

// ---------------------------------------------------------------------------
// Tests.

func TestGoodHostAdmitted(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	f := newFixture(t, ca.Roots())

	rec := &recorder{rt: f.ts.Client().Transport, requests: map[string][]byte{}, answers: map[string][]byte{}}
	agent := f.agent()
	agent.HTTP = &http.Client{Transport: rec, Timeout: 30 * time.Second}
	before := time.Now()
	rep, err := agent.Attest(context.Background(), tp, raw)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	res := rep.Result
	var enrReq wire.EnrollRequest
	var enr wire.EnrollResponse
	var q wire.QuoteRequest
	rec.decode(t, rec.requests, wire.PathEnroll, &enrReq)
	rec.decode(t, rec.answers, wire.PathEnroll, &enr)
	rec.decode(t, rec.requests, wire.PathQuote, &q)

	id := hostIDOf(t, enrReq.EKPublic)
	if res.Verdict != wire.VerdictPass || len(res.Reasons) != 0 || res.IncidentID != 0 || res.HostID != id || enr.HostID != id ||
		res.PolicyDigest != f.pol.Digest() || res.AttestationID == 0 || rep.EK.Type != "ecc-p256" {
		t.Fatalf("Attest = %+v (EK %s), want a pass of host %s under policy %s", res, rep.EK.Type, id, f.pol.Digest())
	}
	if !enr.ExpiresAt.After(before) {
		t.Errorf("session expires at %v, before it was made", enr.ExpiresAt)
	}

	// The record holds the evidence exactly as the agent sent it.
	a, err := f.st.Attestation(context.Background(), res.AttestationID)
	if err != nil {
		t.Fatalf("stored attestation: %v", err)
	}
	ev := a.Evidence
	if a.HostID != id || a.Verdict != wire.VerdictPass || len(a.Reasons) != 0 || a.PolicyName != goodLog || a.PolicyDigest != f.pol.Digest() {
		t.Errorf("stored attestation %s %s %v policy %s %s", a.HostID, a.Verdict, a.Reasons, a.PolicyName, a.PolicyDigest)
	}
	if a.Time.Before(before.Add(-time.Second)) || a.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("stored time %v", a.Time)
	}
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"event log", ev.EventLog, raw},
		{"quote", ev.Quote, q.Quote},
		{"signature", ev.Signature, q.Signature},
		{"nonce", ev.Nonce, enr.Nonce},
		{"EK public", ev.EKPublic, enrReq.EKPublic},
		{"AK public", ev.AK.Public, enrReq.AK.Public},
		{"AK creation data", ev.AK.CreateData, enrReq.AK.CreateData},
		{"AK creation attestation", ev.AK.CreateAttestation, enrReq.AK.CreateAttestation},
		{"AK creation signature", ev.AK.CreateSignature, enrReq.AK.CreateSignature},
		{"EK certificate", ev.EKCert, enrReq.EKCert},
	} {
		if len(c.want) == 0 || !bytes.Equal(c.got, c.want) {
			t.Errorf("stored %s (%d bytes) differs from the %d bytes sent", c.name, len(c.got), len(c.want))
		}
	}
	if ev.EKType != "ecc-p256" || !slices.EqualFunc(ev.PCRs, q.PCRs, func(a, b wire.PCR) bool { return a.Index == b.Index && bytes.Equal(a.Digest, b.Digest) }) {
		t.Errorf("stored EK type %q, PCRs %v; sent %v", ev.EKType, ev.PCRs, q.PCRs)
	}
	values, err := tp.PCRs(server.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ev.PCRs {
		if !bytes.Equal(p.Digest, values[p.Index]) {
			t.Errorf("stored PCR %d differs from the TPM's", p.Index)
		}
	}
	// The quote in the record verifies on its own: the record is evidence.
	akPub, err := goattest.ParseAKPublic(ev.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	var pcrs []goattest.PCR
	for _, p := range ev.PCRs {
		pcrs = append(pcrs, goattest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: crypto.SHA256})
	}
	mac, ip, err := wire.ParseLink(q.MAC, q.IP)
	if err != nil || !bytes.Equal(mac, loopbackMAC) || ip != loopbackIP {
		t.Errorf("the agent quoted link %q %q (%v), want its loopback link", q.MAC, q.IP, err)
	}
	if err := akPub.Verify(goattest.Quote{Quote: ev.Quote, Signature: ev.Signature}, pcrs, local(t, ev.Nonce)); err != nil {
		t.Errorf("stored quote does not verify over its nonce and link: %v", err)
	}
	cert, err := x509.ParseCertificate(ev.EKCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(ca.Cert()); err != nil {
		t.Errorf("stored EK certificate is not the CA's: %v", err)
	}
	var state struct {
		Events     int               `json:"events"`
		PCRs       map[string]string `json:"pcrs"`
		SecureBoot struct {
			Enabled bool `json:"enabled"`
		} `json:"secure_boot"`
	}
	if err := json.Unmarshal(a.BootState, &state); err != nil || state.Events == 0 || len(state.PCRs) != 16 || !state.SecureBoot.Enabled {
		t.Errorf("stored boot state %.200s: %v", a.BootState, err)
	}

	hs := hosts(t, f.st)
	if len(hs) != 1 {
		t.Fatalf("store holds %d hosts, want 1", len(hs))
	}
	h := hs[0]
	if h.ID != id || h.State != store.HostAdmitted || h.LastVerdict != wire.VerdictPass || h.LastAttestationID != res.AttestationID ||
		h.EKType != "ecc-p256" || h.EKIssuer != ca.Cert().Subject.String() || !h.FirstSeen.Equal(h.LastSeen) {
		t.Errorf("stored host %+v", h)
	}
	if in := incidents(t, f.st); len(in) != 0 {
		t.Errorf("a pass opened incidents: %+v", in)
	}
	if as := attestations(t, f.st); len(as) != 1 {
		t.Errorf("store holds %d attestations, want 1", len(as))
	}
}

func TestBadHostQuarantined(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, badLog)
	f := newFixture(t, ca.Roots())

	var first wire.Result
	for round := 1; round <= 2; round++ {
		rep, err := f.agent().Attest(context.Background(), tp, raw)
		if err != nil {
			t.Fatalf("Attest %d: %v", round, err)
		}
		res := rep.Result
		i := slices.IndexFunc(res.Reasons, func(r wire.Reason) bool { return r.Rule == policy.RuleSecureBootEnabled })
		if res.Verdict != wire.VerdictFail || i < 0 || res.Reasons[i].Event <= 0 || res.IncidentID == 0 {
			t.Fatalf("Attest %d = %+v, want a fail for %s naming its event, with an incident", round, res, policy.RuleSecureBootEnabled)
		}
		wantFailRecorded(t, f, res, policy.RuleSecureBootEnabled, 0)
		if round == 1 {
			first = res
			continue
		}
		if res.IncidentID != first.IncidentID || res.AttestationID == first.AttestationID || res.HostID != first.HostID {
			t.Errorf("second fail %+v, want the first's incident %d", res, first.IncidentID)
		}
	}
	in := incidents(t, f.st)
	if len(in) != 1 {
		t.Fatalf("store holds %d incidents, want 1", len(in))
	}
	if in[0].Failures != 2 || in[0].FirstAttestationID != first.AttestationID || in[0].HostID != first.HostID {
		t.Errorf("incident %+v, want 2 failures from attestation %d on", in[0], first.AttestationID)
	}
	if as := attestations(t, f.st); len(as) != 2 || countVerdict(as, wire.VerdictFail) != 2 {
		t.Errorf("store holds %d attestations, want 2 fails", len(as))
	}
	if hs := hosts(t, f.st); len(hs) != 1 || hs[0].State != store.HostQuarantined {
		t.Errorf("hosts %+v, want one quarantined", hs)
	}
}

func TestReplayedQuote(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	f := newFixture(t, ca.Roots())
	h := newHost(t, tp)

	q := h.answer(t, f.enroll(t, h.enrollRequest()), raw)
	if res := f.quote(t, q); res.Verdict != wire.VerdictPass {
		t.Fatalf("first quote: %+v", res)
	}
	status, body := f.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)
	q.Session = strings.Repeat("0", 32)
	status, body = f.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)

	if as := attestations(t, f.st); len(as) != 1 || as[0].Verdict != wire.VerdictPass {
		t.Errorf("store holds %d attestations, want the first pass only", len(as))
	}
	if in := incidents(t, f.st); len(in) != 0 {
		t.Errorf("replays opened incidents: %+v", in)
	}
}

// TestQuoteAfterBoundary: a TPM whose boot went past bootgate's boundary
// (PCR 15 moved: credentials unsealed, an OS loaded) quotes a good firmware
// log; the quote is refused and recorded, and the host is quarantined.
// Whoever runs code in a production OS cannot attest with its TPM, for
// itself or for another machine.
func TestQuoteAfterBoundary(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	boundary := wire.BoundaryDigest()
	if err := tp.Extend(wire.BoundaryPCR, boundary[:]); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, ca.Roots())
	h := newHost(t, tp)
	res := f.quote(t, h.answer(t, f.enroll(t, h.enrollRequest()), raw))
	if res.Verdict != wire.VerdictFail || len(res.Reasons) != 1 || res.Reasons[0].Rule != attest.CheckBoundary || res.IncidentID == 0 {
		t.Fatalf("result %+v, want a fail for %s with an incident", res, attest.CheckBoundary)
	}
	if hs := hosts(t, f.st); len(hs) != 1 || hs[0].State != store.HostQuarantined {
		t.Errorf("hosts %+v, want one quarantined", hs)
	}
}

func TestNonceExpiry(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	const ttl = 30 * time.Second

	for _, c := range []struct {
		name   string
		wait   time.Duration
		status int
		code   wire.Code
	}{
		{"just in time", ttl - time.Nanosecond, http.StatusOK, ""},
		{"at expiry", ttl, http.StatusGone, wire.CodeNonceExpired},
		{"long expired", ttl + time.Hour, http.StatusGone, wire.CodeNonceExpired},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := newClock()
			f := newFixture(t, ca.Roots(), withClock(clock), func(o *server.Options) { o.SessionTTL = ttl })
			start := clock.Now()
			enr := f.enroll(t, h.enrollRequest())
			if !enr.ExpiresAt.Equal(start.Add(ttl)) {
				t.Errorf("session expires at %v, want %v", enr.ExpiresAt, start.Add(ttl))
			}
			q := h.answer(t, enr, raw)
			clock.Advance(c.wait)
			status, body := f.post(t, wire.PathQuote, q)
			if c.status == http.StatusOK {
				if status != http.StatusOK {
					t.Fatalf("quote %v before expiry: %d %s", ttl-c.wait, status, body)
				}
				if as := attestations(t, f.st); len(as) != 1 || as[0].Verdict != wire.VerdictPass {
					t.Errorf("store holds %d attestations, want 1 pass", len(as))
				}
				return
			}
			wantError(t, status, body, c.status, c.code)
			// The expired session stays expired, even were the clock set back.
			status, body = f.post(t, wire.PathQuote, q)
			wantError(t, status, body, c.status, c.code)
			wantNothingStored(t, f.st)
		})
	}
}

// TestEnrollmentFloodKeepsPendingSession floods enrollments made with a
// copy of a host's EK certificate (public data) and AKs made in software,
// which enroll (see TestSoftwareAK), while the host's own session is
// pending: sessions live in their tokens, not in a table, so none of the
// flood can evict the host's session or fill anything, and the host's quote
// still passes.
func TestEnrollmentFloodKeepsPendingSession(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	f := newFixture(t, ca.Roots())

	enr := f.enroll(t, h.enrollRequest())
	q := h.answer(t, enr, raw)
	for range 50 {
		f.enroll(t, wire.EnrollRequest{EKCert: h.ek.Cert, EKPublic: h.ek.Public, AK: newSoftwareAK(t).params})
	}
	wantNothingStored(t, f.st)
	if res := f.quote(t, q); res.Verdict != wire.VerdictPass {
		t.Fatalf("the host's quote after the flood: %+v", res)
	}
}

// TestSessionOnAnyReplica enrolls with one appliance and quotes to another
// sharing its store and session key: the quote passes there, and is
// refused as used on both afterwards. A replica with another key refuses
// the token as unknown.
func TestSessionOnAnyReplica(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	key := bytes.Repeat([]byte{7}, server.SessionKeySize)
	a := newFixture(t, ca.Roots(), func(o *server.Options) { o.SessionKey = key })
	b := a.replica(t, func(o *server.Options) { o.SessionKey = key })
	other := a.replica(t, func(o *server.Options) { o.SessionKey = bytes.Repeat([]byte{8}, server.SessionKeySize) })

	enr := a.enroll(t, h.enrollRequest())
	q := h.answer(t, enr, raw)
	status, body := other.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)
	wantNothingStored(t, a.st)

	if res := b.quote(t, q); res.Verdict != wire.VerdictPass {
		t.Fatalf("quote on the other replica: %+v", res)
	}
	for _, f := range []*fixture{a, b} {
		status, body := f.post(t, wire.PathQuote, q)
		wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)
	}
	if as := attestations(t, a.st); len(as) != 1 {
		t.Errorf("%d attestations stored, want 1", len(as))
	}
}

// TestAKFromAnotherTPM presents the EK (and certificate) of TPM A, copied as
// public data, with an AK of TPM B: enrollment cannot tell, but B cannot
// activate the credential, and no guess of the secret is accepted.
func TestAKFromAnotherTPM(t *testing.T) {
	ca := tpmtest.NewCA(t)
	// TPM A is closed before B opens: one simulator runs at a time.
	tpA := tpmtest.Simulator(t, ca)
	eksA, err := tpA.EKs()
	if err != nil {
		t.Fatal(err)
	}
	ekA := eksA[0]
	if err := errors.Join(tpA.CloseEK(ekA), tpA.Close()); err != nil {
		t.Fatal(err)
	}

	tpB := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tpB, goodLog)
	b := newHost(t, tpB)
	if bytes.Equal(b.ek.Public, ekA.Public) {
		t.Fatal("the two simulators have the same EK")
	}
	f := newFixture(t, ca.Roots())
	forged := wire.EnrollRequest{EKCert: ekA.Cert, EKPublic: ekA.Public, AK: b.ak.Params()}

	for _, c := range []struct {
		name   string
		secret func(t *testing.T, enr wire.EnrollResponse) []byte
	}{
		{"random secret", func(t *testing.T, _ wire.EnrollResponse) []byte {
			s := make([]byte, 32)
			if _, err := rand.Read(s); err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"no secret", func(*testing.T, wire.EnrollResponse) []byte { return nil }},
		{"encrypted secret echoed", func(_ *testing.T, enr wire.EnrollResponse) []byte { return enr.Secret }},
		{"secret of B's own session", func(t *testing.T, _ wire.EnrollResponse) []byte {
			return b.activate(t, f.enroll(t, b.enrollRequest()))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			enr := f.enroll(t, forged)
			if enr.HostID != hostIDOf(t, ekA.Public) {
				t.Errorf("enrolled as host %s, want A's", enr.HostID)
			}
			if s, err := b.ak.ActivateCredential(b.ek, enr.Credential, enr.Secret); err == nil {
				t.Fatalf("TPM B activated a credential for A's EK: %x", s)
			}
			q := wire.QuoteRequest{Session: enr.Session, ActivationSecret: c.secret(t, enr), EventLog: raw}
			q.Quote, q.Signature, q.PCRs = b.quoteWith(t, b.ak, local(t, enr.Nonce), enr.PCRs)
			q.MAC, q.IP = loopbackMAC.String(), loopbackIP.String()
			status, body := f.post(t, wire.PathQuote, q)
			wantError(t, status, body, http.StatusForbidden, wire.CodeActivationFailed)
			status, body = f.post(t, wire.PathQuote, q)
			wantError(t, status, body, http.StatusNotFound, wire.CodeUnknownSession)
			wantNothingStored(t, f.st)
		})
	}
}

func TestEKTrust(t *testing.T) {
	ca := tpmtest.NewCA(t)

	t.Run("certificate from another manufacturer", func(t *testing.T) {
		tp := tpmtest.Simulator(t, tpmtest.NewCA(t)) // same name, other key
		raw := tpmtest.ReplayLog(t, tp, goodLog)
		f := newFixture(t, ca.Roots())
		_, err := f.agent().Attest(context.Background(), tp, raw)
		wantAPIError(t, err, http.StatusForbidden, wire.CodeEKUntrusted)
		wantNothingStored(t, f.st)
	})

	t.Run("no certificate", func(t *testing.T) {
		tp := tpmtest.Simulator(t, nil)
		raw := tpmtest.ReplayLog(t, tp, goodLog)
		f := newFixture(t, ca.Roots())
		_, err := f.agent().Attest(context.Background(), tp, raw)
		wantAPIError(t, err, http.StatusForbidden, wire.CodeEKUntrusted)
		wantNothingStored(t, f.st)

		// Allowlisted (host IDs compare case-insensitively), the same EK
		// enrolls and the host is admitted.
		eks, err := tp.EKs()
		if err != nil {
			t.Fatal(err)
		}
		id := hostIDOf(t, eks[0].Public)
		if err := tp.CloseEK(eks[0]); err != nil {
			t.Fatal(err)
		}
		f = newFixture(t, ca.Roots("0000000000000000000000000000000f", strings.ToUpper(id)))
		rep, err := f.agent().Attest(context.Background(), tp, raw)
		if err != nil {
			t.Fatalf("Attest with an allowlisted EK: %v", err)
		}
		if rep.Result.Verdict != wire.VerdictPass || rep.Result.HostID != id || rep.EK.Type != "rsa2048" {
			t.Fatalf("Attest = %+v (EK %s), want a pass of %s", rep.Result, rep.EK.Type, id)
		}
		a, err := f.st.Attestation(context.Background(), rep.Result.AttestationID)
		if err != nil {
			t.Fatal(err)
		}
		hs := hosts(t, f.st)
		if a.Verdict != wire.VerdictPass || a.Evidence.EKCert != nil || a.Evidence.EKType != "rsa2048" ||
			len(hs) != 1 || hs[0].ID != id || hs[0].EKIssuer != "" || hs[0].State != store.HostAdmitted {
			t.Errorf("stored attestation %s EK cert %d bytes, hosts %+v", a.Verdict, len(a.Evidence.EKCert), hs)
		}
	})

	t.Run("forged enrollments", func(t *testing.T) {
		tp := tpmtest.Simulator(t, ca)
		h := newHost(t, tp)
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		akKey, err := tpm2.Unmarshal[tpm2.TPMTPublic](h.ak.Params().Public)
		if err != nil {
			t.Fatal(err)
		}
		akPub, err := tpm2.Pub(*akKey)
		if err != nil {
			t.Fatal(err)
		}
		garbage := make([]byte, 90)
		if _, err := rand.Read(garbage); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			tamper func(r *wire.EnrollRequest)
			now    time.Duration // the verifier's clock, from now
		}{
			{"certificate for another key", func(r *wire.EnrollRequest) { r.EKCert = ca.IssueEKCert(t, other.Public()) }, 0},
			{"the root certificate as EK certificate", func(r *wire.EnrollRequest) { r.EKCert = ca.Cert().Raw }, 0},
			{"garbage certificate", func(r *wire.EnrollRequest) { r.EKCert = garbage }, 0},
			{"AK presented as EK", func(r *wire.EnrollRequest) {
				r.EKPublic, r.EKCert = h.ak.Params().Public, ca.IssueEKCert(t, akPub)
			}, 0},
			{"garbage EK public", func(r *wire.EnrollRequest) { r.EKPublic = garbage }, 0},
			{"truncated EK public", func(r *wire.EnrollRequest) { r.EKPublic = r.EKPublic[:len(r.EKPublic)-1] }, 0},
			{"no EK public", func(r *wire.EnrollRequest) { r.EKPublic = nil }, 0},
			{"no certificate", func(r *wire.EnrollRequest) { r.EKCert = nil }, 0},
			{"expired certificate", func(*wire.EnrollRequest) {}, 11 * 365 * 24 * time.Hour},
			{"certificate not yet valid", func(*wire.EnrollRequest) {}, -2 * time.Hour},
		} {
			t.Run(c.name, func(t *testing.T) {
				clock := newClock()
				clock.Advance(c.now)
				f := newFixture(t, ca.Roots(), withClock(clock))
				req := h.enrollRequest()
				c.tamper(&req)
				status, body := f.post(t, wire.PathEnroll, req)
				wantError(t, status, body, http.StatusForbidden, wire.CodeEKUntrusted)
				wantNothingStored(t, f.st)
			})
		}

		// Bytes after the EK's TPMT_PUBLIC may be refused or ignored, but
		// they must not make the same EK another host.
		t.Run("EK public with trailing bytes", func(t *testing.T) {
			f := newFixture(t, ca.Roots())
			req := h.enrollRequest()
			req.EKPublic = append(slices.Clone(req.EKPublic), 0, 1)
			status, body := f.post(t, wire.PathEnroll, req)
			if status != http.StatusOK {
				wantError(t, status, body, http.StatusForbidden, wire.CodeEKUntrusted)
				return
			}
			var enr wire.EnrollResponse
			if err := json.Unmarshal(body, &enr); err != nil || enr.HostID != h.hostID(t) {
				t.Errorf("enrolled as host %q (%v), want %s", enr.HostID, err, h.hostID(t))
			}
			wantNothingStored(t, f.st)
		})
	})
}

func TestBadAK(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	h := newHost(t, tp)
	f := newFixture(t, ca.Roots())
	other, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	flip := func(b []byte) []byte {
		b = slices.Clone(b)
		b[len(b)-1] ^= 1
		return b
	}
	for _, c := range []struct {
		name   string
		tamper func(ak *wire.AKParams)
	}{
		{"no AK", func(ak *wire.AKParams) { *ak = wire.AKParams{} }},
		{"garbage public", func(ak *wire.AKParams) { ak.Public = bytes.Repeat([]byte{0x23}, len(ak.Public)) }},
		{"creation data tampered", func(ak *wire.AKParams) { ak.CreateData = flip(ak.CreateData) }},
		{"creation attestation tampered", func(ak *wire.AKParams) { ak.CreateAttestation = flip(ak.CreateAttestation) }},
		{"creation signature tampered", func(ak *wire.AKParams) { ak.CreateSignature = flip(ak.CreateSignature) }},
		{"creation attestation of another AK", func(ak *wire.AKParams) {
			p := other.Params()
			ak.CreateData, ak.CreateAttestation, ak.CreateSignature = p.CreateData, p.CreateAttestation, p.CreateSignature
		}},
		{"EK public as AK", func(ak *wire.AKParams) { ak.Public = h.ek.Public }},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := h.enrollRequest()
			c.tamper(&req.AK)
			status, body := f.post(t, wire.PathEnroll, req)
			wantError(t, status, body, http.StatusBadRequest, wire.CodeBadAK)
		})
	}
	wantNothingStored(t, f.st)
}

// TestEvidenceFailures tampers with the evidence of a TPM that proved its AK:
// each is a recorded fail naming the check, never a pass. The checks run with
// direct log verification and with a log cache that has seen the good log.
func TestEvidenceFailures(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	other, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	flip := func(b []byte, i int) []byte {
		b = slices.Clone(b)
		b[(i+len(b))%len(b)] ^= 1
		return b
	}
	pcrRange := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	}
	// An event of PCR 7 is dropped from the log.
	parsed, err := eventlogtest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Where the first event's SHA-256 digest lies in raw: after the header,
	// the event's PCR, type and digest count, and the digests before it.
	sha256Off := len(parsed.Header) + 12
	for _, d := range parsed.Events[0].Digests {
		sha256Off += 2
		if d.Alg == tpm2.TPMAlgSHA256 {
			break
		}
		sha256Off += len(d.Digest)
	}
	at := parsed.Index(func(e eventlogtest.Event) bool { return e.PCR == 7 && e.Type != eventlogtest.EvNoAction })
	parsed.Events = slices.Delete(parsed.Events, at, at+1)
	dropped := parsed.Bytes()

	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture, enr wire.EnrollResponse, q *wire.QuoteRequest)
		rule   string
	}{
		{"PCR value tampered", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.PCRs[7].Digest = flip(q.PCRs[7].Digest, 0)
		}, attest.CheckQuote},
		{"PCR value truncated", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.PCRs[0].Digest = q.PCRs[0].Digest[:20]
		}, attest.CheckQuote},
		{"quote tampered", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.Quote = flip(q.Quote, -1)
		}, attest.CheckQuote},
		{"signature tampered", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.Signature = flip(q.Signature, -1)
		}, attest.CheckQuote},
		{"quote by another AK of the TPM", func(t *testing.T, _ *fixture, enr wire.EnrollResponse, q *wire.QuoteRequest) {
			q.Quote, q.Signature, q.PCRs = h.quoteWith(t, other, local(t, enr.Nonce), enr.PCRs)
		}, attest.CheckQuote},
		{"quote over PCRs 0-7", func(t *testing.T, _ *fixture, enr wire.EnrollResponse, q *wire.QuoteRequest) {
			q.Quote, q.Signature, q.PCRs = h.quoteWith(t, h.ak, local(t, enr.Nonce), pcrRange(8))
		}, attest.CheckPCRSelection},
		{"quote over PCRs 0-16", func(t *testing.T, _ *fixture, enr wire.EnrollResponse, q *wire.QuoteRequest) {
			q.Quote, q.Signature, q.PCRs = h.quoteWith(t, h.ak, local(t, enr.Nonce), pcrRange(17))
		}, attest.CheckPCRSelection},
		{"values of PCRs 0-7 only", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.PCRs = q.PCRs[:8]
		}, attest.CheckQuote},
		{"a PCR sent twice", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.PCRs = append(q.PCRs, q.PCRs[3])
		}, attest.CheckPCRSelection},
		{"event log of another host", func(t *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = tpmtest.EventLog(t, badLog)
		}, attest.CheckEventLog},
		{"event log truncated", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = raw[:len(raw)/2]
		}, attest.CheckEventLog},
		{"event log missing an event", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = dropped
		}, attest.CheckEventLog},
		{"event log with a flipped SHA-256 digest", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = flip(raw, sha256Off)
		}, attest.CheckEventLog},
		{"no event log", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = nil
		}, attest.CheckEventLog},
		{"garbage event log", func(_ *testing.T, _ *fixture, _ wire.EnrollResponse, q *wire.QuoteRequest) {
			q.EventLog = bytes.Repeat([]byte("log"), 100)
		}, attest.CheckEventLog},
	}
	for _, logs := range []string{"direct", "cached"} {
		t.Run(logs, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					passes := 0
					f := newFixture(t, ca.Roots(), func(o *server.Options) {
						if logs == "cached" {
							o.Logs = eventlog.NewCache(4, 0)
						}
					})
					if logs == "cached" {
						// The good log and its PCR values are in the cache.
						if res := f.quote(t, h.answer(t, f.enroll(t, h.enrollRequest()), raw)); res.Verdict != wire.VerdictPass {
							t.Fatalf("honest attestation: %+v", res)
						}
						passes = 1
					}
					enr := f.enroll(t, h.enrollRequest())
					q := h.answer(t, enr, raw)
					c.tamper(t, f, enr, &q)
					res := f.quote(t, q)
					wantFailRecorded(t, f, res, c.rule, passes)
					if len(res.Reasons) != 1 {
						t.Errorf("reasons %+v, want the evidence check only", res.Reasons)
					}
				})
			}
		})
	}
}

func TestMalformedBodies(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	f := newFixture(t, ca.Roots())

	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// honest returns a well-formed body for path; a quote answers a new
	// session.
	honest := func(t *testing.T, path string) []byte {
		if path == wire.PathEnroll {
			return marshal(h.enrollRequest())
		}
		return marshal(h.answer(t, f.enroll(t, h.enrollRequest()), raw))
	}
	spaces := func(n int) []byte { return bytes.Repeat([]byte{' '}, n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	const max = wire.MaxBodyBytes

	for _, c := range []struct {
		name   string
		body   func(honest []byte) []byte
		status int
		code   wire.Code
	}{
		{"empty", func([]byte) []byte { return nil }, http.StatusBadRequest, wire.CodeBadRequest},
		{"not JSON", func([]byte) []byte { return []byte("hello") }, http.StatusBadRequest, wire.CodeBadRequest},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, http.StatusBadRequest, wire.CodeBadRequest},
		{"array", func(b []byte) []byte { return cat([]byte("["), b, []byte("]")) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"unknown field", func(b []byte) []byte { return cat([]byte(`{"admit":true,`), b[1:]) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"wrong field type", func([]byte) []byte { return []byte(`{"ek_public":7,"session":7}`) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"invalid base64", func([]byte) []byte { return []byte(`{"ek_public":"%%%","event_log":"%%%"}`) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"trailing garbage", func(b []byte) []byte { return cat(b, []byte(" garbage")) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"two objects", func(b []byte) []byte { return cat(b, b) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"trailing brace", func(b []byte) []byte { return cat(b, []byte("}")) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"trailing bracket and garbage", func(b []byte) []byte { return cat(b, []byte("]garbage")) }, http.StatusBadRequest, wire.CodeBadRequest},
		{"oversized by leading space", func(b []byte) []byte { return cat(spaces(max), b) }, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge},
		{"oversized by trailing space", func(b []byte) []byte { return cat(b, spaces(max-len(b)+1)) }, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge},
		{"oversized field", func([]byte) []byte {
			return cat([]byte(`{"ek_public":"`), bytes.Repeat([]byte("A"), max), []byte(`"}`))
		}, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge},
	} {
		for _, path := range []string{wire.PathEnroll, wire.PathQuote} {
			t.Run(c.name+path, func(t *testing.T) {
				status, body := f.postRaw(t, path, c.body(honest(t, path)))
				wantError(t, status, body, c.status, c.code)
			})
		}
	}
	wantNothingStored(t, f.st)

	// A body of exactly MaxBodyBytes is read; a refused body did not use
	// the session up.
	enr := f.enroll(t, h.enrollRequest())
	q := marshal(h.answer(t, enr, raw))
	status, body := f.postRaw(t, wire.PathQuote, cat([]byte(`{"admit":true,`), q[1:]))
	wantError(t, status, body, http.StatusBadRequest, wire.CodeBadRequest)
	status, body = f.postRaw(t, wire.PathQuote, cat(q, spaces(max-len(q))))
	if status != http.StatusOK {
		t.Fatalf("quote of exactly %d bytes: %d %s", max, status, body)
	}
	e := marshal(h.enrollRequest())
	if status, body := f.postRaw(t, wire.PathEnroll, cat(spaces(max-len(e)), e)); status != http.StatusOK {
		t.Errorf("enrollment of exactly %d bytes: %d %s", max, status, body)
	}
	if as := attestations(t, f.st); len(as) != 1 || as[0].Verdict != wire.VerdictPass {
		t.Errorf("store holds %d attestations, want 1 pass", len(as))
	}
}

// TestConcurrentAttestations runs 4 hosts × 3 attestations at once. The
// simulator is a process-wide singleton, so the 4 hosts are 4 certified,
// persistent EKs of one simulator; at most two AKs are loaded at a time (the
// simulator has three object slots), but enrollments and quote verification
// (log replay, policy, the store's writes) run concurrently, through a
// shared log cache.
func TestConcurrentAttestations(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, nil)
	const numHosts, rounds = 4, 3
	for i, idx := range []tpm2.TPMHandle{tpmtest.NVIndexECCP256, tpmtest.NVIndexRSA2048, 0x01c00012, 0x01c00014} {
		x := make([]byte, 32)
		x[31] = byte(i + 1)
		tpmtest.AddEK(t, tp, ca, tpmtest.UniqueECCEKTemplate(x), idx, tpm2.TPMHandle(0x81010100+i))
	}
	good := tpmtest.ReplayLog(t, tp, goodLog)
	bad := tpmtest.EventLog(t, badLog) // does not replay: a fail
	eks, err := tp.EKs()
	if err != nil {
		t.Fatal(err)
	}
	if len(eks) != numHosts {
		t.Fatalf("%d EKs, want %d", len(eks), numHosts)
	}
	f := newFixture(t, ca.Roots(), func(o *server.Options) { o.Logs = eventlog.NewCache(4, 0) })

	slots := make(chan struct{}, 2)
	// once runs one attestation of ek; it returns an error rather than
	// failing the test from a goroutine.
	once := func(ek tpm.EK, log []byte) (res wire.Result, err error) {
		var enr wire.EnrollResponse
		var q wire.QuoteRequest
		err = func() error {
			slots <- struct{}{}
			defer func() { <-slots }()
			ak, err := tp.NewAK(tpm.AKECCP256)
			if err != nil {
				return err
			}
			defer ak.Close()
			if err := call(f, wire.PathEnroll, wire.EnrollRequest{EKCert: ek.Cert, EKPublic: ek.Public, AK: ak.Params()}, &enr); err != nil {
				return err
			}
			q = wire.QuoteRequest{Session: enr.Session, EventLog: log, MAC: loopbackMAC.String(), IP: loopbackIP.String()}
			if q.ActivationSecret, err = ak.ActivateCredential(ek, enr.Credential, enr.Secret); err != nil {
				return err
			}
			if q.Quote, q.Signature, err = ak.Quote(local(t, enr.Nonce), enr.PCRs); err != nil {
				return err
			}
			values, err := tp.PCRs(enr.PCRs)
			if err != nil {
				return err
			}
			for _, i := range enr.PCRs {
				q.PCRs = append(q.PCRs, wire.PCR{Index: i, Digest: values[i]})
			}
			return nil
		}()
		if err != nil {
			return res, err
		}
		return res, call(f, wire.PathQuote, q, &res)
	}

	results := make([][]wire.Result, numHosts)
	errs := make([]error, numHosts)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range numHosts {
		wg.Go(func() {
			log := good
			if g >= 2 {
				log = bad
			}
			for range rounds {
				res, err := once(eks[g], log)
				if err != nil {
					errs[g] = fmt.Errorf("host %d: %w", g, err)
					return
				}
				results[g] = append(results[g], res)
			}
		})
	}
	wg.Wait()
	t.Logf("%d attestations in %v", numHosts*rounds, time.Since(start))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	ids := map[int64]bool{}
	for g, rs := range results {
		want, rule := wire.VerdictPass, ""
		if g >= 2 {
			want, rule = wire.VerdictFail, attest.CheckEventLog
		}
		for _, r := range rs {
			if r.Verdict != want || (rule != "" && !hasRule(r.Reasons, rule)) || r.HostID != hostIDOf(t, eks[g].Public) {
				t.Errorf("host %d: %+v, want %s %s", g, r, want, rule)
			}
			ids[r.AttestationID] = true
		}
	}
	as := attestations(t, f.st)
	if len(as) != numHosts*rounds || len(ids) != numHosts*rounds {
		t.Errorf("store holds %d attestations, %d distinct IDs answered; want %d", len(as), len(ids), numHosts*rounds)
	}
	if p, fl := countVerdict(as, wire.VerdictPass), countVerdict(as, wire.VerdictFail); p != 2*rounds || fl != 2*rounds {
		t.Errorf("store holds %d passes and %d fails, want %d each", p, fl, 2*rounds)
	}
	hs := hosts(t, f.st)
	if len(hs) != numHosts {
		t.Fatalf("store holds %d hosts, want %d", len(hs), numHosts)
	}
	for _, hst := range hs {
		g := slices.IndexFunc(eks, func(ek tpm.EK) bool { return hostIDOf(t, ek.Public) == hst.ID })
		want := store.HostAdmitted
		if g >= 2 {
			want = store.HostQuarantined
		}
		if g < 0 || hst.State != want {
			t.Errorf("host %d %+v, want %s", g, hst, want)
		}
	}
	in := incidents(t, f.st)
	if len(in) != 2 {
		t.Fatalf("store holds %d incidents, want 2", len(in))
	}
	for _, i := range in {
		if i.Failures != rounds || i.State != store.IncidentOpen {
			t.Errorf("incident %+v, want %d failures", i, rounds)
		}
	}
}

// call posts in as JSON to the fixture and decodes a 200 answer into out.
func call(f *fixture, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := f.ts.Client().Post(f.ts.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

// TestMeasurementsHiddenFromThePolicy boots hosts that the policy must refuse
// (an unapproved boot loader in PCR 4, a kernel debugger on the command line
// in PCR 8) and sends their logs whole, or without the events of the PCR
// that betrays them. Every quote is genuine and every event sent replays.
// The policy rules only see what the log shows: a PCR the quote covers
// but whose value no event explains must not let a host pass.
func TestMeasurementsHiddenFromThePolicy(t *testing.T) {
	ca := tpmtest.NewCA(t)
	good, err := eventlogtest.Parse(tpmtest.EventLog(t, goodLog))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(l *eventlogtest.Log, match func(eventlogtest.Event) bool, with func(eventlogtest.Event) eventlogtest.Event) *eventlogtest.Log {
		t.Helper()
		r, ok := l.Replace(match, with)
		if !ok {
			t.Fatal("edit event log: no such event")
		}
		return r
	}
	evilLoader := replace(good, func(e eventlogtest.Event) bool { return e.PCR == 4 && e.Type == eventlogtest.EvEFIBootApp }, func(e eventlogtest.Event) eventlogtest.Event {
		return good.Event(e.PCR, e.Type, e.Data, []byte("an unapproved boot loader"))
	})
	const debugger = " kgdboc=ttyS0,115200 kgdbwait"
	// Upstream GRUB measures "kernel_cmdline: CMDLINE" over CMDLINE.
	upstreamDebug := replace(good, isGrubKernelCmdline, func(e eventlogtest.Event) eventlogtest.Event {
		cmd := strings.TrimSuffix(strings.TrimPrefix(string(e.Data), "grub_kernel_cmdline "), "\x00") + debugger
		return good.Event(8, eventlogtest.EvIPL, []byte("kernel_cmdline: "+cmd), []byte(cmd))
	})
	// RHEL's GRUB (this log's) measures "grub_kernel_cmdline CMDLINE\0" over
	// CMDLINE, and "grub_cmd linux ...\0" over "linux ...\0".
	rhelDebug := replace(good, isGrubKernelCmdline, func(e eventlogtest.Event) eventlogtest.Event {
		cmd := strings.TrimSuffix(strings.TrimPrefix(string(e.Data), "grub_kernel_cmdline "), "\x00") + debugger
		return good.Event(8, eventlogtest.EvIPL, []byte("grub_kernel_cmdline "+cmd+"\x00"), []byte(cmd))
	})
	rhelDebug = replace(rhelDebug, func(e eventlogtest.Event) bool { return bytes.HasPrefix(e.Data, []byte("grub_cmd linux ")) }, func(e eventlogtest.Event) eventlogtest.Event {
		cmd := strings.TrimSuffix(strings.TrimPrefix(string(e.Data), "grub_cmd "), "\x00") + debugger + "\x00"
		return good.Event(8, eventlogtest.EvIPL, []byte("grub_cmd "+cmd), []byte(cmd))
	})

	for _, c := range []struct {
		name   string
		booted *eventlogtest.Log // what the TPM measured
		sent   *eventlogtest.Log // what the host sends
		rule   string            // the rule the verdict must name; "" for any fail
		bug    string            // a known defect that makes this case fail
	}{
		{"unapproved boot loader", evilLoader, evilLoader, policy.RuleBootApp, ""},
		{"unapproved boot loader, PCR 4 events omitted", evilLoader, evilLoader.Without(4), "",
			"verifier/eventlog.Verify accepts a quoted PCR that has no events whatever its value, so the boot-application rules see nothing"},
		{"debugger on the command line (upstream GRUB)", upstreamDebug, upstreamDebug, policy.RuleCmdline, ""},
		{"debugger on the command line (upstream GRUB), PCR 8 events omitted", upstreamDebug, upstreamDebug.Without(8), "",
			"verifier/eventlog.Verify accepts a quoted PCR that has no events whatever its value, so the command-line rule sees nothing"},
		{"debugger on the command line (RHEL GRUB)", rhelDebug, rhelDebug, policy.RuleCmdline,
			`verifier/eventlog addGrubCommand knows only upstream GRUB's "kernel_cmdline: " events, not RHEL/Fedora GRUB's "grub_kernel_cmdline " and "grub_cmd linux " ones`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := tpmtest.Simulator(t, ca)
			if _, err := tp.ReplayEventLog(c.booted.Bytes()); err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, ca.Roots())
			rep, err := f.agent().Attest(context.Background(), tp, c.sent.Bytes())
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			res := rep.Result
			if res.Verdict == wire.VerdictPass || (c.rule != "" && !hasRule(res.Reasons, c.rule)) {
				msg := fmt.Sprintf("verdict %s %+v, want a fail", res.Verdict, res.Reasons)
				if c.rule != "" {
					msg += " for " + c.rule
				}
				if c.bug != "" {
					msg = "SECURITY BUG: " + msg + ": " + c.bug
				}
				t.Fatal(msg)
			}
			if c.rule != "" {
				wantFailRecorded(t, f, res, c.rule, 0)
			}
			if n := countVerdict(attestations(t, f.st), wire.VerdictPass); n != 0 {
				t.Errorf("store holds %d passes, want none", n)
			}
		})
	}
}

func isGrubKernelCmdline(e eventlogtest.Event) bool {
	return e.PCR == 8 && bytes.HasPrefix(e.Data, []byte("grub_kernel_cmdline "))
}

// ---------------------------------------------------------------------------
// An AK without a TPM: enrollment's checks are self-consistency checks that
// software passes; only credential activation ties the AK to the EK's TPM.

type softwareAK struct {
	key    *ecdsa.PrivateKey
	pub    tpm2.TPMTPublic
	params wire.AKParams
}

// newSoftwareAK makes AK parameters that claim a TPM-generated restricted
// signing key (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign)
// and certify their own creation, with a key held in software.
func newSoftwareAK(t testing.TB) *softwareAK {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	sw := &softwareAK{key: key, pub: tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]},
		}),
	}}
	name, err := tpm2.ObjectName(&sw.pub)
	if err != nil {
		t.Fatal(err)
	}
	createData := tpm2.Marshal(tpm2.TPMSCreationData{
		PCRSelect:     tpm2.TPMLPCRSelection{},
		ParentNameAlg: tpm2.TPMAlgNull,
	})
	sum := sha256.Sum256(createData)
	att := tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue,
		Type:  tpm2.TPMSTAttestCreation,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCreation, &tpm2.TPMSCreationInfo{
			ObjectName:   *name,
			CreationHash: tpm2.TPM2BDigest{Buffer: sum[:]},
		}),
	})
	sw.params = wire.AKParams{Public: tpm2.Marshal(sw.pub), CreateData: createData, CreateAttestation: att, CreateSignature: sw.sign(t, att)}
	return sw
}

// sign makes the TPMT_SIGNATURE of data, as a TPM AK would.
func (sw *softwareAK) sign(t testing.TB, data []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(data)
	r, s, err := ecdsa.Sign(rand.Reader, sw.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
		}),
	})
}

// quote forges a TPM2_Quote of the given SHA-256 PCR values over nonce.
func (sw *softwareAK) quote(t testing.TB, nonce []byte, pcrs []wire.PCR) (quote, sig []byte) {
	t.Helper()
	var sel []uint
	h := sha256.New()
	for _, p := range pcrs {
		sel = append(sel, uint(p.Index))
		h.Write(p.Digest)
	}
	quote = tpm2.Marshal(tpm2.TPMSAttest{
		Magic:     tpm2.TPMGeneratedValue,
		Type:      tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
			}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	})
	return quote, sw.sign(t, quote)
}

// activateRaw runs TPM2_ActivateCredential with activate and the EK, whose
// policy A it satisfies, as an attacker in control of the TPM may.
func activateRaw(t testing.TB, tp *tpm.TPM, activate tpm2.AuthHandle, ek tpm.EK, credential, secret []byte) ([]byte, error) {
	t.Helper()
	tr := tp.Transport()
	rp, err := tpm2.ReadPublic{ObjectHandle: ek.Handle}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	sess, closeSess, err := tpm2.PolicySession(tr, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := closeSess(); err != nil {
			t.Errorf("flush policy session: %v", err)
		}
	}()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(tr); err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: activate,
		KeyHandle:      tpm2.AuthHandle{Handle: ek.Handle, Name: rp.Name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: secret},
	}.Execute(tr)
	if err != nil {
		return nil, err
	}
	return rsp.CertInfo.Buffer, nil
}

// TestSoftwareAK: an attacker copies a trusted EK's certificate and public
// area and enrolls an AK made in software. Enrollment cannot tell, and the
// software AK signs a quote of the good PCR values that verifies; but it
// cannot answer the activation challenge, not even with the EK's TPM at hand
// holding the AK's public area (a public-only object of the same name), so
// nothing is recorded.
func TestSoftwareAK(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, goodLog)
	h := newHost(t, tp)
	f := newFixture(t, ca.Roots())
	sw := newSoftwareAK(t)
	tr := tp.Transport()

	enr := f.enroll(t, wire.EnrollRequest{EKCert: h.ek.Cert, EKPublic: h.ek.Public, AK: sw.params})
	if enr.HostID != h.hostID(t) {
		t.Errorf("enrolled as %s, want the copied EK's host %s", enr.HostID, h.hostID(t))
	}

	// The EK's TPM does not activate a credential for another AK's name...
	if s, err := h.ak.ActivateCredential(h.ek, enr.Credential, enr.Secret); err == nil {
		t.Fatalf("the TPM activated a credential for the software AK with its own AK: %x", s)
	}
	// ...nor for the software AK's public area loaded as an external object:
	// the TPM authorises no command on a public-only object.
	ext, err := tpm2.LoadExternal{InPublic: tpm2.New2B(sw.pub), Hierarchy: tpm2.TPMRHOwner}.Execute(tr)
	if err == nil {
		s, err := activateRaw(t, tp, tpm2.AuthHandle{Handle: ext.ObjectHandle, Name: ext.Name, Auth: tpm2.PasswordAuth(nil)}, h.ek, enr.Credential, enr.Secret)
		if _, ferr := (tpm2.FlushContext{FlushHandle: ext.ObjectHandle}).Execute(tr); ferr != nil {
			t.Errorf("flush external object: %v", ferr)
		}
		if err == nil {
			t.Fatalf("SECURITY: the TPM activated a credential for a public-only external object: %x", s)
		}
		t.Logf("ActivateCredential with the software AK loaded public-only: %v", err)
	} else {
		t.Logf("LoadExternal of the software AK: %v", err)
	}
	// activateRaw itself works: with a TPM-resident key of the same
	// template it recovers a secret.
	template := sw.pub
	template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	resident, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := (tpm2.FlushContext{FlushHandle: resident.ObjectHandle}).Execute(tr); err != nil {
			t.Errorf("flush: %v", err)
		}
	}()
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](h.ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	cred, secret, err := tpm2.CreateCredential(rand.Reader, encKey, resident.Name.Buffer, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := activateRaw(t, tp, tpm2.AuthHandle{Handle: resident.ObjectHandle, Name: resident.Name, Auth: tpm2.PasswordAuth(nil)}, h.ek, cred, secret); err != nil || string(got) != "0123456789abcdef" {
		t.Fatalf("activateRaw with a TPM-resident key = %q, %v", got, err)
	}

	// The forged quote is perfect...
	values, err := tp.PCRs(enr.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	q := wire.QuoteRequest{Session: enr.Session, EventLog: raw, ActivationSecret: make([]byte, 32), MAC: loopbackMAC.String(), IP: loopbackIP.String()}
	for _, i := range enr.PCRs {
		q.PCRs = append(q.PCRs, wire.PCR{Index: i, Digest: values[i]})
	}
	q.Quote, q.Signature = sw.quote(t, local(t, enr.Nonce), q.PCRs)
	akPub, err := goattest.ParseAKPublic(sw.params.Public)
	if err != nil {
		t.Fatal(err)
	}
	var pcrs []goattest.PCR
	for _, p := range q.PCRs {
		pcrs = append(pcrs, goattest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: crypto.SHA256})
	}
	if err := akPub.Verify(goattest.Quote{Quote: q.Quote, Signature: q.Signature}, pcrs, local(t, enr.Nonce)); err != nil {
		t.Fatalf("the forged quote does not verify: %v", err)
	}
	// ...and worthless without the activation secret.
	status, body := f.post(t, wire.PathQuote, q)
	wantError(t, status, body, http.StatusForbidden, wire.CodeActivationFailed)
	wantNothingStored(t, f.st)
}

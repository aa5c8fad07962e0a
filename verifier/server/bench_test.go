package server_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// replayableRand is a deterministic random source that can be rewound, so
// that every benchmark iteration issues the same session, nonce and
// activation secret and one precomputed TPM answer verifies every time. The
// verifier still does all its work on each iteration.
type replayableRand struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func (r *replayableRand) rewind() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.r = rand.NewChaCha8([32]byte{'b', 'o', 'o', 't', 'g', 'a', 't', 'e'})
}

func (r *replayableRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Read(p)
}

func post(b *testing.B, c *http.Client, url string, in, out any) {
	b.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAPIExchange measures one whole attestation as the appliance serves
// it: enroll and quote over loopback TLS 1.3 with keep-alive, JSON, full
// verification (rhel8 log, 34 KB, through the shared-log cache) and the
// verdict recorded in SQLite with its evidence.
func BenchmarkAPIExchange(b *testing.B) {
	ca := tpmtest.NewCA(b)
	tp := tpmtest.Simulator(b, ca)
	raw := tpmtest.ReplayLog(b, tp, "rhel8-uefi.bin")
	bank, err := eventlog.Replay(raw)
	if err != nil {
		b.Fatal(err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		b.Fatal(err)
	}
	learned, _, err := policy.Learn("bench", st, policy.LearnOptions{})
	if err != nil {
		b.Fatal(err)
	}
	y, _ := learned.Marshal()
	pol, err := policy.Parse(y)
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.OpenSQLite(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	rnd := &replayableRand{}
	srv, err := server.New(server.Options{Roots: ca.Roots(), Policy: pol, Store: db, Logs: eventlog.NewCache(64, 0), Rand: rnd})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	b.Cleanup(ts.Close)
	c := ts.Client()

	eks, err := tp.EKs()
	if err != nil || len(eks) == 0 {
		b.Fatal(err)
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		b.Fatal(err)
	}
	enrollReq := wire.EnrollRequest{EKCert: eks[0].Cert, EKPublic: eks[0].Public, AK: ak.Params()}
	rnd.rewind()
	var enr wire.EnrollResponse
	post(b, c, ts.URL+wire.PathEnroll, enrollReq, &enr)
	secret, err := ak.ActivateCredential(eks[0], enr.Credential, enr.Secret)
	if err != nil {
		b.Fatal(err)
	}
	qd, err := wire.QualifyingData(enr.Nonce, make(net.HardwareAddr, wire.MACLen), netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		b.Fatal(err)
	}
	q, sig, err := ak.Quote(qd, enr.PCRs)
	if err != nil {
		b.Fatal(err)
	}
	vals, err := tp.PCRs(enr.PCRs)
	if err != nil {
		b.Fatal(err)
	}
	quoteReq := wire.QuoteRequest{Session: enr.Session, ActivationSecret: secret, Quote: q, Signature: sig, EventLog: raw, MAC: "00:00:00:00:00:00", IP: "127.0.0.1"}
	for _, i := range enr.PCRs {
		quoteReq.PCRs = append(quoteReq.PCRs, wire.PCR{Index: i, Digest: vals[i]})
	}
	b.ReportAllocs()
	for b.Loop() {
		rnd.rewind()
		var e wire.EnrollResponse
		post(b, c, ts.URL+wire.PathEnroll, enrollReq, &e)
		var res wire.Result
		post(b, c, ts.URL+wire.PathQuote, quoteReq, &res)
		if res.Verdict != wire.VerdictPass {
			b.Fatalf("verdict %s: %v", res.Verdict, res.Reasons)
		}
	}
}

package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Event logs of testdata/eventlogs: the policy is learned from goodLog.
const (
	goodLog = "rhel8-uefi"
	badLog  = "ubuntu-2104-no-secure-boot" // Secure Boot off
)

// evidence is a log with the PCR values it replays to, and the policy's
// verdict on it, as the attestation service would have recorded it.
type evidence struct {
	log     []byte
	pcrs    []wire.PCR
	reasons []wire.Reason
}

// replayed reads a log of testdata/eventlogs and its boot state, replayed
// against the PCR values it produces.
func replayed(t testing.TB, name string) ([]byte, eventlog.Bank, *eventlog.BootState) {
	t.Helper()
	raw := tpmtest.EventLog(t, name)
	bank, err := eventlog.Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Verify(raw, bank)
	if err != nil {
		t.Fatal(err)
	}
	return raw, bank, st
}

func loadEvidence(t testing.TB, name string, pol *policy.Policy) evidence {
	t.Helper()
	raw, bank, st := replayed(t, name)
	ev := evidence{log: raw}
	for i := 0; i < 24; i++ {
		if d, ok := bank.PCRs[i]; ok {
			ev.pcrs = append(ev.pcrs, wire.PCR{Index: i, Digest: d})
		}
	}
	for _, f := range pol.Evaluate(st) {
		ev.reasons = append(ev.reasons, wire.Reason{Rule: f.Rule, Event: f.Event, Detail: f.Detail})
	}
	return ev
}

// learnPolicy learns the policy from goodLog and round-trips it through
// YAML, as an operator's policy file would be.
func learnPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	_, _, st := replayed(t, goodLog)
	learned, _, err := policy.Learn(goodLog, st, policy.LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := learned.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func record(t testing.TB, st *store.SQLite, host string, at time.Time, ev evidence, pol *policy.Policy) (int64, int64) {
	t.Helper()
	verdict := wire.VerdictPass
	if len(ev.reasons) > 0 {
		verdict = wire.VerdictFail
	}
	a := &store.Attestation{HostID: host, Time: at, Verdict: verdict, Reasons: ev.reasons,
		PolicyName: pol.Name, PolicyDigest: pol.Digest(),
		Evidence: store.Evidence{EKType: "rsa", PCRs: ev.pcrs, EventLog: ev.log, Nonce: []byte("nonce"), Quote: []byte("quote")}}
	inc, err := st.Record(context.Background(), a, store.Host{EKType: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	return a.ID, inc
}

// fixture is an admin API on a real store behind a real TLS listener, with
// an operator CA, an operator (alice) and a host identity from the
// attestation CA.
type fixture struct {
	st         *store.SQLite
	pol        *policy.Policy
	api        *API
	url        string
	dir        string
	serverCA   *x509.CertPool
	serverCert tls.Certificate
	profile    *Profile
	client     *Client
	hostCert   tls.Certificate
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, pol: learnPolicy(t), dir: dir}

	tlsDir := filepath.Join(dir, "tls")
	if err := pki.WriteServerTLS(tlsDir, []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, pki.ServerFile), filepath.Join(tlsDir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(tlsDir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	f.serverCert = serverCert
	f.serverCA = x509.NewCertPool()
	f.serverCA.AppendCertsFromPEM(caPEM)

	opsDir := filepath.Join(dir, "operators")
	if err := pki.InitOperators(opsDir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ops, err := pki.LoadOperators(opsDir, true)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ops.Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	caDir := filepath.Join(dir, "ca")
	if err := pki.InitCA(caDir, time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := ca.Issue(&hostKey.PublicKey, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.hostCert = tls.Certificate{Certificate: append([][]byte{id.DER}, id.Chain...), PrivateKey: hostKey}

	verifyOnly, err := pki.LoadOperators(opsDir, false)
	if err != nil {
		t.Fatal(err)
	}
	f.api, err = New(Options{Store: st, Operators: verifyOnly, Policy: f.pol, Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", TLSConfig(serverCert))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.api.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	f.url = "https://" + ln.Addr().String()
	f.profile = &Profile{Admin: f.url, ServerCA: string(caPEM), Certificate: string(certPEM), Key: string(keyPEM)}
	if f.client, err = NewClient(f.profile); err != nil {
		t.Fatal(err)
	}
	return f
}

// httpClient presents certs (none, a host's, another CA's) and trusts the
// appliance's server CA.
func (f *fixture) httpClient(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.serverCA, Certificates: certs}}}
}

// seed records hosts: every host passes once; the first nIncidents of them
// then fail with Secure Boot off (an incident each, diffed against their
// pass); newFailing more hosts fail on first sight (diffed against the
// policy). Real logs are stored only where withLogs is set for the host;
// the others carry small evidence, which the lists do not read.
func (f *fixture) seed(t testing.TB, nHosts, nIncidents, newFailing int) {
	t.Helper()
	good, bad := loadEvidence(t, goodLog, f.pol), loadEvidence(t, badLog, f.pol)
	small := evidence{pcrs: good.pcrs[:1]}
	at := time.Now().Add(-time.Hour)
	for i := range nHosts {
		ev := small
		if i < nIncidents {
			ev = good
		}
		record(t, f.st, hostName(i), at, ev, f.pol)
	}
	for i := range nIncidents {
		record(t, f.st, hostName(i), at.Add(time.Minute), bad, f.pol)
	}
	for i := range newFailing {
		record(t, f.st, fmt.Sprintf("new-%04d", i), at.Add(2*time.Minute), bad, f.pol)
	}
}

func hostName(i int) string { return fmt.Sprintf("host-%05d", i) }

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

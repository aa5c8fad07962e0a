package bootflow_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/bootgate/bootgate/agent/bootflow"
	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/event"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/boot"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// fakeKexec records what would have been booted.
type fakeKexec struct {
	kernel, initrd []byte
	rebooted       bool
}

func (f *fakeKexec) FileLoad(k, i *os.File, _ string) error {
	f.kernel, _ = os.ReadFile(k.Name())
	f.initrd, _ = os.ReadFile(i.Name())
	return nil
}

func (f *fakeKexec) Reboot() error { f.rebooted = true; return nil }

// shared keeps one simulator open across the flow's attempts, each of which
// opens and closes "the TPM".
type shared struct{ transport.TPM }

func (shared) Close() error { return nil }

type env struct {
	flow   *bootflow.Flow
	kexec  *fakeKexec
	tp     *tpm.TPM
	events *bytes.Buffer
	kernel []byte
	url    string
	store  *store.SQLite
	roots  *x509.CertPool
}

// setup runs the appliance in process with a policy learned from learnLog,
// and a simulated TPM that replayed bootLog; tamper, if set, wraps the
// appliance's handler.
func setup(t *testing.T, learnLog, bootLog string, tamper func(http.Handler) http.Handler, opts ...func(*server.Options)) *env {
	t.Helper()
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, bootLog)
	learnRaw := tpmtest.EventLog(t, learnLog)
	bank, err := eventlog.Replay(learnRaw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Verify(learnRaw, bank)
	if err != nil {
		t.Fatal(err)
	}
	learned, _, err := policy.Learn("flow", st, policy.LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	y, _ := learned.Marshal()
	pol, err := policy.Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kernel := bytes.Repeat([]byte("production kernel "), 1000)
	for name, b := range map[string][]byte{"vmlinuz": kernel, "initrd": []byte("production initrd")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := store.OpenSQLite(filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := pki.InitCA(filepath.Join(dir, "pki"), time.Hour); err != nil {
		t.Fatal(err)
	}
	idCA, err := pki.LoadCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	o := server.Options{Roots: ca.Roots(), Policy: pol, Store: db, CA: idCA,
		Boot: &server.BootOS{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"), Cmdline: "console=ttyS0"}}
	for _, f := range opts {
		f(&o)
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	if tamper != nil {
		h = tamper(h)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{}
	srv.ConfigureTLS(ts.TLS)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	e := &env{kexec: &fakeKexec{}, tp: tp, events: &bytes.Buffer{}, kernel: kernel, url: ts.URL, store: db, roots: roots}
	e.flow = &bootflow.Flow{
		Client:         &client.Client{BaseURL: ts.URL, HTTP: ts.Client(), Identity: true},
		IdentityClient: client.IdentityClient(roots),
		OpenTPM:        func() (*tpm.TPM, error) { return tpm.New(shared{tp.Transport()}), nil },
		EventLog:       func() ([]byte, error) { return raw, nil },
		Loader:         &boot.Loader{HTTP: ts.Client(), Dir: filepath.Join(dir, "os"), PCR: wire.BoundaryPCR, Kexec: e.kexec},
		Events:         event.New(e.events),
		Console:        e.events,
		Backoff:        bootflow.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond},
		MaxAttempts:    2,
	}
	return e
}

func (e *env) pcr15(t *testing.T) []byte {
	v, err := e.tp.PCRs([]int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	return v[wire.BoundaryPCR]
}

func TestPassBootsTheNamedOS(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil)
	before := e.pcr15(t)
	before1, err := e.tp.BankPCRs(crypto.SHA1, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.flow.Run(context.Background()); err != nil {
		t.Fatalf("run: %v\n%s", err, e.events)
	}
	if !e.kexec.rebooted || !bytes.Equal(e.kexec.kernel, e.kernel) {
		t.Fatalf("did not kexec the named kernel:\n%s", e.events)
	}
	for _, f := range []string{"bootgate/attestation.json", "bootgate/identity.pem", "bootgate/credentials/bootstrap-token"} {
		if !bytes.Contains(e.kexec.initrd, []byte(f)) {
			t.Errorf("%s was not handed over in the initrd", f)
		}
	}
	if !strings.Contains(e.events.String(), `"event":"credentials"`) {
		t.Error("no credentials were unsealed")
	}
	// PCR 15 = SHA-256(old || image digest): the image was measured once.
	after := e.pcr15(t)
	if bytes.Equal(before, after) {
		t.Error("the OS was not measured into PCR 15")
	}
	// The pass was in the SHA-256 bank; the boundary and the OS moved the
	// SHA-1 bank's PCR 15 too, so a SHA-1 quote of this boot shows them.
	after1, err := e.tp.BankPCRs(crypto.SHA1, []int{wire.BoundaryPCR})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before1[wire.BoundaryPCR], after1[wire.BoundaryPCR]) {
		t.Error("the boundary and the OS left SHA-1 PCR 15 alone")
	}
	for _, ev := range []string{`"verdict":"pass"`, `"event":"identity"`, `"event":"os_verified"`, `"event":"os_loaded"`, `"event":"kexec"`} {
		if !strings.Contains(e.events.String(), ev) {
			t.Errorf("events lack %s", ev)
		}
	}
}

// Every kind of failure leads back to quarantine: no kexec, no measurement.
func TestFailuresNeverBoot(t *testing.T) {
	for _, tc := range []struct {
		name, learn, boot string
		tamper            func(http.Handler) http.Handler
		event             string
		boundary          bool // credentials were unsealed, so PCR 15 moved: no second attempt, a reboot
	}{
		{"policy failure", "rhel8-uefi.bin", "ubuntu-2104-no-secure-boot.bin", nil, `"event":"quarantined"`, false},
		{"verifier refuses", "rhel8-uefi.bin", "rhel8-uefi.bin", func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			})
		}, `"event":"attest_error"`, false},
		{"altered download", "rhel8-uefi.bin", "rhel8-uefi.bin", func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/kernel") {
					w.Write(bytes.Repeat([]byte("evil kernel!!!!!!!"), 1000))
					return
				}
				h.ServeHTTP(w, r)
			})
		}, `digest mismatch`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, tc.learn, tc.boot, tc.tamper)
			before := e.pcr15(t)
			err := e.flow.Run(context.Background())
			want, retries := bootflow.ErrQuarantined, 1
			if tc.boundary {
				want, retries = bootflow.ErrRebootRequired, 0
			}
			if !errors.Is(err, want) {
				t.Fatalf("run: %v, want %v\n%s", err, want, e.events)
			}
			if e.kexec.kernel != nil || e.kexec.rebooted {
				t.Fatal("a failing host reached kexec")
			}
			if moved := !bytes.Equal(before, e.pcr15(t)); moved != tc.boundary {
				t.Errorf("PCR 15 moved: %v, want %v", moved, tc.boundary)
			}
			if !strings.Contains(e.events.String(), tc.event) {
				t.Errorf("events lack %s:\n%s", tc.event, e.events)
			}
			if n := strings.Count(e.events.String(), `"event":"retry"`); n != retries {
				t.Errorf("%d retries, want %d", n, retries)
			}
		})
	}
}

// The production OS is served only to admitted hosts over mTLS with their
// TPM-resident identity: no identity, or a quarantined host's, gets 403.
func TestBootFilesNeedAnAdmittedIdentity(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil)
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}
	resp, err := plain.Get(e.url + "/v1/boot/kernel")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("without an identity: %s", resp.Status)
	}
	tp := tpm.New(shared{e.tp.Transport()})
	rep, err := e.flow.Client.Attest(context.Background(), tp, tpmtest.EventLog(t, "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer rep.IdentityKey.Close()
	if rep.Result.Verdict != "pass" || rep.Result.Identity == nil {
		t.Fatalf("verdict %s, identity %v", rep.Result.Verdict, rep.Result.Identity)
	}
	cert, err := x509.ParseCertificate(rep.Result.Identity.Cert)
	if err != nil || cert.Subject.CommonName != rep.Result.HostID {
		t.Fatalf("identity certificate (%v) does not name host %s", err, rep.Result.HostID)
	}
	withID := client.IdentityClient(e.roots)(rep.Result.Identity, rep.IdentityKey)
	get := func() int {
		resp, err := withID.Get(e.url + "/v1/boot/initrd")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("with the identity of an admitted host: %d", code)
	}
	if err := e.store.Quarantine(context.Background(), rep.Result.HostID, "test operator"); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != http.StatusForbidden {
		t.Fatalf("with the identity of a quarantined host: %d", code)
	}
}

// TestIdentityRenewal: the production OS renews its identity over itself
// (mTLS with the TPM-resident key) for the same key while the host is
// admitted; without an identity, or once the host is quarantined, it cannot.
func TestIdentityRenewal(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil)
	tp := tpm.New(shared{e.tp.Transport()})
	rep, err := e.flow.Client.Attest(context.Background(), tp, tpmtest.EventLog(t, "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer rep.IdentityKey.Close()
	if rep.Result.Identity == nil {
		t.Fatalf("no identity: %+v", rep.Result)
	}
	old, _ := x509.ParseCertificate(rep.Result.Identity.Cert)
	ctx := context.Background()
	plain := &client.Client{BaseURL: e.url, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}}
	if _, err := plain.RenewIdentity(ctx); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("renewal without an identity: %v", err)
	}
	withID := &client.Client{BaseURL: e.url, HTTP: client.IdentityClient(e.roots)(rep.Result.Identity, rep.IdentityKey)}
	renewed, err := withID.RenewIdentity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(renewed.Cert)
	if err != nil || cert.Subject.CommonName != rep.Result.HostID || !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(old.PublicKey) ||
		cert.SerialNumber.Cmp(old.SerialNumber) == 0 || cert.NotAfter.Before(old.NotAfter) {
		t.Fatalf("renewed identity: %v (old serial %v, not after %v)", err, old.SerialNumber, old.NotAfter)
	}
	// The renewed identity works as the first did; renewing again at once
	// is refused (a host renewing in a loop must not fill the store).
	again := &client.Client{BaseURL: e.url, HTTP: client.IdentityClient(e.roots)(renewed, rep.IdentityKey)}
	resp, err := again.HTTP.Get(e.url + wire.PathIdentity)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the renewed identity: %s", resp.Status)
	}
	if _, err := again.RenewIdentity(ctx); !isStatus(err, http.StatusTooManyRequests) {
		t.Fatalf("a second renewal within a minute: %v", err)
	}
	// The renewal superseded the identity it renewed.
	resp, err = withID.HTTP.Get(e.url + wire.PathIdentity)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the identity renewed: %s, want 403 (superseded)", resp.Status)
	}
	if err := e.store.Quarantine(ctx, rep.Result.HostID, "test operator"); err != nil {
		t.Fatal(err)
	}
	resp, err = again.HTTP.Get(e.url + wire.PathIdentity)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the identity of a quarantined host: %s", resp.Status)
	}
}

// TestIdentityRenewalMaxAge: past the configured age of the host's last
// attestation, renewal is refused; the host gets a new identity by rebooting.
func TestIdentityRenewalMaxAge(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil, func(o *server.Options) { o.IdentityMaxAge = time.Nanosecond })
	tp := tpm.New(shared{e.tp.Transport()})
	rep, err := e.flow.Client.Attest(context.Background(), tp, tpmtest.EventLog(t, "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer rep.IdentityKey.Close()
	withID := &client.Client{BaseURL: e.url, HTTP: client.IdentityClient(e.roots)(rep.Result.Identity, rep.IdentityKey)}
	var ae *client.APIError
	if _, err := withID.RenewIdentity(context.Background()); !errors.As(err, &ae) || ae.Code != wire.CodeAttestAgain {
		t.Fatalf("renewal past the maximum age: %v", err)
	}
}

// TestIdentityRevocation: quarantining a host revokes its identities; the
// appliance's CRL (signed by the issuing CA) lists them for the services
// that trust bootgate identities, and they stay revoked when the host is
// admitted again with a new one.
func TestIdentityRevocation(t *testing.T) {
	var skew atomic.Int64 // the appliance's clock runs ahead by this
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil, func(o *server.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	ctx := context.Background()
	tp := tpm.New(shared{e.tp.Transport()})
	attestOnce := func() *client.Report {
		rep, err := e.flow.Client.Attest(ctx, tp, tpmtest.EventLog(t, "rhel8-uefi.bin"))
		if err != nil || rep.Result.Identity == nil {
			t.Fatalf("attest: %v", err)
		}
		t.Cleanup(func() { rep.IdentityKey.Close() })
		return rep
	}
	crl := func() *x509.RevocationList {
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}).Get(e.url + wire.PathIdentityCRL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("CRL (%s): %v", resp.Status, err)
		}
		return l
	}
	listed := func(l *x509.RevocationList, serial *big.Int) bool {
		for _, r := range l.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(serial) == 0 {
				return true
			}
		}
		return false
	}

	first := attestOnce()
	firstCert, _ := x509.ParseCertificate(first.Result.Identity.Cert)
	issuing, _ := x509.ParseCertificate(first.Result.Identity.Chain[0])
	if l := crl(); len(l.RevokedCertificateEntries) != 0 || l.CheckSignatureFrom(issuing) != nil {
		t.Fatalf("CRL before any quarantine: %d entries, signature %v", len(l.RevokedCertificateEntries), l.CheckSignatureFrom(issuing))
	}
	if err := e.store.Quarantine(ctx, first.Result.HostID, "test operator"); err != nil {
		t.Fatal(err)
	}
	skew.Add(int64(6 * time.Second)) // the CRL is made again at most every 5 s
	if l := crl(); !listed(l, firstCert.SerialNumber) || l.CheckSignatureFrom(issuing) != nil {
		t.Fatalf("the quarantined host's identity %x is not on a valid CRL", firstCert.SerialNumber)
	}

	// Admitted again by a fresh pass, the host has a new identity; the old
	// one stays revoked, at the appliance too.
	second := attestOnce()
	if second.Result.Verdict != "pass" {
		t.Fatalf("re-attestation: %+v", second.Result)
	}
	get := func(id *wire.Identity, key *tpm.Key) int {
		resp, err := client.IdentityClient(e.roots)(id, key).Get(e.url + wire.PathIdentity)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(second.Result.Identity, second.IdentityKey); code != http.StatusOK {
		t.Errorf("the new identity: %d", code)
	}
	if code := get(first.Result.Identity, second.IdentityKey); code != http.StatusForbidden {
		t.Errorf("the revoked identity of a re-admitted host: %d", code)
	}
}

func isStatus(err error, status int) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status == status
}

// A failing host gets no identity and no OS, whatever it asks for.
func TestNoIdentityWithoutPass(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "ubuntu-2104-no-secure-boot.bin", nil)
	tp := tpm.New(shared{e.tp.Transport()})
	rep, err := e.flow.Client.Attest(context.Background(), tp, tpmtest.EventLog(t, "ubuntu-2104-no-secure-boot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer rep.IdentityKey.Close()
	if rep.Result.Verdict != "fail" || rep.Result.Identity != nil || rep.Result.Boot != nil {
		t.Fatalf("a failing host got verdict %s, identity %v, boot %v", rep.Result.Verdict, rep.Result.Identity, rep.Result.Boot)
	}
}

// TestIncidentWorkflow: a failure opens an incident; while it is open even a
// clean attestation keeps the host quarantined and attaches to it;
// remediation needs a post-mortem; after it, a fresh passing attestation
// admits the host and closes the incident.
func TestIncidentWorkflow(t *testing.T) {
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", nil)
	ctx := context.Background()
	attest := func(logName string) wire.Result {
		t.Helper()
		tp := tpm.New(shared{e.tp.Transport()})
		rep, err := e.flow.Client.Attest(ctx, tp, tpmtest.EventLog(t, logName))
		if err != nil {
			t.Fatal(err)
		}
		rep.IdentityKey.Close()
		return rep.Result
	}
	// The TPM holds rhel8's PCRs; another log does not replay: a failure.
	first := attest("ubuntu-2104-no-secure-boot.bin")
	if first.Verdict != "fail" || first.IncidentID == 0 {
		t.Fatalf("first: %+v", first)
	}
	second := attest("rhel8-uefi.bin")
	if second.Verdict != "fail" || second.IncidentID != first.IncidentID || second.Reasons[0].Rule != "incident.unresolved" {
		t.Fatalf("a clean attestation with an open incident: %+v", second)
	}
	if err := e.store.Act(ctx, first.IncidentID, "alice", store.IncidentAction{Kind: "investigate"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Act(ctx, first.IncidentID, "alice", store.IncidentAction{Kind: "remediate"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("remediation without a post-mortem: %v", err)
	}
	if err := e.store.Act(ctx, first.IncidentID, "alice", store.IncidentAction{Kind: "remediate", Text: "the agent sent a stale log after a firmware update; log collection fixed"}); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.store.Host(ctx, first.HostID); h.State != store.HostQuarantined {
		t.Fatalf("remediation alone admitted the host: %s", h.State)
	}
	third := attest("rhel8-uefi.bin")
	if third.Verdict != "pass" {
		t.Fatalf("after remediation: %+v", third)
	}
	in, notes, err := e.store.Incident(ctx, first.IncidentID)
	if err != nil || in.State != store.IncidentClosed || in.Failures != 2 || len(notes) != 2 {
		t.Fatalf("incident after the pass: %+v, %d notes, %v", in, len(notes), err)
	}
	audit, err := e.store.ListAudit(ctx, 0, 0)
	if err != nil || len(audit) != 2 || audit[0].Actor != "alice" {
		t.Fatalf("audit log: %+v %v", audit, err)
	}
}

// A verifier at its bound answers 429 with a Retry-After: the agent waits
// at least that long before its next attempt, within its backoff's Max,
// and then passes.
func TestRetryAfterHonoured(t *testing.T) {
	var refused atomic.Bool
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == wire.PathEnroll && refused.CompareAndSwap(false, true) {
				w.Header().Set(wire.RetryAfterHeader, "3600")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				w.Write([]byte(`{"code":"retry_later","message":"busy"}`))
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	e.flow.Backoff = bootflow.Backoff{Min: time.Millisecond, Max: 300 * time.Millisecond}
	if err := e.flow.Run(context.Background()); err != nil {
		t.Fatalf("run: %v\n%s", err, e.events)
	}
	var retry map[string]any
	for _, line := range strings.Split(e.events.String(), "\n") {
		if i := strings.IndexByte(line, '{'); i >= 0 && strings.Contains(line, `"event":"retry"`) {
			if err := json.Unmarshal([]byte(line[i:]), &retry); err != nil {
				t.Fatalf("retry event %q: %v", line, err)
			}
		}
	}
	if retry == nil {
		t.Fatalf("no retry event:\n%s", e.events)
	}
	// The verifier asked for an hour: the agent takes at most
	// client.MaxRetryAfter of it, and waits the backoff's Max.
	if retry["in_ms"] != float64(300) || retry["retry_after_ms"] != float64(client.MaxRetryAfter.Milliseconds()) {
		t.Errorf("retry event %v, want a wait of 300 ms for a Retry-After of %v", retry, client.MaxRetryAfter)
	}
	if !e.kexec.rebooted {
		t.Errorf("the second attempt did not boot:\n%s", e.events)
	}
}

// A request refused with retry_later was not read (a quote's session is
// still good): the agent sends it again after a short Retry-After instead
// of starting over, and the attempt passes with one enrollment made.
func TestRetriedAfterShortRetryAfter(t *testing.T) {
	var refused, refusedEnroll atomic.Bool
	var enrollments atomic.Int32
	e := setup(t, "rhel8-uefi.bin", "rhel8-uefi.bin", func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (r.URL.Path == wire.PathEnroll && refusedEnroll.CompareAndSwap(false, true)) ||
				(r.URL.Path == wire.PathQuote && refused.CompareAndSwap(false, true)) {
				w.Header().Set(wire.RetryAfterHeader, "1")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				w.Write([]byte(`{"code":"retry_later","message":"busy"}`))
				return
			}
			if r.URL.Path == wire.PathEnroll {
				enrollments.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	if err := e.flow.Run(context.Background()); err != nil {
		t.Fatalf("run: %v\n%s", err, e.events)
	}
	if !refused.Load() || !refusedEnroll.Load() || enrollments.Load() != 1 || strings.Contains(e.events.String(), `"event":"retry"`) || !e.kexec.rebooted {
		t.Errorf("refused %v, %d enrollments, events:\n%s", refused.Load(), enrollments.Load(), e.events)
	}
}

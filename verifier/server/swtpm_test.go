package server_test

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/qemu/swtpm"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func requireSwtpm(t *testing.T) {
	t.Helper()
	if err := swtpm.Available(); err != nil {
		t.Skipf("skipping the swtpm integration test: %v", err)
	}
}

// newSwtpmCA makes a test TPM manufacturer in dir.
func newSwtpmCA(t *testing.T, dir string) *swtpm.CA {
	t.Helper()
	ca, err := swtpm.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// startSwtpm manufactures a TPM with ca in stateDir, starts swtpm on it and
// opens it as the agent does; the TPM is closed and swtpm stopped at the end
// of the test.
func startSwtpm(t *testing.T, ca *swtpm.CA, stateDir string) *tpm.TPM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ca.Manufacture(ctx, stateDir); err != nil {
		t.Fatal(err)
	}
	s, err := swtpm.Start(stateDir, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop swtpm: %v", err)
		}
	})
	tp, err := tpm.Open("swtpm:" + s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("close swtpm: %v", err)
		}
	})
	return tp
}

// swtpmRoots parses the manufacturer's PEM roots as an operator's directory
// would hold them.
func swtpmRoots(t *testing.T, ca *swtpm.CA) []*x509.Certificate {
	t.Helper()
	b, err := ca.Roots()
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("manufacturer roots hold %d certificates, want the root and the issuing CA", len(certs))
	}
	return certs
}

// verifyEKChain checks that the stored EK certificate chains to the
// manufacturer's root through its issuing CA. EK certificates carry a
// critical subjectAltName of TPM attributes that Go's x509 does not handle.
func verifyEKChain(t *testing.T, der []byte, certs []*x509.Certificate) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("stored EK certificate: %v", err)
	}
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) })
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range certs {
		if r.CheckSignatureFrom(r) == nil {
			roots.AddCert(r)
		} else {
			inter.AddCert(r)
		}
	}
	chains, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		t.Fatalf("stored EK certificate does not chain to the manufacturer: %v", err)
	}
	if len(chains[0]) != 3 {
		t.Errorf("EK certificate chain of %d certificates, want EK, issuing CA, root", len(chains[0]))
	}
	return cert
}

// TestSwtpm attests two real swtpm TPMs of one manufacturer at once: one
// replays the good firmware log and is admitted, the other the log of a
// machine with Secure Boot off and is quarantined.
func TestSwtpm(t *testing.T) {
	requireSwtpm(t)
	dir := t.TempDir()
	ca := newSwtpmCA(t, filepath.Join(dir, "manufacturer"))
	start := time.Now()
	goodTPM := startSwtpm(t, ca, filepath.Join(dir, "good"))
	badTPM := startSwtpm(t, ca, filepath.Join(dir, "bad"))
	t.Logf("manufactured and started 2 swtpms in %v", time.Since(start))
	goodRaw := tpmtest.ReplayLog(t, goodTPM, goodLog)
	badRaw := tpmtest.ReplayLog(t, badTPM, badLog)

	// swtpm_setup provides an RSA 2048 EK (low range) and an ECC P-384 EK
	// (high range), both certified.
	eks, err := goodTPM.EKs()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ek := range eks {
		types = append(types, ek.Type)
		if ek.Cert == nil {
			t.Errorf("swtpm %s EK without certificate", ek.Type)
		}
		if err := goodTPM.CloseEK(ek); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(types, []string{"rsa2048", "ecc-p384"}) {
		t.Fatalf("swtpm EKs %v, want rsa2048 and ecc-p384", types)
	}

	certs := swtpmRoots(t, ca)
	f := newFixture(t, attest.NewRoots(certs, nil))
	var (
		wg       sync.WaitGroup
		goodRep  *client.Report
		badRep   *client.Report
		goodErr  error
		badErr   error
		agentFor = func() *client.Client { return &client.Client{BaseURL: f.ts.URL, HTTP: f.ts.Client()} }
	)
	wg.Go(func() { goodRep, goodErr = agentFor().Attest(context.Background(), goodTPM, goodRaw) })
	wg.Go(func() { badRep, badErr = agentFor().Attest(context.Background(), badTPM, badRaw) })
	wg.Wait()
	if err := errors.Join(goodErr, badErr); err != nil {
		t.Fatalf("Attest: %v", err)
	}
	t.Logf("good host: %d TPM commands in %v; bad host: %d in %v", goodRep.TPMCommands, goodRep.Duration, badRep.TPMCommands, badRep.Duration)

	// The good host: admitted, with the TPM's first EK and its certificate.
	good := goodRep.Result
	if good.Verdict != wire.VerdictPass || len(good.Reasons) != 0 || goodRep.EK.Type != "rsa2048" {
		t.Fatalf("good swtpm: %+v with EK %s, want a pass with the rsa2048 EK", good, goodRep.EK.Type)
	}
	a, err := f.st.Attestation(context.Background(), good.AttestationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Verdict != wire.VerdictPass || a.Evidence.EKType != "rsa2048" || a.HostID != hostIDOf(t, a.Evidence.EKPublic) {
		t.Errorf("stored attestation %s, EK %s, host %s", a.Verdict, a.Evidence.EKType, a.HostID)
	}
	cert := verifyEKChain(t, a.Evidence.EKCert, certs)
	values, err := goodTPM.PCRs(server.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range a.Evidence.PCRs {
		if string(p.Digest) != string(values[p.Index]) {
			t.Errorf("stored PCR %d differs from the swtpm's", p.Index)
		}
	}
	h, err := f.st.Host(context.Background(), good.HostID)
	if err != nil {
		t.Fatal(err)
	}
	if h.State != store.HostAdmitted || h.EKType != "rsa2048" || h.EKIssuer != cert.Issuer.String() {
		t.Errorf("stored good host %+v", h)
	}

	// The bad host: quarantined, with an incident naming the event that
	// measured Secure Boot off.
	bad := badRep.Result
	i := slices.IndexFunc(bad.Reasons, func(r wire.Reason) bool { return r.Rule == policy.RuleSecureBootEnabled })
	if bad.Verdict != wire.VerdictFail || i < 0 || bad.Reasons[i].Event <= 0 {
		t.Fatalf("bad swtpm: %+v, want a fail for %s naming its event", bad, policy.RuleSecureBootEnabled)
	}
	wantFailRecorded(t, f, bad, policy.RuleSecureBootEnabled, 1)
	ba, err := f.st.Attestation(context.Background(), bad.AttestationID)
	if err != nil {
		t.Fatal(err)
	}
	verifyEKChain(t, ba.Evidence.EKCert, certs)
	if bad.HostID == good.HostID {
		t.Error("two swtpms have one host ID")
	}
	if hs, in := hosts(t, f.st), incidents(t, f.st); len(hs) != 2 || len(in) != 1 || in[0].HostID != bad.HostID || in[0].Failures != 1 {
		t.Errorf("store holds hosts %+v and incidents %+v", hs, in)
	}

	// The good TPM's other EK (ECC P-384, high range, policy B) attests too,
	// through the raw protocol.
	eks, err = goodTPM.EKs()
	if err != nil {
		t.Fatal(err)
	}
	if err := goodTPM.CloseEK(eks[0]); err != nil {
		t.Fatal(err)
	}
	ak, err := goodTPM.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	h384 := &host{tp: goodTPM, ek: eks[1], ak: ak}
	t.Cleanup(func() {
		if err := errors.Join(ak.Close(), goodTPM.CloseEK(h384.ek)); err != nil {
			t.Errorf("release keys: %v", err)
		}
	})
	res := f.quote(t, h384.answer(t, f.enroll(t, h384.enrollRequest()), goodRaw))
	if res.Verdict != wire.VerdictPass || res.HostID == good.HostID {
		t.Errorf("P-384 EK attestation %+v, want a pass (as another host ID than the RSA EK's)", res)
	}
	if a, err := f.st.Attestation(context.Background(), res.AttestationID); err != nil || a.Evidence.EKType != "ecc-p384" {
		t.Errorf("stored P-384 attestation: %v", err)
	} else {
		verifyEKChain(t, a.Evidence.EKCert, certs)
	}
}

// TestSwtpmOtherManufacturer: a swtpm whose EK certificates come from another
// manufacturer CA is refused at enrollment, with both of its EKs.
func TestSwtpmOtherManufacturer(t *testing.T) {
	requireSwtpm(t)
	dir := t.TempDir()
	trusted := newSwtpmCA(t, filepath.Join(dir, "trusted"))
	startSwtpm(t, trusted, filepath.Join(dir, "trusted-tpm")) // creates the trusted CA's files
	other := newSwtpmCA(t, filepath.Join(dir, "other"))
	tp := startSwtpm(t, other, filepath.Join(dir, "other-tpm"))
	raw := tpmtest.ReplayLog(t, tp, goodLog)

	f := newFixture(t, attest.NewRoots(swtpmRoots(t, trusted), nil))
	_, err := f.agent().Attest(context.Background(), tp, raw)
	wantAPIError(t, err, http.StatusForbidden, wire.CodeEKUntrusted)
	if err == nil || strings.Count(err.Error(), string(wire.CodeEKUntrusted)) != 2 {
		t.Errorf("agent error %v, want both EKs refused", err)
	}
	wantNothingStored(t, f.st)
}

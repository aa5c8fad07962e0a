package attest_test

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// ekAndAK returns tp's first EK (with its certificate when tp was
// manufactured) and a new ECC P-256 AK, closed when the test ends.
func ekAndAK(tb testing.TB, tp *tpm.TPM) (tpm.EK, *tpm.AK) {
	tb.Helper()
	eks, err := tp.EKs()
	if err != nil || len(eks) == 0 {
		tb.Fatalf("EKs: %v %v", eks, err)
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ak.Close() })
	return eks[0], ak
}

// flip returns b with its last byte changed.
func flip(b []byte) []byte {
	b = slices.Clone(b)
	b[len(b)-1] ^= 1
	return b
}

// TestEnrollChecks: Enroll refuses an EK that is no endorsement key or that
// no root vouches for (ErrBadEK, ErrEKUntrusted), and an AK whose
// attributes or creation attestation do not check out (ErrBadAK).
func TestEnrollChecks(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	ek, ak := ekAndAK(t, tp)
	good := func() *wire.EnrollRequest {
		return &wire.EnrollRequest{EKCert: ek.Cert, EKPublic: ek.Public, AK: ak.Params()}
	}
	roots := ca.Roots()
	for _, tt := range []struct {
		name  string
		roots *attest.Roots
		req   func() *wire.EnrollRequest
		want  error // nil for success
	}{
		{"genuine", roots, good, nil},
		{"EK public area unreadable", roots, func() *wire.EnrollRequest {
			r := good()
			r.EKPublic = []byte{1, 2, 3}
			return r
		}, attest.ErrBadEK},
		{"AK presented as the EK", roots, func() *wire.EnrollRequest {
			r := good()
			r.EKPublic, r.EKCert = r.AK.Public, nil
			return r
		}, attest.ErrBadEK},
		{"no EK certificate, not allowlisted", roots, func() *wire.EnrollRequest {
			r := good()
			r.EKCert = nil
			return r
		}, attest.ErrEKUntrusted},
		{"EK certificate from an unknown manufacturer", tpmtest.NewCA(t).Roots(), good, attest.ErrEKUntrusted},
		{"EK certificate unreadable", roots, func() *wire.EnrollRequest {
			r := good()
			r.EKCert = []byte("not DER")
			return r
		}, attest.ErrEKUntrusted},
		{"EK presented as the AK", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.Public = ek.Public
			return r
		}, attest.ErrBadAK},
		{"AK public area unreadable", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.Public = []byte{0, 1}
			return r
		}, attest.ErrBadAK},
		{"AK creation data changed", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.CreateData = flip(r.AK.CreateData)
			return r
		}, attest.ErrBadAK},
		{"AK creation attestation changed", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.CreateAttestation = flip(r.AK.CreateAttestation)
			return r
		}, attest.ErrBadAK},
		{"AK creation signature changed", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.CreateSignature = flip(r.AK.CreateSignature)
			return r
		}, attest.ErrBadAK},
		{"no AK creation signature", roots, func() *wire.EnrollRequest {
			r := good()
			r.AK.CreateSignature = nil
			return r
		}, attest.ErrBadAK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			enr, err := tt.roots.Enroll(tt.req(), time.Now())
			if tt.want == nil {
				if err != nil || enr == nil || enr.HostID == "" {
					t.Fatalf("Enroll = %+v, %v; want an enrollment", enr, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || enr != nil {
				t.Fatalf("Enroll = %+v, %v; want %v", enr, err, tt.want)
			}
		})
	}
}

// TestVerifyChecks: every check of Verify, each failing alone, on a quote
// of a simulated TPM that booted the good log: the activation secret, the
// quote's signature and PCR digest, the nonce, the PCR selection, the event
// log's replay, and the boundary PCR.
func TestVerifyChecks(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, "rhel8-uefi.bin")
	other := tpmtest.EventLog(t, "debian-10.bin")
	enr, ak, secret, act, nonce := activated(t, ca, tp)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	ip := netip.MustParseAddr("10.23.0.117")
	qd, err := wire.QualifyingData(nonce, mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	fresh := []int{wire.BoundaryPCR}
	exp := func() attest.Expected {
		return attest.Expected{Secret: secret, Nonce: nonce, PCRs: server.DefaultPCRs, Unlogged: attest.DefaultUnlogged, Fresh: fresh}
	}
	// quote is an honest request: the TPM's quote now, its PCR values, the
	// log.
	quote := func(t *testing.T) *wire.QuoteRequest {
		t.Helper()
		q, sig, err := ak.Quote(qd, server.DefaultPCRs)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := tp.PCRs(server.DefaultPCRs)
		if err != nil {
			t.Fatal(err)
		}
		req := &wire.QuoteRequest{ActivationSecret: act, Quote: q, Signature: sig, EventLog: raw, MAC: mac.String(), IP: ip.String()}
		for _, i := range server.DefaultPCRs {
			req.PCRs = append(req.PCRs, wire.PCR{Index: i, Digest: vals[i]})
		}
		return req
	}
	check := func(t *testing.T, exp attest.Expected, req *wire.QuoteRequest, want error) {
		t.Helper()
		v, err := enr.Verify(exp, req, attest.DirectLogs)
		var evErr *attest.EvidenceError
		switch {
		case want == nil:
			if err != nil || v == nil || v.HostID != enr.HostID || v.State == nil {
				t.Fatalf("Verify = %+v, %v; want the verified state of host %s", v, err, enr.HostID)
			}
		case errors.Is(want, attest.ErrActivation), errors.Is(want, attest.ErrLinkMismatch):
			if !errors.Is(err, want) || v != nil {
				t.Fatalf("Verify = %+v, %v; want %v", v, err, want)
			}
		default:
			if !errors.As(err, &evErr) || evErr.Check != want.Error() || v != nil {
				t.Fatalf("Verify = %+v, %v; want the evidence failure %s", v, err, want)
			}
		}
	}
	for _, tt := range []struct {
		name string
		exp  func() attest.Expected
		req  func(*wire.QuoteRequest)
		want error // nil, a sentinel, or errors.New(an EvidenceError's check)
	}{
		{"honest", exp, func(*wire.QuoteRequest) {}, nil},
		{"activation secret wrong", exp, func(r *wire.QuoteRequest) { r.ActivationSecret = flip(r.ActivationSecret) }, attest.ErrActivation},
		{"no activation secret", exp, func(r *wire.QuoteRequest) { r.ActivationSecret = nil }, attest.ErrActivation},
		{"no secret issued", func() attest.Expected { e := exp(); e.Secret = nil; return e }, func(*wire.QuoteRequest) {}, attest.ErrActivation},
		{"signature changed", exp, func(r *wire.QuoteRequest) { r.Signature = flip(r.Signature) }, errors.New(attest.CheckQuote)},
		{"quote changed", exp, func(r *wire.QuoteRequest) { r.Quote = flip(r.Quote) }, errors.New(attest.CheckQuote)},
		{"a PCR value changed: digest mismatch", exp, func(r *wire.QuoteRequest) { r.PCRs[7].Digest = flip(r.PCRs[7].Digest) }, errors.New(attest.CheckQuote)},
		{"a PCR value sent twice", exp, func(r *wire.QuoteRequest) { r.PCRs = append(r.PCRs, r.PCRs[0]) }, errors.New(attest.CheckPCRSelection)},
		{"another session's nonce expected", func() attest.Expected { e := exp(); e.Nonce = flip(nonce); return e },
			func(*wire.QuoteRequest) {}, attest.ErrLinkMismatch},
		{"fewer PCRs expected than quoted", func() attest.Expected { e := exp(); e.PCRs = server.DefaultPCRs[:15]; return e },
			func(*wire.QuoteRequest) {}, errors.New(attest.CheckPCRSelection)},
		{"no event log", exp, func(r *wire.QuoteRequest) { r.EventLog = nil }, errors.New(attest.CheckEventLog)},
		{"another boot's event log", exp, func(r *wire.QuoteRequest) { r.EventLog = other }, errors.New(attest.CheckEventLog)},
		{"event log cut short", exp, func(r *wire.QuoteRequest) { r.EventLog = r.EventLog[:len(r.EventLog)/2] }, errors.New(attest.CheckEventLog)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := quote(t)
			tt.req(req)
			check(t, tt.exp(), req, tt.want)
		})
	}

	// Last, as it changes the TPM: once the boundary PCR is extended (the
	// agent handed this boot over), a fresh quote is refused; without the
	// boundary expectation the same quote fails the replay, as the log
	// does not explain the extension.
	if err := tp.Extend(wire.BoundaryPCR, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	t.Run("boundary PCR extended", func(t *testing.T) {
		check(t, exp(), quote(t), errors.New(attest.CheckBoundary))
	})
	t.Run("boundary not expected", func(t *testing.T) {
		e := exp()
		e.Fresh = nil
		check(t, e, quote(t), errors.New(attest.CheckEventLog))
	})
}

// activated enrolls tp's first EK with a new P-256 AK (closed at the end of
// the test), activates the credential, and returns the enrollment, the AK,
// the activation secret the verifier expects, the one the TPM recovered,
// and a fresh 32-byte nonce.
func activated(t *testing.T, ca *tpmtest.CA, tp *tpm.TPM) (enr *attest.Enrollment, ak *tpm.AK, secret, act, nonce []byte) {
	t.Helper()
	var ek tpm.EK
	ek, ak = ekAndAK(t, tp)
	enr, err := ca.Roots().Enroll(&wire.EnrollRequest{EKCert: ek.Cert, EKPublic: ek.Public, AK: ak.Params()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret, cred, encSecret, err := enr.Challenge(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if act, err = ak.ActivateCredential(ek, cred, encSecret); err != nil {
		t.Fatal(err)
	}
	nonce = make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	return enr, ak, secret, act, nonce
}

package server_test

import (
	"crypto/rsa"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/roca"
	"github.com/bootgate/bootgate/internal/roca/rocatest"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// withRSAModulus returns the TPMT_PUBLIC b (an RSA key) with its modulus
// replaced.
func withRSAModulus(t *testing.T, b, n []byte) []byte {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		t.Fatal(err)
	}
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	return tpm2.Marshal(*pub)
}

// TestROCAKeysRefused: an EK or AK whose RSA modulus has the ROCA
// fingerprint (CVE-2017-15361) is refused at enrollment, also with an EK
// certificate from a trusted manufacturer for it.
func TestROCAKeysRefused(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	h := newHost(t, tp)
	weak := rocatest.Modulus(t)

	t.Run("EK", func(t *testing.T) {
		f := newFixture(t, ca.Roots())
		req := h.enrollRequest()
		ek := tpm2.RSAEKTemplate // the EK a TPM derives, with the weak modulus
		ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: weak.Bytes()})
		req.EKPublic = tpm2.Marshal(ek)
		req.EKCert = ca.IssueEKCert(t, &rsa.PublicKey{N: weak, E: 65537})
		status, body := f.post(t, wire.PathEnroll, req)
		wantError(t, status, body, http.StatusForbidden, wire.CodeEKUntrusted)
		wantNothingStored(t, f.st)
		if _, err := ca.Roots().Enroll(&req, time.Now()); !errors.Is(err, roca.ErrVulnerable) || !errors.Is(err, attest.ErrEKUntrusted) {
			t.Errorf("Enroll = %v, want ErrEKUntrusted and roca.ErrVulnerable", err)
		}
	})

	t.Run("AK", func(t *testing.T) {
		ak, err := tp.NewAK(tpm.AKRSA2048)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ak.Close() })
		f := newFixture(t, ca.Roots())
		req := h.enrollRequest()
		req.AK = ak.Params()
		req.AK.Public = withRSAModulus(t, req.AK.Public, weak.Bytes())
		status, body := f.post(t, wire.PathEnroll, req)
		wantError(t, status, body, http.StatusBadRequest, wire.CodeBadAK)
		wantNothingStored(t, f.st)
		if _, err := ca.Roots().Enroll(&req, time.Now()); !errors.Is(err, roca.ErrVulnerable) || !errors.Is(err, attest.ErrBadAK) {
			t.Errorf("Enroll = %v, want ErrBadAK and roca.ErrVulnerable", err)
		}
	})
}

package attest_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	goattest "github.com/google/go-attestation/attest"

	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/server"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestQuoteSignatureTrailingBytes is the attack of a quote whose signature
// (TPMT_SIGNATURE) is padded to 1024 bytes: go-attestation reads the
// signature and ignores what follows, so the padded quote verified and was
// stored as sent. The quote and its signature must each be exactly one
// canonical encoding; anything else is evidence that does not verify
// ("evidence.encoding"). The same holds for the identity key's certify
// attestation, signature and public area.
func TestQuoteSignatureTrailingBytes(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	raw := tpmtest.ReplayLog(t, tp, "rhel8-uefi.bin")
	enr, ak, secret, act, nonce := activated(t, ca, tp)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	ip := netip.MustParseAddr("10.23.0.117")
	qd, err := wire.QualifyingData(nonce, mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	q, sig, err := ak.Quote(qd, server.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.PCRs(server.DefaultPCRs)
	if err != nil {
		t.Fatal(err)
	}
	exp := attest.Expected{Secret: secret, Nonce: nonce, PCRs: server.DefaultPCRs, Unlogged: attest.DefaultUnlogged}
	request := func(quote, sig []byte) *wire.QuoteRequest {
		r := &wire.QuoteRequest{ActivationSecret: act, Quote: quote, Signature: sig, EventLog: raw, MAC: mac.String(), IP: ip.String()}
		for _, i := range server.DefaultPCRs {
			r.PCRs = append(r.PCRs, wire.PCR{Index: i, Digest: vals[i]})
		}
		return r
	}
	if v, err := enr.Verify(exp, request(q, sig), attest.DirectLogs); err != nil || v == nil {
		t.Fatalf("the honest quote: %v", err)
	}
	padded := append(bytes.Clone(sig), make([]byte, 1024-len(sig))...)
	// The attack is real: go-attestation verifies the padded signature.
	akPub, err := goattest.ParseAKPublic(ak.Params().Public)
	if err != nil {
		t.Fatal(err)
	}
	var pcrs []goattest.PCR
	for _, r := range request(q, sig).PCRs {
		pcrs = append(pcrs, goattest.PCR{Index: r.Index, Digest: r.Digest, DigestAlg: akPub.Hash})
	}
	if err := akPub.Verify(goattest.Quote{Quote: q, Signature: padded}, pcrs, qd); err != nil {
		t.Fatalf("go-attestation refuses the padded signature itself (%v): the test no longer shows the attack", err)
	}
	for _, tt := range []struct {
		name       string
		quote, sig []byte
	}{
		{"signature padded to 1024 bytes", q, padded},
		{"signature with a byte after it", q, append(bytes.Clone(sig), 0)},
		{"quote with a byte after it", append(bytes.Clone(q), 0), sig},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := enr.Verify(exp, request(tt.quote, tt.sig), attest.DirectLogs)
			var evErr *attest.EvidenceError
			if v != nil || !errors.As(err, &evErr) || evErr.Check != attest.CheckEncoding {
				t.Fatalf("Verify = %+v, %v; want the evidence failure %s", v, err, attest.CheckEncoding)
			}
			if evErr.Signed {
				t.Error("the failure claims a verified signature")
			}
		})
	}

	key, err := tp.IdentityKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { key.Close() })
	certify, csig, err := ak.Certify(key, nonce)
	if err != nil {
		t.Fatal(err)
	}
	identity := func() *wire.IdentityRequest {
		return &wire.IdentityRequest{Public: bytes.Clone(key.Public()), CertifyInfo: bytes.Clone(certify), Signature: bytes.Clone(csig)}
	}
	if _, err := enr.VerifyIdentityKey(identity(), nonce); err != nil {
		t.Fatalf("the honest identity request: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(r *wire.IdentityRequest)
	}{
		{"identity signature padded", func(r *wire.IdentityRequest) { r.Signature = append(r.Signature, make([]byte, 512)...) }},
		{"identity certify info with a byte after it", func(r *wire.IdentityRequest) { r.CertifyInfo = append(r.CertifyInfo, 0) }},
		{"identity public area with a byte after it", func(r *wire.IdentityRequest) { r.Public = append(r.Public, 0) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := identity()
			tt.edit(r)
			if k, err := enr.VerifyIdentityKey(r, nonce); k != nil || !errors.Is(err, attest.ErrIdentity) || !errors.Is(err, attest.ErrNotCanonical) {
				t.Fatalf("VerifyIdentityKey = %v, %v; want ErrIdentity, ErrNotCanonical", k, err)
			}
		})
	}
}

package attest_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// TestEnrollCanonical is the attack of an EK certificate with trailing
// bytes, which made a pending session hold 704 KiB instead of 2.8 KiB:
// every structure of an enrollment request must be exactly one canonical
// encoding and within its limit, and the Enrollment keeps copies of the
// canonical bytes only.
func TestEnrollCanonical(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	eks, err := tp.EKs()
	if err != nil || len(eks) == 0 {
		t.Fatalf("EKs: %v %v", eks, err)
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	ek := eks[0]
	good := func() *wire.EnrollRequest {
		p := ak.Params()
		return &wire.EnrollRequest{EKCert: bytes.Clone(ek.Cert), EKPublic: bytes.Clone(ek.Public), AK: wire.AKParams{
			Public: bytes.Clone(p.Public), CreateData: bytes.Clone(p.CreateData),
			CreateAttestation: bytes.Clone(p.CreateAttestation), CreateSignature: bytes.Clone(p.CreateSignature),
		}}
	}
	roots := ca.Roots()
	trail := func(n int) []byte { return bytes.Repeat([]byte{0}, n) }
	for _, tt := range []struct {
		name string
		edit func(r *wire.EnrollRequest)
		want []error
	}{
		{"EK certificate with a trailing byte", func(r *wire.EnrollRequest) { r.EKCert = append(r.EKCert, 0) },
			[]error{attest.ErrEKUntrusted, attest.ErrNotCanonical}},
		{"EK certificate with 700 KiB of trailing bytes", func(r *wire.EnrollRequest) { r.EKCert = append(r.EKCert, trail(700<<10)...) },
			[]error{wire.ErrFieldTooLarge}},
		{"EK public area with a trailing byte", func(r *wire.EnrollRequest) { r.EKPublic = append(r.EKPublic, 0) },
			[]error{attest.ErrBadEK, attest.ErrNotCanonical}},
		{"EK public area over its limit", func(r *wire.EnrollRequest) { r.EKPublic = append(r.EKPublic, trail(wire.MaxTPMStructBytes)...) },
			[]error{wire.ErrFieldTooLarge}},
		{"AK public area with a trailing byte", func(r *wire.EnrollRequest) { r.AK.Public = append(r.AK.Public, 0) },
			[]error{attest.ErrBadAK, attest.ErrNotCanonical}},
		{"AK creation data with a trailing byte", func(r *wire.EnrollRequest) { r.AK.CreateData = append(r.AK.CreateData, 0) },
			[]error{attest.ErrBadAK, attest.ErrNotCanonical}},
		{"AK creation attestation with a trailing byte", func(r *wire.EnrollRequest) { r.AK.CreateAttestation = append(r.AK.CreateAttestation, 0) },
			[]error{attest.ErrBadAK, attest.ErrNotCanonical}},
		{"AK creation signature with a trailing byte", func(r *wire.EnrollRequest) { r.AK.CreateSignature = append(r.AK.CreateSignature, 0) },
			[]error{attest.ErrBadAK, attest.ErrNotCanonical}},
		{"AK creation signature over its limit", func(r *wire.EnrollRequest) {
			r.AK.CreateSignature = append(r.AK.CreateSignature, trail(wire.MaxTPMStructBytes)...)
		}, []error{wire.ErrFieldTooLarge}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.edit(r)
			enr, err := roots.Enroll(r, time.Now())
			if enr != nil || err == nil {
				t.Fatalf("Enroll = %+v, %v; want a refusal", enr, err)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Enroll error %q does not match %v", err, w)
				}
			}
		})
	}

	t.Run("kept bytes are copies of the canonical encodings", func(t *testing.T) {
		r := good()
		enr, err := roots.Enroll(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		kept := [][]byte{enr.EKCert, enr.EKPublic, enr.AK.Public, enr.AK.CreateData, enr.AK.CreateAttestation, enr.AK.CreateSignature}
		sent := [][]byte{ek.Cert, ek.Public, ak.Params().Public, ak.Params().CreateData, ak.Params().CreateAttestation, ak.Params().CreateSignature}
		total := 0
		for i := range kept {
			if !bytes.Equal(kept[i], sent[i]) {
				t.Errorf("field %d kept as %x, sent %x", i, kept[i], sent[i])
			}
			total += cap(kept[i])
		}
		// The request's buffers are the caller's: overwriting them changes
		// nothing the enrollment keeps.
		for _, b := range [][]byte{r.EKCert, r.EKPublic, r.AK.Public, r.AK.CreateData, r.AK.CreateAttestation, r.AK.CreateSignature} {
			clear(b)
		}
		if !bytes.Equal(enr.EKCert, ek.Cert) || !bytes.Equal(enr.AK.Public, ak.Params().Public) {
			t.Error("the enrollment shares memory with the request")
		}
		if limit := wire.MaxEKCertBytes + 5*wire.MaxTPMStructBytes; total > limit {
			t.Errorf("the enrollment keeps %d bytes of evidence, over %d", total, limit)
		}
		t.Logf("evidence kept per enrollment: %d bytes", total)
	})
}

// TestCanonicalQuickAndExactAgree: the quick checks (legacy decoders) and
// the exact one (go-tpm's encoder) agree on genuine public areas (the EK,
// ECC and RSA AKs) and on ones with bytes after them; the AK parameters of
// both kinds pass.
func TestCanonicalQuickAndExactAgree(t *testing.T) {
	tp := tpmtest.Simulator(t, tpmtest.NewCA(t))
	eks, err := tp.EKs()
	if err != nil || len(eks) == 0 {
		t.Fatalf("EKs: %d, %v", len(eks), err)
	}
	publics := [][]byte{eks[0].Public}
	for _, alg := range []tpm.AKAlg{tpm.AKECCP256, tpm.AKRSA2048} {
		ak, err := tp.NewAK(alg)
		if err != nil {
			t.Fatal(err)
		}
		p := ak.Params()
		ak.Close()
		if _, err := attest.CanonicalAK(p); err != nil {
			t.Errorf("AK %v: %v", alg, err)
		}
		publics = append(publics, p.Public)
	}
	for i, pub := range publics {
		for _, b := range [][]byte{pub, append(bytes.Clone(pub), 0)} {
			quick, exact := attest.CanonicalPublic(b), attest.SlowCanonicalPublic(b)
			if (quick == nil) != (exact == nil) || (len(b) == len(pub)) != (quick == nil) {
				t.Errorf("public area %d, %d bytes: quick %v, exact %v", i, len(b), quick, exact)
			}
		}
	}
}

// BenchmarkCanonical is the cost of the canonical-encoding checks of one
// enrollment: the EK public area (decoded anyway) and the AK parameters.
func BenchmarkCanonical(b *testing.B) {
	tp := tpmtest.Simulator(b, tpmtest.NewCA(b))
	eks, err := tp.EKs()
	if err != nil {
		b.Fatal(err)
	}
	ak, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ak.Close() })
	p := ak.Params()
	b.Run("ek", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := attest.CanonicalPublic(eks[0].Public); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ak", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := attest.CanonicalAK(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

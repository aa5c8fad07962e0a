package attest_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	gotpm "github.com/google/go-tpm/tpm2"

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
	ek, ak := ekAndAK(t, tp)
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

// TestCanonicalXORPublicArea is the attack of a public area that go-tpm's
// decoder reads as an RSA EK with a symmetric XOR definition (a hash, 2
// bytes) followed by junk, and the legacy decoder as another structure
// (XOR with key bits and mode, 4 bytes; the key bits as a scheme; the
// modulus's second and third bytes as its length) that re-encodes to every
// byte. The quick check must not vouch for what the exact check refuses,
// and Enroll must refuse the bytes even for an allowlisted EK: stored, they
// made every activation challenge fail. The modulus is random bytes, chosen
// so that the legacy reading fits.
func TestCanonicalXORPublicArea(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{'x', 'o', 'r'}))
	mod := make([]byte, 256)
	for i := range mod {
		mod[i] = byte(rng.UintN(256))
	}
	mod[0] |= 0x80
	mod[255] |= 1
	binary.BigEndian.PutUint16(mod[2:4], 252+389) // the legacy modulus length
	pub := gotpm.TPMTPublic{Type: gotpm.TPMAlgRSA, NameAlg: gotpm.TPMAlgSHA256,
		ObjectAttributes: gotpm.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, AdminWithPolicy: true, Restricted: true, Decrypt: true},
		AuthPolicy:       gotpm.TPM2BDigest{Buffer: make([]byte, 32)},
		Parameters: gotpm.NewTPMUPublicParms(gotpm.TPMAlgRSA, &gotpm.TPMSRSAParms{
			Symmetric: gotpm.TPMTSymDefObject{Algorithm: gotpm.TPMAlgXOR, KeyBits: gotpm.NewTPMUSymKeyBits(gotpm.TPMAlgXOR, gotpm.TPMAlgSHA256), Mode: gotpm.NewTPMUSymMode(gotpm.TPMAlgXOR, gotpm.TPMSEmpty{})},
			Scheme:    gotpm.TPMTRSAScheme{Scheme: gotpm.TPMAlgNull}, KeyBits: 2048}),
		Unique: gotpm.NewTPMUPublicID(gotpm.TPMAlgRSA, &gotpm.TPM2BPublicKeyRSA{Buffer: mod})}
	enc := gotpm.Marshal(pub)
	l := int(binary.BigEndian.Uint16(enc[len(enc)-256+2:]))
	b := append(bytes.Clone(enc), make([]byte, l-252)...)
	if len(b) > wire.MaxTPMStructBytes {
		t.Fatalf("%d bytes, over the limit", len(b))
	}
	// The construction works: the legacy decoder reads b to its end and
	// re-encodes it exactly.
	if lp, err := legacy.DecodePublic(b); err != nil {
		t.Fatalf("legacy decoding: %v", err)
	} else if re, err := lp.Encode(); err != nil || !bytes.Equal(re, b) {
		t.Fatalf("the legacy round trip does not hold: %v", err)
	}
	quick, exact := attest.CanonicalPublic(b), attest.SlowCanonicalPublic(b)
	if exact == nil || !errors.Is(exact, attest.ErrNotCanonical) {
		t.Fatalf("exact check: %v, want ErrNotCanonical", exact)
	}
	if quick == nil {
		t.Errorf("the quick check vouches for %d bytes the exact check refuses: %v", len(b), exact)
	}
	quickAK, exactAK := attest.CheckAKStructure("public", b)
	if quickAK == nil || exactAK == nil {
		t.Errorf("as an AK public area: quick %v, exact %v; want both to refuse", quickAK, exactAK)
	}

	ca := tpmtest.NewCA(t)
	ak, err := tpmtest.Simulator(t, ca).NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ak.Close() })
	v, err := gotpm.Unmarshal[gotpm.TPMTPublic](b)
	if err != nil {
		t.Fatal(err)
	}
	key, err := gotpm.Pub(*v)
	if err != nil {
		t.Fatal(err)
	}
	id, err := attest.HostID(key)
	if err != nil {
		t.Fatal(err)
	}
	roots := attest.NewRoots(nil, []string{id})
	enr, err := roots.Enroll(&wire.EnrollRequest{EKPublic: b, AK: ak.Params()}, time.Now())
	if enr != nil || !errors.Is(err, attest.ErrBadEK) || !errors.Is(err, attest.ErrNotCanonical) {
		t.Fatalf("Enroll of an allowlisted EK with %d bytes after its public area = %v, %v; want ErrBadEK, ErrNotCanonical", l-252, enr, err)
	}
	// Without the junk, the same EK enrolls: the refusal is the junk's.
	if enr, err := roots.Enroll(&wire.EnrollRequest{EKPublic: enc, AK: ak.Params()}, time.Now()); err != nil || enr == nil {
		t.Errorf("Enroll of the allowlisted EK's canonical public area: %v", err)
	}
}

// TestCanonicalQuickImpliesExact: the quick checks of the AK's structures
// and of a public area never vouch for bytes the exact check refuses, on
// genuine structures with single bytes changed at random (seeded), and on
// an attestation whose clock's safe flag is 2 (the legacy decoder keeps the
// byte, go-tpm's reads a bool that re-encodes as 1).
func TestCanonicalQuickImpliesExact(t *testing.T) {
	tp := tpmtest.Simulator(t, tpmtest.NewCA(t))
	eks, err := tp.EKs()
	if err != nil || len(eks) == 0 {
		t.Fatalf("EKs: %d, %v", len(eks), err)
	}
	type sample struct {
		which string
		b     []byte
	}
	samples := []sample{{"public", eks[0].Public}}
	for _, alg := range []tpm.AKAlg{tpm.AKECCP256, tpm.AKRSA2048} {
		ak, err := tp.NewAK(alg)
		if err != nil {
			t.Fatal(err)
		}
		p := ak.Params()
		ak.Close()
		samples = append(samples, sample{"public", p.Public}, sample{"creation data", p.CreateData},
			sample{"attestation", p.CreateAttestation}, sample{"signature", p.CreateSignature})
	}

	// The safe flag's offset: where the encodings with it clear and set differ.
	att := samples[3].b
	v, err := gotpm.Unmarshal[gotpm.TPMSAttest](att)
	if err != nil {
		t.Fatal(err)
	}
	v.ClockInfo.Safe = false
	off, clear := -1, gotpm.Marshal(*v)
	v.ClockInfo.Safe = true
	for i, c := range gotpm.Marshal(*v) {
		if c != clear[i] {
			off = i
			break
		}
	}
	unsafe := bytes.Clone(att)
	unsafe[off] = 2
	if quick, exact := attest.CheckAKStructure("attestation", unsafe); quick == nil || exact == nil {
		t.Errorf("attestation with safe = 2: quick %v, exact %v; want both to refuse", quick, exact)
	}

	rng := rand.New(rand.NewChaCha8([32]byte{'f', 'l', 'i', 'p'}))
	vouched := 0
	for _, s := range samples {
		for range 400 {
			b := bytes.Clone(s.b)
			b[rng.IntN(len(b))] = byte(rng.UintN(256))
			quick, exact := attest.CheckAKStructure(s.which, b)
			if quick == nil && exact != nil {
				t.Errorf("%s % x: the quick check vouches, the exact one refuses: %v", s.which, b, exact)
			}
			if quick == nil {
				vouched++
			}
		}
	}
	if vouched == 0 {
		t.Error("no changed structure passed: the comparison tested nothing")
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

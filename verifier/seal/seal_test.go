package seal

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// eccEK returns the TPMT_PUBLIC of a TCG L-2 (ECC P-256) EK with a fresh key.
func eccEK(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.ECCEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
	})
	return tpm2.Marshal(pub)
}

// rsaEK returns the TPMT_PUBLIC of a TCG L-1 (RSA 2048) EK with a fresh key.
func rsaEK(t testing.TB) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.RSAEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(pub)
}

// zeroPCRs returns PCRs 0-15 all zero, as in a freshly reset TPM.
func zeroPCRs() map[int][]byte {
	m := make(map[int][]byte, 16)
	for i := range 16 {
		m[i] = make([]byte, sha256.Size)
	}
	return m
}

func TestSealBlob(t *testing.T) {
	for name, ek := range map[string][]byte{"ecc-p256": eccEK(t), "rsa2048": rsaEK(t)} {
		t.Run(name, func(t *testing.T) {
			pcrs := zeroPCRs()
			b, err := Seal(rand.Reader, ek, pcrs, []byte("disk key"))
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(b.Duplicate) == 0 || len(b.EncryptedSeed) == 0 {
				t.Fatalf("Seal returned an empty duplicate or seed: %+v", b)
			}
			want := make([]int, 16)
			for i := range want {
				want[i] = i
			}
			if len(b.PCRs) != 16 || !equalInts(b.PCRs, want) {
				t.Errorf("PCRs = %v, want %v", b.PCRs, want)
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
			if err != nil {
				t.Fatalf("Public does not unmarshal: %v", err)
			}
			a := pub.ObjectAttributes
			if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
				t.Errorf("sealed object type %v nameAlg %v", pub.Type, pub.NameAlg)
			}
			if a.FixedTPM || a.FixedParent || a.UserWithAuth || a.SensitiveDataOrigin || a.SignEncrypt || a.Decrypt {
				t.Errorf("sealed object attributes %+v", a)
			}
			policy, _, err := PCRPolicy(pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pub.AuthPolicy.Buffer, policy) {
				t.Errorf("authPolicy %x, want %x", pub.AuthPolicy.Buffer, policy)
			}
			// A second seal of the same secret differs (fresh seed and
			// obfuscation value).
			b2, err := Seal(rand.Reader, ek, pcrs, []byte("disk key"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(b.Public, b2.Public) || bytes.Equal(b.Duplicate, b2.Duplicate) || bytes.Equal(b.EncryptedSeed, b2.EncryptedSeed) {
				t.Error("two seals of one secret share bytes")
			}
			// JSON field names are the agent's (agent/tpm.SealedBlob).
			j, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{`"public":`, `"duplicate":`, `"encrypted_seed":`, `"pcrs":`} {
				if !strings.Contains(string(j), f) {
					t.Errorf("JSON %s lacks %s", j, f)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPCRPolicy checks the policy digest against the definition of
// TPM2_PolicyPCR, computed by hand.
func TestPCRPolicy(t *testing.T) {
	pcrs := map[int][]byte{
		7:  bytes.Repeat([]byte{7}, 32),
		0:  bytes.Repeat([]byte{0}, 32),
		15: bytes.Repeat([]byte{15}, 32),
	}
	got, idx, err := PCRPolicy(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if !equalInts(idx, []int{0, 7, 15}) {
		t.Errorf("indices %v", idx)
	}
	values := sha256.New()
	for _, i := range []int{0, 7, 15} {
		values.Write(pcrs[i])
	}
	h := sha256.New()
	h.Write(make([]byte, 32))                          // initial policy digest
	h.Write(binary.BigEndian.AppendUint32(nil, 0x17f)) // TPM_CC_PolicyPCR
	h.Write(binary.BigEndian.AppendUint32(nil, 1))     // TPML_PCR_SELECTION count
	h.Write(binary.BigEndian.AppendUint16(nil, 0x0b))  // TPM_ALG_SHA256
	h.Write([]byte{3, 0x81, 0x80, 0x00})               // sizeofSelect 3: PCRs 0, 7, 15
	h.Write(values.Sum(nil))
	if want := h.Sum(nil); !bytes.Equal(got, want) {
		t.Errorf("PCRPolicy = %x, want %x", got, want)
	}

	// Any change of a value changes the policy.
	pcrs[7] = bytes.Repeat([]byte{8}, 32)
	other, _, err := PCRPolicy(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, other) {
		t.Error("a different PCR value gave the same policy")
	}
}

// errRead is failingReader's error.
var errRead = errors.New("test read failure")

// failingReader is a random source that fails.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errRead }

func TestSealErrors(t *testing.T) {
	ek := eccEK(t)
	signing := tpm2.Marshal(tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true,
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
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	})
	// An ECC EK whose point is not on the curve.
	offCurve := tpm2.ECCEKTemplate
	offCurve.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{2}, 32)},
	})
	secret := []byte("secret")
	pcrs := zeroPCRs()
	for _, c := range []struct {
		name   string
		rand   io.Reader
		ek     []byte
		pcrs   map[int][]byte
		secret []byte
		want   string
	}{
		{name: "nil EK", ek: nil, pcrs: pcrs, secret: secret, want: "empty EK"},
		{name: "garbage EK", ek: []byte{0xff, 0xff, 1, 2, 3}, pcrs: pcrs, secret: secret, want: "EK"},
		{name: "truncated EK", ek: ek[:len(ek)/2], pcrs: pcrs, secret: secret, want: "malformed EK"},
		{name: "signing key", ek: signing, pcrs: pcrs, secret: secret, want: "restricted decryption"},
		{name: "EK off curve", ek: tpm2.Marshal(offCurve), pcrs: pcrs, secret: secret, want: "EK"},
		{name: "empty secret", ek: ek, pcrs: pcrs, secret: nil, want: "empty secret"},
		{name: "large secret", ek: ek, pcrs: pcrs, secret: make([]byte, MaxSecretSize+1), want: "limit"},
		{name: "no PCRs", ek: ek, pcrs: nil, secret: secret, want: "no PCRs"},
		{name: "PCR 24", ek: ek, pcrs: map[int][]byte{24: make([]byte, 32)}, secret: secret, want: "out of range"},
		{name: "PCR -1", ek: ek, pcrs: map[int][]byte{-1: make([]byte, 32)}, secret: secret, want: "out of range"},
		{name: "SHA-1 value", ek: ek, pcrs: map[int][]byte{0: make([]byte, 20)}, secret: secret, want: "20 bytes"},
		{name: "failing rand", rand: failingReader{}, ek: ek, pcrs: pcrs, secret: secret, want: "test read failure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rand.Reader
			if c.rand != nil {
				r = c.rand
			}
			b, err := Seal(r, c.ek, c.pcrs, c.secret)
			if err == nil {
				t.Fatalf("Seal = %+v, want error", b)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Seal: %v, want an error mentioning %q", err, c.want)
			}
			if c.rand != nil && !errors.Is(err, errRead) {
				t.Errorf("Seal: %v does not wrap the reader's error", err)
			}
		})
	}
	if _, err := Seal(nil, ek, pcrs, secret); err == nil {
		t.Error("Seal with a nil random source succeeded")
	}
	// The largest secret is accepted.
	if _, err := Seal(rand.Reader, ek, pcrs, make([]byte, MaxSecretSize)); err != nil {
		t.Errorf("Seal of %d bytes: %v", MaxSecretSize, err)
	}
}

// BenchmarkSeal is what one sealed credential adds to an admitted host's
// attestation, for the two common EK types.
func BenchmarkSeal(b *testing.B) {
	secret := []byte(strings.Repeat("s", 64))
	for _, tc := range []struct {
		name string
		ek   []byte
	}{{"ecc-p256", eccEK(b)}, {"rsa2048", rsaEK(b)}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(rand.Reader, tc.ek, zeroPCRs(), secret); err != nil {
					b.Fatal(err)
				}
			}
		})
		// SealTo, as the verifier seals: the EK decoded once per enrollment.
		ek, err := parseEK(tc.ek)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name+"/decoded-ek", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := SealTo(rand.Reader, ek, crypto.SHA256, zeroPCRs(), secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

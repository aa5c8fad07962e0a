package tpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/seal"
)

// unsealPCRs are the PCRs the tests seal to: the firmware and boot loader
// ones, as the verifier quotes them.
var unsealPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// unsealEK returns tp's first EK, closed when the test ends.
func unsealEK(t *testing.T, tp *tpm.TPM) tpm.EK {
	t.Helper()
	eks, err := tp.EKs()
	if err != nil {
		t.Fatalf("EKs: %v", err)
	}
	for _, ek := range eks[1:] {
		if err := tp.CloseEK(ek); err != nil {
			t.Fatalf("CloseEK: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := tp.CloseEK(eks[0]); err != nil {
			t.Errorf("CloseEK: %v", err)
		}
	})
	return eks[0]
}

// sealTo seals secret to ek under pcrs, as the verifier does, and passes the
// blob through JSON into the agent's type, as the wire does.
func sealTo(t *testing.T, ek tpm.EK, pcrs map[int][]byte, secret []byte) *tpm.SealedBlob {
	t.Helper()
	b, err := seal.Seal(rand.Reader, ek.Public, pcrs, secret)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	j, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var out tpm.SealedBlob
	if err := json.Unmarshal(j, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// readUnsealPCRs reads unsealPCRs.
func readUnsealPCRs(t *testing.T, tp *tpm.TPM) map[int][]byte {
	t.Helper()
	pcrs, err := tp.PCRs(unsealPCRs)
	if err != nil {
		t.Fatalf("PCRs: %v", err)
	}
	return pcrs
}

// transientAndSessions counts the TPM's transient objects and loaded sessions.
func transientAndSessions(t *testing.T, tp *tpm.TPM) int {
	t.Helper()
	n := 0
	for _, first := range []uint32{0x80000000, 0x02000000} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      first,
			PropertyCount: 64,
		}.Execute(tp.Transport())
		if err != nil {
			t.Fatalf("list handles: %v", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatalf("list handles: %v", err)
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 == first>>24 {
				n++
			}
		}
	}
	return n
}

// unsealChecked runs Unseal and checks that it left no object or session
// loaded, whatever its outcome.
func unsealChecked(t *testing.T, tp *tpm.TPM, ek tpm.EK, blob *tpm.SealedBlob) ([]byte, error) {
	t.Helper()
	before := transientAndSessions(t, tp)
	got, err := tp.Unseal(ek, blob)
	if after := transientAndSessions(t, tp); after != before {
		t.Errorf("Unseal left %d transient objects and sessions, %d before (err %v)", after, before, err)
	}
	return got, err
}

func TestUnseal(t *testing.T) {
	tp := tpmtest.Simulator(t, tpmtest.NewCA(t))
	ek := unsealEK(t, tp)
	if ek.Type != "ecc-p256" {
		t.Fatalf("simulator EK is %s, want the certified ecc-p256", ek.Type)
	}
	// Give the PCRs non-trivial values first.
	for i := range 8 {
		d := sha256.Sum256([]byte{byte(i)})
		if err := tp.Extend(i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	pcrs := readUnsealPCRs(t, tp)
	secret := []byte("boot volume key: 0123456789abcdef")
	blob := sealTo(t, ek, pcrs, secret)

	t.Run("RoundTrip", func(t *testing.T) {
		got, err := unsealChecked(t, tp, ek, blob)
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("Unseal = %q, want %q", got, secret)
		}
		// Without a boundary extension the blob unseals again.
		if got, err := unsealChecked(t, tp, ek, blob); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("second Unseal = %q, %v", got, err)
		}
	})

	t.Run("MaxSize", func(t *testing.T) {
		big := bytes.Repeat([]byte{0xa5}, seal.MaxSecretSize)
		got, err := unsealChecked(t, tp, ek, sealTo(t, ek, pcrs, big))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("Unseal of %d bytes = %d bytes, %v", len(big), len(got), err)
		}
	})

	t.Run("OtherPCRValues", func(t *testing.T) {
		other := make(map[int][]byte, len(pcrs))
		for i, v := range pcrs {
			other[i] = v
		}
		d := sha256.Sum256([]byte("another boot"))
		other[7] = d[:]
		got, err := unsealChecked(t, tp, ek, sealTo(t, ek, other, secret))
		if err == nil {
			t.Fatalf("Unseal of a blob sealed to other PCR values = %q, want error", got)
		}
		if !errors.Is(err, tpm2.TPMRCPolicyFail) {
			t.Errorf("Unseal: %v, want TPM_RC_POLICY_FAIL", err)
		}
		t.Logf("sealed to other PCR values: %v", err)
	})

	t.Run("Tampered", func(t *testing.T) {
		for name, tamper := range map[string]func(b *tpm.SealedBlob){
			"duplicate": func(b *tpm.SealedBlob) { b.Duplicate[len(b.Duplicate)-1] ^= 1 },
			"public":    func(b *tpm.SealedBlob) { b.Public[len(b.Public)-1] ^= 1 },
			// Selecting fewer PCRs than sealed to fails the policy.
			"pcrs": func(b *tpm.SealedBlob) { b.PCRs = b.PCRs[:len(b.PCRs)-1] },
		} {
			b := sealTo(t, ek, pcrs, secret)
			tamper(b)
			if got, err := unsealChecked(t, tp, ek, b); err == nil {
				t.Errorf("Unseal with tampered %s = %q, want error", name, got)
			} else {
				t.Logf("tampered %s: %v", name, err)
			}
		}
		for name, b := range map[string]*tpm.SealedBlob{
			"nil":       nil,
			"empty":     {},
			"no PCRs":   {Public: blob.Public, Duplicate: blob.Duplicate, EncryptedSeed: blob.EncryptedSeed},
			"PCR 24":    {Public: blob.Public, Duplicate: blob.Duplicate, EncryptedSeed: blob.EncryptedSeed, PCRs: []int{24}},
			"no seed":   {Public: blob.Public, Duplicate: blob.Duplicate, PCRs: blob.PCRs},
			"EK public": {Public: ek.Public, Duplicate: blob.Duplicate, EncryptedSeed: blob.EncryptedSeed, PCRs: blob.PCRs},
		} {
			before := tp.Commands()
			if got, err := tp.Unseal(ek, b); err == nil {
				t.Errorf("Unseal(%s blob) = %q, want error", name, got)
			}
			if n := tp.Commands() - before; n != 0 {
				t.Errorf("Unseal(%s blob) sent %d commands before refusing it", name, n)
			}
		}
	})

	// Last: it changes the PCRs for good.
	t.Run("BoundaryExtension", func(t *testing.T) {
		if got, err := unsealChecked(t, tp, ek, blob); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Unseal before the extension = %q, %v", got, err)
		}
		d := sha256.Sum256([]byte("bootgate: secrets released"))
		if err := tp.Extend(15, d[:]); err != nil {
			t.Fatal(err)
		}
		got, err := unsealChecked(t, tp, ek, blob)
		if err == nil {
			t.Fatalf("Unseal after extending PCR 15 = %q, want error", got)
		}
		if !errors.Is(err, tpm2.TPMRCPolicyFail) {
			t.Errorf("Unseal after extending PCR 15: %v, want TPM_RC_POLICY_FAIL", err)
		}
		t.Logf("after boundary extension: %v", err)
	})
}

// TestUnsealOtherTPM seals to one simulator's EK and tries the blob on a
// second simulator, opened after the first is closed (one at a time).
func TestUnsealOtherTPM(t *testing.T) {
	ca := tpmtest.NewCA(t)
	secret := []byte("secret")
	var blob *tpm.SealedBlob
	var firstEK []byte
	t.Run("first", func(t *testing.T) {
		tp := tpmtest.Simulator(t, ca)
		ek := unsealEK(t, tp)
		blob = sealTo(t, ek, readUnsealPCRs(t, tp), secret)
		firstEK = ek.Public
		// It does unseal here.
		if got, err := tp.Unseal(ek, blob); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Unseal on the first TPM = %q, %v", got, err)
		}
	}) // the subtest's cleanups close the EK and the simulator
	if blob == nil {
		t.Fatal("no blob from the first simulator")
	}

	tp := tpmtest.Simulator(t, ca)
	ek := unsealEK(t, tp)
	if bytes.Equal(ek.Public, firstEK) {
		t.Fatal("the two simulators have the same EK")
	}
	got, err := unsealChecked(t, tp, ek, blob)
	if err == nil {
		t.Fatalf("Unseal of another TPM's blob = %q, want error", got)
	}
	if !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Errorf("Unseal of another TPM's blob: %v, want TPM_RC_INTEGRITY", err)
	}
	t.Logf("other TPM: %v", err)
	// The same PCR values (both fresh) do not help, and the TPM stays
	// usable: a blob for its own EK unseals.
	if got, err := unsealChecked(t, tp, ek, sealTo(t, ek, readUnsealPCRs(t, tp), secret)); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal of this TPM's blob = %q, %v", got, err)
	}
}

// TestUnsealRSAEK seals to the certificate-less RSA 2048 EK of an
// unmanufactured simulator.
func TestUnsealRSAEK(t *testing.T) {
	tp := tpmtest.Simulator(t, nil)
	ek := unsealEK(t, tp)
	if ek.Type != "rsa2048" {
		t.Fatalf("EK is %s, want rsa2048", ek.Type)
	}
	secret := []byte("rsa secret")
	got, err := unsealChecked(t, tp, ek, sealTo(t, ek, readUnsealPCRs(t, tp), secret))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}

// TestSealedBlobJSON checks that verifier/seal.Blob and agent/tpm.SealedBlob
// are the same message: same fields, types and JSON names, and a blob
// round-trips from one to the other and back.
func TestSealedBlobJSON(t *testing.T) {
	v, a := reflect.TypeFor[seal.Blob](), reflect.TypeFor[tpm.SealedBlob]()
	if v.NumField() != a.NumField() {
		t.Fatalf("seal.Blob has %d fields, tpm.SealedBlob %d", v.NumField(), a.NumField())
	}
	for i := range v.NumField() {
		fv, fa := v.Field(i), a.Field(i)
		if fv.Name != fa.Name || fv.Type != fa.Type || fv.Tag.Get("json") != fa.Tag.Get("json") {
			t.Errorf("field %d: seal.Blob %s %v %q, tpm.SealedBlob %s %v %q", i, fv.Name, fv.Type, fv.Tag.Get("json"), fa.Name, fa.Type, fa.Tag.Get("json"))
		}
	}

	in := seal.Blob{Public: []byte{1, 2}, Duplicate: []byte{3}, EncryptedSeed: []byte{4, 5, 6}, PCRs: []int{0, 7}}
	j, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var mid tpm.SealedBlob
	if err := json.Unmarshal(j, &mid); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mid.Public, in.Public) || !bytes.Equal(mid.Duplicate, in.Duplicate) || !bytes.Equal(mid.EncryptedSeed, in.EncryptedSeed) || !reflect.DeepEqual(mid.PCRs, in.PCRs) {
		t.Errorf("seal.Blob %+v became tpm.SealedBlob %+v", in, mid)
	}
	j2, err := json.Marshal(mid)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(j, j2) {
		t.Errorf("JSON differs: %s, then %s", j, j2)
	}
}

// highRangeEKTemplate is the TCG high-range EK template H-2 (ECC P-256) or
// H-3 (ECC P-384): authPolicy is policy B, so Unseal must take its PolicyOR
// branch to authorise the EK as import parent.
func highRangeEKTemplate(t *testing.T, curve tpm2.TPMECCCurve) tpm2.TPMTPublic {
	t.Helper()
	nameAlg, aesBits, policy := tpm2.TPMAlgSHA256, tpm2.TPMKeyBits(128), "ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0"
	if curve == tpm2.TPMECCNistP384 {
		nameAlg, aesBits, policy = tpm2.TPMAlgSHA384, 256, "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12"
	}
	digest, err := hex.DecodeString(policy)
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: nameAlg,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, AdminWithPolicy: true, Restricted: true, Decrypt: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: digest},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, aesBits),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			CurveID: curve,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// TestUnsealHighRangeEK seals to high-range (policy B) EKs.
func TestUnsealHighRangeEK(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, nil) // no L-2 EK: the high-range one is the first
	for _, c := range []struct {
		typ   string
		curve tpm2.TPMECCCurve
		index tpm2.TPMHandle
	}{
		{"ecc-p256", tpm2.TPMECCNistP256, 0x01c00014},
		{"ecc-p384", tpm2.TPMECCNistP384, 0x01c00016},
	} {
		t.Run(c.typ, func(t *testing.T) {
			tpmtest.AddEK(t, tp, ca, highRangeEKTemplate(t, c.curve), c.index, 0)
			eks, err := tp.EKs()
			if err != nil {
				t.Fatalf("EKs: %v", err)
			}
			var ek tpm.EK
			for _, e := range eks {
				// High-range templates, unlike low-range ones, set
				// userWithAuth.
				if p, err := tpm2.Unmarshal[tpm2.TPMTPublic](e.Public); err == nil && e.Type == c.typ && p.ObjectAttributes.UserWithAuth && ek.Public == nil {
					ek = e
					continue
				}
				if err := tp.CloseEK(e); err != nil {
					t.Fatal(err)
				}
			}
			if ek.Public == nil {
				t.Fatalf("no high-range %s EK among %d", c.typ, len(eks))
			}
			t.Cleanup(func() {
				if err := tp.CloseEK(ek); err != nil {
					t.Errorf("CloseEK: %v", err)
				}
			})
			secret := []byte("high range " + c.typ)
			got, err := unsealChecked(t, tp, ek, sealTo(t, ek, readUnsealPCRs(t, tp), secret))
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Unseal = %q, %v", got, err)
			}
		})
	}
}

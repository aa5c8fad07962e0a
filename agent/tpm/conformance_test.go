package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
)

// devicePath is the real TPM the device backend uses: the kernel's
// resource-managed device, as the agent does.
const devicePath = "/dev/tpmrm0"

// TestConformance runs the one conformance suite, in the manner of go-tpm's
// transport test helper (tpm2/transport/test.RunTest), against every backend
// the agent may meet: the go-tpm-tools simulator manufactured with an EK
// certificate, a real swtpm manufactured by swtpm_setup, and the machine's own
// TPM. Backend-specific checks live next to their backend, in package tpm.
func TestConformance(t *testing.T) {
	t.Run("simulator", func(t *testing.T) {
		ca := tpmtest.NewCA(t)
		runConformance(t, func(t *testing.T) *tpm.TPM {
			return tpmtest.Simulator(t, ca)
		})
	})

	t.Run("swtpm", func(t *testing.T) {
		sock := tpm.StartSwtpmForTest(t)
		runConformance(t, func(t *testing.T) *tpm.TPM {
			tp, err := tpm.OpenSocket(sock)
			if err != nil {
				t.Fatal(err)
			}
			closeOnCleanup(t, tp)
			return tp
		})
	})

	t.Run("device", func(t *testing.T) {
		probe, err := tpm.OpenDevice(devicePath)
		if err != nil {
			hint := ""
			if errors.Is(err, os.ErrPermission) {
				hint = " (run as root or a member of the device's group, usually tss)"
			}
			t.Skipf("skipping the real-TPM backend: %v%s", err, hint)
		}
		if err := probe.Close(); err != nil {
			t.Fatal(err)
		}
		runConformance(t, func(t *testing.T) *tpm.TPM {
			tp, err := tpm.OpenDevice(devicePath)
			if err != nil {
				t.Fatal(err)
			}
			closeOnCleanup(t, tp)
			return tp
		},
			// Many firmware TPMs keep no EK certificate in NV (the
			// manufacturer serves it online instead).
			ekCertOptional,
			pcrsReadOnly("skipped on "+devicePath+": PCR extends on a real machine's TPM are not reversible (its PCRs only reset at reboot) and would falsify its measured boot"),
		)
	})
}

// conformance says what a backend is expected to offer beyond the common
// ground; the zero value is a manufactured TPM whose PCRs the suite may extend.
type conformance struct {
	ekCertOptional bool   // the backend may have no EK certificate at all
	noExtend       string // if set, the reason the suite must not extend PCRs
}

// A conformanceOption relaxes the suite for one backend.
type conformanceOption func(*conformance)

// ekCertOptional accepts a TPM without any EK certificate in NV (EKs then
// falls back to the certificate-less RSA EK).
func ekCertOptional(c *conformance) { c.ekCertOptional = true }

// pcrsReadOnly skips every check that would extend a PCR, saying why.
func pcrsReadOnly(reason string) conformanceOption {
	return func(c *conformance) { c.noExtend = reason }
}

// runConformance runs the backend-independent checks of package tpm, using
// only its exported API, against the TPMs that open returns. open is called
// once per subtest, never while a TPM it returned is still open (the
// simulator is a process-wide singleton), and must close the TPM on
// t.Cleanup. Every subtest also checks that it left no transient object or
// session behind and persisted nothing: the package promises that Close and
// CloseEK flush all it loads.
//
// Only transient objects and sessions are created: on a real TPM the suite
// changes no lasting state, except by the Extend check, which pcrsReadOnly
// turns off.
func runConformance(t *testing.T, open func(t *testing.T) *tpm.TPM, opts ...conformanceOption) {
	var cfg conformance
	for _, o := range opts {
		o(&cfg)
	}
	open = checkNoLeaks(open)
	algs := []tpm.AKAlg{tpm.AKECCP256, tpm.AKRSA2048}

	t.Run("EKs", func(t *testing.T) {
		tp := open(t)
		eks := tpm.EKsForTest(t, tp)
		if len(eks) == 0 {
			t.Fatal("EKs returned no EK")
		}
		certified := 0
		for i, ek := range eks {
			pub := tpm.UnmarshalPublicForTest(t, ek.Public)
			if a := pub.ObjectAttributes; !a.FixedTPM || !a.FixedParent || !a.Restricted || !a.Decrypt || a.SignEncrypt {
				t.Errorf("EK %d (%s): attributes %+v are not an endorsement key's", i, ek.Type, a)
			}
			key := tpm.CryptoPublicForTest(t, ek.Public)
			if typ := keyType(key); typ != ek.Type {
				t.Errorf("EK %d: Type %q, but its public area holds an %s key", i, ek.Type, typ)
			}
			if ek.Cert == nil {
				t.Logf("EK %d: %s at %#x, no certificate", i, ek.Type, uint32(ek.Handle))
				continue
			}
			certified++
			certKey, issuer, err := ekCertKey(ek.Cert)
			if err != nil {
				t.Errorf("EK %d (%s): certificate: %v", i, ek.Type, err)
				continue
			}
			if k, ok := certKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key) {
				t.Errorf("EK %d (%s): the certificate certifies another key", i, ek.Type)
			}
			t.Logf("EK %d: %s at %#x, nameAlg %v, certificate of %d bytes from %q", i, ek.Type, uint32(ek.Handle), pub.NameAlg, len(ek.Cert), issuer)
		}
		switch {
		case certified == 0 && !cfg.ekCertOptional:
			t.Errorf("no EK has a certificate, but this backend was manufactured with EK certificates")
		case certified == 0 && (len(eks) != 1 || eks[0].Type != "rsa2048"):
			t.Errorf("without EK certificates EKs returned %d EKs, want the default RSA 2048 EK alone", len(eks))
		case certified != 0 && certified != len(eks):
			t.Errorf("%d of %d EKs have no certificate: the certificate-less fallback must come alone", len(eks)-certified, len(eks))
		}
	})

	t.Run("NewAK", func(t *testing.T) {
		for _, alg := range algs {
			t.Run(alg.String(), func(t *testing.T) {
				tp := open(t)
				ak := tpm.NewAKForTest(t, tp, alg)
				p := ak.Params()
				ap := attest.ActivationParameters{AK: tpm.AttestParamsForTest(p)}
				if err := ap.CheckAKParameters(); err != nil {
					t.Fatalf("go-attestation CheckAKParameters: %v", err)
				}
				pub := tpm.UnmarshalPublicForTest(t, p.Public)
				a := pub.ObjectAttributes
				if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || !a.Restricted || !a.SignEncrypt || a.Decrypt || a.NoDA || a.AdminWithPolicy {
					t.Errorf("AK attributes = %+v", a)
				}
				if pub.NameAlg != tpm2.TPMAlgSHA256 || len(pub.AuthPolicy.Buffer) != 0 {
					t.Errorf("AK nameAlg %v, authPolicy %x", pub.NameAlg, pub.AuthPolicy.Buffer)
				}
				if typ := keyType(tpm.CryptoPublicForTest(t, p.Public)); typ != alg.String() {
					t.Errorf("AK is %s, want %s", typ, alg)
				}
				if _, err := attest.ParseAKPublic(p.Public); err != nil {
					t.Errorf("go-attestation ParseAKPublic: %v", err)
				}

				// Tampering with what the AK certified must be caught.
				for field, b := range map[string]*[]byte{"creation data": &ap.AK.CreateData, "creation attestation": &ap.AK.CreateAttestation} {
					orig := *b
					*b = bytes.Clone(orig)
					(*b)[len(*b)-1] ^= 1
					if err := ap.CheckAKParameters(); err == nil {
						t.Errorf("CheckAKParameters accepted tampered %s", field)
					}
					*b = orig
				}

				// Each AK is new.
				if again := tpm.NewAKForTest(t, tp, alg); bytes.Equal(again.Params().Public, p.Public) {
					t.Error("two AKs have the same public area")
				}
			})
		}
	})

	t.Run("ActivateCredential", func(t *testing.T) {
		tp := open(t)
		eks := tpm.EKsForTest(t, tp)
		for _, alg := range algs {
			t.Run(alg.String()+"-AK", func(t *testing.T) {
				ak := tpm.NewAKForTest(t, tp, alg)
				for i, ek := range eks {
					t.Run(fmt.Sprintf("EK%d-%s", i, ek.Type), func(t *testing.T) {
						tpm.CheckActivationForTest(t, ak, ek)
					})
				}
			})
		}
	})

	t.Run("ActivateCredentialOtherAK", func(t *testing.T) {
		tp := open(t)
		eks := tpm.EKsForTest(t, tp)
		ak := tpm.NewAKForTest(t, tp, tpm.AKECCP256)
		// Only the other AK's name matters: close it at once, which also
		// spares the simulator's few object slots.
		other, err := tp.NewAK(tpm.AKECCP256)
		if err != nil {
			t.Fatal(err)
		}
		otherParams := other.Params()
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		for _, ek := range eks {
			cred, secret := tpm.MakeCredentialForTest(t, ek.Public, otherParams, []byte("for the other AK"))
			if got, err := ak.ActivateCredential(ek, cred, secret); err == nil {
				t.Errorf("ActivateCredential(%s EK) of another AK's credential = %q, want an error", ek.Type, got)
			}
			// The failure leaked no session: the TPM still activates.
			tpm.CheckActivationForTest(t, ak, ek)
		}
	})

	t.Run("Quote", func(t *testing.T) {
		for _, alg := range algs {
			t.Run(alg.String(), func(t *testing.T) {
				tp := open(t)
				ak := tpm.NewAKForTest(t, tp, alg)
				pub, err := attest.ParseAKPublic(ak.Params().Public)
				if err != nil {
					t.Fatalf("go-attestation ParseAKPublic: %v", err)
				}
				nonce := make([]byte, 32)
				if _, err := rand.Read(nonce); err != nil {
					t.Fatal(err)
				}
				for _, sel := range [][]int{allPCRs(), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}, {7}} {
					q, pcrs := quote(t, tp, ak, nonce, sel)
					if err := pub.Verify(q, pcrs, nonce); err != nil {
						t.Fatalf("go-attestation Verify of a quote of PCRs %v: %v", sel, err)
					}
					wrong := bytes.Clone(nonce)
					wrong[0] ^= 1
					if err := pub.Verify(q, pcrs, wrong); err == nil {
						t.Errorf("Verify of a quote of PCRs %v accepted a wrong nonce", sel)
					}
					pcrs[0].Digest = bytes.Clone(pcrs[0].Digest)
					pcrs[0].Digest[0] ^= 1
					if err := pub.Verify(q, pcrs, nonce); err == nil {
						t.Errorf("Verify of a quote of PCRs %v accepted a wrong value of PCR %d", sel, pcrs[0].Index)
					}
				}
				before := tp.Commands()
				for _, bad := range [][]int{nil, {24}, {-1}, {0, 24}} {
					if _, _, err := ak.Quote(nonce, bad); err == nil {
						t.Errorf("Quote(%v) succeeded", bad)
					}
				}
				if n := tp.Commands() - before; n != 0 {
					t.Errorf("invalid PCR selections sent %d commands", n)
				}
			})
		}
	})

	t.Run("PCRs", func(t *testing.T) {
		tp := open(t)
		got, err := tp.PCRs(append(allPCRs(), 3, 0, 3)) // duplicates are harmless
		if err != nil {
			t.Fatalf("PCRs(0-23): %v", err)
		}
		if len(got) != 24 {
			t.Fatalf("PCRs(0-23) returned %d values", len(got))
		}
		for i := range 24 {
			if len(got[i]) != sha256.Size {
				t.Errorf("PCR %d: %d bytes, want a SHA-256 digest", i, len(got[i]))
			}
		}
		// PCR 0 (firmware) does not change after boot: a lone read agrees.
		one, err := tp.PCRs([]int{0})
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != 1 || !bytes.Equal(one[0], got[0]) {
			t.Errorf("PCRs([0]) = %x, PCRs(0-23)[0] = %x", one, got[0])
		}
		for _, bad := range [][]int{nil, {24}, {-1}, {0, 24}} {
			if _, err := tp.PCRs(bad); err == nil {
				t.Errorf("PCRs(%v) succeeded", bad)
			}
		}
	})

	t.Run("Extend", func(t *testing.T) {
		if cfg.noExtend != "" {
			t.Skip(cfg.noExtend)
		}
		tp := open(t)
		const pcr = 16 // the debug PCR
		before, err := tp.PCRs(allPCRs())
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256([]byte("bootgate conformance"))
		if err := tp.Extend(pcr, d[:]); err != nil {
			t.Fatalf("Extend(%d): %v", pcr, err)
		}
		after, err := tp.PCRs(allPCRs())
		if err != nil {
			t.Fatal(err)
		}
		for i := range 24 {
			want := before[i]
			if i == pcr {
				h := sha256.Sum256(append(bytes.Clone(before[i]), d[:]...))
				want = h[:]
			}
			if !bytes.Equal(after[i], want) {
				t.Errorf("after Extend(%d): PCR %d = %x, want %x", pcr, i, after[i], want)
			}
		}

		n := tp.Commands()
		if err := tp.Extend(pcr, d[:20]); err == nil {
			t.Error("Extend with a 20-byte digest succeeded")
		}
		if err := tp.Extend(24, d[:]); err == nil {
			t.Error("Extend of PCR 24 succeeded")
		}
		if err := tp.Extend(-1, d[:]); err == nil {
			t.Error("Extend of PCR -1 succeeded")
		}
		if sent := tp.Commands() - n; sent != 0 {
			t.Errorf("invalid extends sent %d commands", sent)
		}
	})

	t.Run("Commands", func(t *testing.T) {
		tp := open(t)
		n := tp.Commands()
		// step checks that Commands rose since the last step: by exactly
		// exact commands, or by any number if exact is 0.
		step := func(what string, exact int) {
			t.Helper()
			got := tp.Commands()
			switch {
			case exact > 0 && got-n != exact:
				t.Errorf("Commands() rose by %d after %s, want %d", got-n, what, exact)
			case got <= n:
				t.Errorf("Commands() = %d after %s, was %d", got, what, n)
			}
			n = got
		}
		if _, err := tp.PCRs([]int{0}); err != nil {
			t.Fatal(err)
		}
		step("reading one PCR", 1)
		if _, err := (tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}).Execute(tp.Transport()); err != nil {
			t.Fatal(err)
		}
		step("a command sent through Transport", 1)
		ak := tpm.NewAKForTest(t, tp, tpm.AKECCP256)
		step("NewAK", 0)
		if _, _, err := ak.Quote([]byte("nonce"), []int{0}); err != nil {
			t.Fatal(err)
		}
		step("Quote", 1)
		tpm.EKsForTest(t, tp)
		step("EKs", 0)
	})
}

// checkNoLeaks wraps open so that each TPM is checked, when its test ends
// and before it is closed, to hold no more transient objects, sessions or
// persistent objects than when it was opened.
func checkNoLeaks(open func(t *testing.T) *tpm.TPM) func(t *testing.T) *tpm.TPM {
	kinds := []struct {
		name  string
		first uint32
	}{
		{"transient objects", 0x80000000},
		{"loaded sessions", 0x02000000},
		{"saved sessions", 0x03000000},
		{"persistent objects", 0x81000000},
	}
	return func(t *testing.T) *tpm.TPM {
		t.Helper()
		tp := open(t)
		before := make([]int, len(kinds))
		for i, k := range kinds {
			before[i] = countHandles(t, tp, k.first)
		}
		// Cleanups run last-in first-out: this one after those of the AKs
		// and EKs the test makes, before the one closing the TPM.
		t.Cleanup(func() {
			for i, k := range kinds {
				if n := countHandles(t, tp, k.first); n > before[i] {
					t.Errorf("%s: %d in the TPM at the end of the test, %d when it was opened", k.name, n, before[i])
				}
			}
		})
		return tp
	}
}

// countHandles counts the handles in the range that starts at first.
func countHandles(t *testing.T, tp *tpm.TPM, first uint32) int {
	t.Helper()
	n := 0
	for next := first; ; {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}.Execute(tp.Transport())
		if err != nil {
			t.Fatalf("list handles from %#x: %v", first, err)
		}
		handles, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatalf("list handles from %#x: %v", first, err)
		}
		for _, h := range handles.Handle {
			if uint32(h)>>24 != first>>24 {
				return n
			}
			n++
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(handles.Handle) == 0 {
			return n
		}
	}
}

func closeOnCleanup(t *testing.T, tp *tpm.TPM) {
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("close TPM: %v", err)
		}
	})
}

func allPCRs() []int {
	all := make([]int, 24)
	for i := range all {
		all[i] = i
	}
	return all
}

// quote quotes sel and reads the PCRs it covers. A live machine extends some
// PCRs at any time (IMA, PCR 10): it retries until the PCRs read before and
// after the quote agree.
func quote(t *testing.T, tp *tpm.TPM, ak *tpm.AK, nonce []byte, sel []int) (attest.Quote, []attest.PCR) {
	t.Helper()
	for range 5 {
		before, err := tp.PCRs(sel)
		if err != nil {
			t.Fatalf("PCRs: %v", err)
		}
		q, sig, err := ak.Quote(nonce, sel)
		if err != nil {
			t.Fatalf("Quote(%v): %v", sel, err)
		}
		after, err := tp.PCRs(sel)
		if err != nil {
			t.Fatalf("PCRs: %v", err)
		}
		var pcrs []attest.PCR
		for _, i := range sel {
			if !bytes.Equal(before[i], after[i]) {
				pcrs = nil
				break
			}
			pcrs = append(pcrs, attest.PCR{Index: i, Digest: after[i], DigestAlg: crypto.SHA256})
		}
		if pcrs != nil {
			return attest.Quote{Quote: q, Signature: sig}, pcrs
		}
	}
	t.Fatalf("PCRs %v kept changing while quoted", sel)
	return attest.Quote{}, nil
}

// keyType names a public key as package tpm does: "ecc-p256", "rsa2048".
func keyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ecc-" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// ekCertKey returns the key and issuer of an EK certificate. Some
// manufacturers' certificates are not X.509 that Go accepts (negative serial
// numbers, for one): of those it reads the SubjectPublicKeyInfo alone.
func ekCertKey(der []byte) (crypto.PublicKey, string, error) {
	if c, err := attest.ParseEKCertificate(der); err == nil {
		return c.PublicKey, c.Issuer.String(), nil
	}
	var cert, tbs asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return nil, "", fmt.Errorf("parse certificate: %w", err)
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return nil, "", fmt.Errorf("parse TBSCertificate: %w", err)
	}
	var fields []asn1.RawValue
	for rest := tbs.Bytes; len(rest) > 0; {
		var f asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &f); err != nil {
			return nil, "", fmt.Errorf("parse TBSCertificate: %w", err)
		}
		fields = append(fields, f)
	}
	// Optional [0] version, then serialNumber, signature, issuer, validity,
	// subject, subjectPublicKeyInfo.
	if len(fields) > 0 && fields[0].Class == asn1.ClassContextSpecific && fields[0].Tag == 0 {
		fields = fields[1:]
	}
	if len(fields) < 6 {
		return nil, "", errors.New("parse TBSCertificate: too few fields")
	}
	key, err := x509.ParsePKIXPublicKey(fields[5].FullBytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse certificate public key: %w", err)
	}
	return key, "(unparsed issuer)", nil
}

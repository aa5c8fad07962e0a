package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/bootgate/bootgate/verifier/wire"
)

// openSim starts a fresh simulator. Only one simulator runs at a time: a
// second openSim blocks until the first is closed, which t.Cleanup does.
func openSim(t *testing.T) *TPM {
	t.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("open simulator: %v", err)
	}
	tp := New(sim)
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("close simulator: %v", err)
		}
	})
	return tp
}

// newAK creates an AK that the test closes.
func newAK(t *testing.T, tp *TPM, alg AKAlg) *AK {
	t.Helper()
	ak, err := tp.NewAK(alg)
	if err != nil {
		t.Fatalf("NewAK(%v): %v", alg, err)
	}
	t.Cleanup(func() {
		if err := ak.Close(); err != nil {
			t.Errorf("close AK: %v", err)
		}
	})
	return ak
}

// eks finds the EKs and closes them at the end of the test.
func eks(t *testing.T, tp *TPM) []EK {
	t.Helper()
	got, err := tp.EKs()
	if err != nil {
		t.Fatalf("EKs: %v", err)
	}
	t.Cleanup(func() {
		for _, ek := range got {
			if err := tp.CloseEK(ek); err != nil {
				t.Errorf("CloseEK: %v", err)
			}
		}
	})
	return got
}

func unmarshalPublic(t *testing.T, b []byte) *tpm2.TPMTPublic {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		t.Fatalf("unmarshal TPMT_PUBLIC: %v", err)
	}
	return pub
}

func cryptoPublic(t *testing.T, b []byte) crypto.PublicKey {
	t.Helper()
	k, err := tpm2.Pub(*unmarshalPublic(t, b))
	if err != nil {
		t.Fatalf("decode public key: %v", err)
	}
	return k
}

func attestParams(p wire.AKParams) attest.AttestationParameters {
	return attest.AttestationParameters{
		Public:            p.Public,
		CreateData:        p.CreateData,
		CreateAttestation: p.CreateAttestation,
		CreateSignature:   p.CreateSignature,
	}
}

// makeCredential plays the verifier: a credential for the AK named by params,
// encrypted to ekPublic, exactly as tpm2.CreateCredential returns it.
func makeCredential(t *testing.T, ekPublic []byte, params wire.AKParams, secret []byte) (credential, encSecret []byte) {
	t.Helper()
	key, err := tpm2.ImportEncapsulationKey(unmarshalPublic(t, ekPublic))
	if err != nil {
		t.Fatalf("ImportEncapsulationKey: %v", err)
	}
	name, err := tpm2.ObjectName(unmarshalPublic(t, params.Public))
	if err != nil {
		t.Fatalf("ObjectName: %v", err)
	}
	credential, encSecret, err = tpm2.CreateCredential(rand.Reader, key, name.Buffer, secret)
	if err != nil {
		t.Fatalf("CreateCredential: %v", err)
	}
	return credential, encSecret
}

func prefix2B(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// checkActivation runs the verifier/agent credential round trip for ek with
// both encodings of the challenge, and with go-attestation's generator.
func checkActivation(t *testing.T, ak *AK, ek EK) {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	cred, encSecret := makeCredential(t, ek.Public, ak.Params(), secret)
	got, err := ak.ActivateCredential(ek, cred, encSecret)
	if err != nil {
		t.Fatalf("ActivateCredential(%s EK): %v", ek.Type, err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential(%s EK) = %x, want %x", ek.Type, got, secret)
	}

	cred, encSecret = makeCredential(t, ek.Public, ak.Params(), secret)
	got, err = ak.ActivateCredential(ek, prefix2B(cred), prefix2B(encSecret))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential(%s EK) with TPM2B prefixes = %x, %v; want %x", ek.Type, got, err, secret)
	}

	if ek.pub.NameAlg != tpm2.TPMAlgSHA256 {
		return // go-attestation generates only for SHA-256 / AES-128 EKs
	}
	ap := attest.ActivationParameters{EK: cryptoPublic(t, ek.Public), AK: attestParams(ak.Params())}
	secret, ec, err := ap.Generate()
	if err != nil {
		t.Fatalf("go-attestation Generate: %v", err)
	}
	got, err = ak.ActivateCredential(ek, ec.Credential, ec.Secret)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential(%s EK) of go-attestation challenge = %x, %v; want %x", ek.Type, got, err, secret)
	}
}

// TestAKTemplate checks the AK templates themselves; conformance_test.go
// checks the AKs that TPMs create from them.
func TestAKTemplate(t *testing.T) {
	unique := bytes.Repeat([]byte{0xaa}, uniqueSize)
	for alg, want := range map[AKAlg]tpm2.TPMAlgID{AKECCP256: tpm2.TPMAlgECC, AKRSA2048: tpm2.TPMAlgRSA} {
		tmpl, err := akTemplate(alg, unique)
		if err != nil {
			t.Fatalf("akTemplate(%v): %v", alg, err)
		}
		a := tmpl.ObjectAttributes
		if tmpl.Type != want || tmpl.NameAlg != tpm2.TPMAlgSHA256 || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin ||
			!a.UserWithAuth || !a.Restricted || !a.SignEncrypt || a.Decrypt || a.NoDA || a.AdminWithPolicy || len(tmpl.AuthPolicy.Buffer) != 0 {
			t.Errorf("akTemplate(%v) = type %v, nameAlg %v, attributes %+v, authPolicy %x", alg, tmpl.Type, tmpl.NameAlg, a, tmpl.AuthPolicy.Buffer)
		}
	}
	if _, err := akTemplate(AKAlg(7), unique); err == nil {
		t.Error("akTemplate(7) succeeded")
	}
	// An unknown algorithm is refused before any command is sent: this TPM
	// has no transport at all.
	var tp TPM
	if _, err := tp.NewAK(AKAlg(7)); err == nil {
		t.Error("NewAK(7) succeeded")
	}
	if got := AKAlg(7).String(); got != "AKAlg(7)" {
		t.Errorf("AKAlg(7).String() = %q", got)
	}
}

func TestEKsWithoutCertificate(t *testing.T) {
	tp := openSim(t)
	got := eks(t, tp)
	if len(got) != 1 {
		t.Fatalf("EKs returned %d keys, want the default RSA EK only", len(got))
	}
	ek := got[0]
	if ek.Cert != nil || ek.Type != "rsa2048" || !ek.transient || ek.Handle>>24 != 0x80 {
		t.Fatalf("EK = cert %d bytes, type %q, transient %v, handle %#x", len(ek.Cert), ek.Type, ek.transient, uint32(ek.Handle))
	}
	pub := unmarshalPublic(t, ek.Public)
	if !bytes.Equal(pub.AuthPolicy.Buffer, tpm2.RSAEKTemplate.AuthPolicy.Buffer) {
		t.Errorf("EK authPolicy %x", pub.AuthPolicy.Buffer)
	}
	for _, alg := range []AKAlg{AKECCP256, AKRSA2048} {
		t.Run(alg.String(), func(t *testing.T) {
			checkActivation(t, newAK(t, tp, alg), ek)
		})
	}
}

// createEK creates the EK of template in tp and returns its handle, name and
// public area; the caller flushes or persists it.
func createEK(t *testing.T, tp *TPM, template tpm2.TPMTPublic) loadedKey {
	t.Helper()
	k, err := tp.createPrimaryEK(template)
	if err != nil {
		t.Fatalf("create EK: %v", err)
	}
	return k
}

func flush(t *testing.T, tp *TPM, h tpm2.TPMHandle) {
	t.Helper()
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tp.Transport()); err != nil {
		t.Fatalf("flush %#x: %v", uint32(h), err)
	}
}

// testCA is a throwaway certificate authority for EK certificates.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bootgate test EK CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert}
}

// issue certifies pub; filler bytes in an extension make the certificate big.
func (ca *testCA) issue(t *testing.T, pub crypto.PublicKey, filler int) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment,
	}
	if filler > 0 {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: []int{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, filler)}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writeNV defines NV index idx of the given size and writes data at its start,
// as a manufacturer provisions an EK certificate. ownerReadOnly leaves
// TPMA_NV_AUTHREAD clear.
func writeNV(t *testing.T, tp *TPM, idx tpm2.TPMHandle, size int, data []byte, ownerReadOnly bool) {
	t.Helper()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	pub := tpm2.TPMSNVPublic{
		NVIndex: idx,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			OwnerWrite: true,
			OwnerRead:  true,
			AuthRead:   !ownerReadOnly,
			NoDA:       true,
			NT:         tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(size),
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(pub)}).Execute(tp.Transport()); err != nil {
		t.Fatalf("define NV index %#x: %v", uint32(idx), err)
	}
	chunk, err := tp.nvBufferMax()
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += chunk {
		// The name changes once the index is written: read it each time.
		rp, err := (tpm2.NVReadPublic{NVIndex: idx}).Execute(tp.Transport())
		if err != nil {
			t.Fatal(err)
		}
		end := min(off+chunk, len(data))
		if _, err := (tpm2.NVWrite{
			AuthHandle: owner,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: rp.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data[off:end]},
			Offset:     uint16(off),
		}).Execute(tp.Transport()); err != nil {
			t.Fatalf("write NV index %#x at %d: %v", uint32(idx), off, err)
		}
	}
}

func TestEKsWithCertificates(t *testing.T) {
	tp := openSim(t)
	ca := newTestCA(t)
	slots, err := ekSlots()
	if err != nil {
		t.Fatal(err)
	}
	template := func(idx tpm2.TPMHandle) tpm2.TPMTPublic {
		for _, s := range slots {
			if s.index == idx {
				return s.template
			}
		}
		t.Fatalf("no slot %#x", uint32(idx))
		return tpm2.TPMTPublic{}
	}
	chunk, err := tp.nvBufferMax()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TPM_PT_NV_BUFFER_MAX = %d", chunk)

	// Low-range RSA EK, persisted at 0x81010001 and certified in an index
	// only the owner can read; written first but reported second.
	rsaEK := createEK(t, tp, tpm2.RSAEKTemplate)
	const rsaPersistent = tpm2.TPMHandle(0x81010001)
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: rsaEK.handle, Name: rsaEK.name},
		PersistentHandle: rsaPersistent,
	}).Execute(tp.Transport()); err != nil {
		t.Fatalf("persist RSA EK: %v", err)
	}
	flush(t, tp, rsaEK.handle)
	rsaCert := ca.issue(t, rsaEK.key, 0)
	writeNV(t, tp, 0x01c00002, len(rsaCert), rsaCert, true)

	// Low-range ECC EK, not persisted, with a certificate bigger than one NV
	// read, padded with zeros.
	eccEK := createEK(t, tp, tpm2.ECCEKTemplate)
	flush(t, tp, eccEK.handle)
	eccCert := ca.issue(t, eccEK.key, chunk+100)
	writeNV(t, tp, 0x01c0000a, len(eccCert)+64, append(eccCert, make([]byte, 64)...), false)

	// High-range ECC P-256 EK (policy B), created on demand.
	h2 := createEK(t, tp, template(0x01c00014))
	flush(t, tp, h2.handle)
	h2Cert := ca.issue(t, h2.key, 0)
	writeNV(t, tp, 0x01c00014, len(h2Cert), h2Cert, false)

	// A certificate for a key this TPM does not have is skipped, and so is
	// garbage in an index.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherCert := ca.issue(t, other.Public(), 0)
	writeNV(t, tp, 0x01c00016, len(otherCert), otherCert, false)
	writeNV(t, tp, 0x01c00018, 32, bytes.Repeat([]byte{0xff}, 32), false)

	before := tp.Commands()
	got, err := tp.EKs()
	if err != nil {
		t.Fatalf("EKs: %v", err)
	}
	t.Logf("EKs sent %d commands", tp.Commands()-before)
	closed := make([]bool, len(got))
	t.Cleanup(func() {
		for i, ek := range got {
			if !closed[i] {
				if err := tp.CloseEK(ek); err != nil {
					t.Errorf("CloseEK: %v", err)
				}
			}
		}
	})
	if len(got) != 3 {
		t.Fatalf("EKs returned %d keys, want 3", len(got))
	}
	want := []struct {
		typ       string
		cert      []byte
		public    []byte
		transient bool
	}{
		{"ecc-p256", eccCert, eccEK.public, true},
		{"rsa2048", rsaCert, rsaEK.public, false},
		{"ecc-p256", h2Cert, h2.public, true},
	}
	for i, w := range want {
		ek := got[i]
		if ek.Type != w.typ || ek.transient != w.transient {
			t.Errorf("EK %d: type %q transient %v, want %q %v", i, ek.Type, ek.transient, w.typ, w.transient)
		}
		if !bytes.Equal(ek.Cert, w.cert) {
			t.Errorf("EK %d: certificate of %d bytes differs from the %d bytes written", i, len(ek.Cert), len(w.cert))
		}
		if !bytes.Equal(ek.Public, w.public) {
			t.Errorf("EK %d: public area differs", i)
		}
		if _, err := x509.ParseCertificate(ek.Cert); err != nil {
			t.Errorf("EK %d: certificate does not parse: %v", i, err)
		}
	}
	if got[1].Handle != rsaPersistent {
		t.Errorf("RSA EK handle %#x, want persistent %#x", uint32(got[1].Handle), uint32(rsaPersistent))
	}

	// The simulator has three object slots, and a persistent key takes one
	// while it is used: close each EK once done with it.
	ak := newAK(t, tp, AKECCP256)
	for i, ek := range got {
		t.Run(fmt.Sprintf("%d-%s", i, ek.Type), func(t *testing.T) {
			checkActivation(t, ak, ek)
		})
		if err := tp.CloseEK(ek); err != nil {
			t.Errorf("CloseEK: %v", err)
		}
		closed[i] = true
	}
}

func TestActivateCredentialWrongTPM(t *testing.T) {
	// The first simulator's EK; the simulator is closed before the second
	// starts (only one runs at a time).
	firstEK := func() []byte {
		sim, err := simulator.OpenSimulator()
		if err != nil {
			t.Fatal(err)
		}
		tp := New(sim)
		defer tp.Close()
		got, err := tp.EKs()
		if err != nil {
			t.Fatal(err)
		}
		for _, ek := range got {
			defer tp.CloseEK(ek)
		}
		return got[0].Public
	}()

	tp := openSim(t)
	ek := eks(t, tp)[0]
	if bytes.Equal(ek.Public, firstEK) {
		t.Fatal("two simulators have the same EK")
	}
	ak := newAK(t, tp, AKECCP256)
	cred, secret := makeCredential(t, firstEK, ak.Params(), []byte("secret"))
	if got, err := ak.ActivateCredential(ek, cred, secret); err == nil {
		t.Fatalf("ActivateCredential of another TPM's challenge = %x, want error", got)
	}
	// The TPM is still usable: no session leaked. (A challenge for another
	// AK of the same TPM is a conformance check.)
	checkActivation(t, ak, ek)
}

func TestActivateCredentialUnsupportedEK(t *testing.T) {
	tp := openSim(t)
	ak := newAK(t, tp, AKECCP256)
	ek := eks(t, tp)[0]
	ek.pub.AuthPolicy.Buffer = make([]byte, 32)
	cred, secret := makeCredential(t, ek.Public, ak.Params(), []byte("secret"))
	if _, err := ak.ActivateCredential(ek, cred, secret); !errors.Is(err, ErrUnsupportedEK) {
		t.Fatalf("ActivateCredential with an unknown EK policy: %v, want ErrUnsupportedEK", err)
	}
}

// eventLog reads a firmware event log from the repository's testdata, or from
// go-eventlog's in the module cache if that is not there yet.
func eventLog(t *testing.T, name string) []byte {
	t.Helper()
	modcache := os.Getenv("GOMODCACHE")
	if modcache == "" {
		modcache = filepath.Join(build.Default.GOPATH, "pkg", "mod")
	}
	for _, dir := range []string{
		filepath.Join("..", "..", "testdata", "eventlogs"),
		filepath.Join(modcache, "github.com", "google", "go-eventlog@v0.0.2", "testdata", "eventlogs", "tpm"),
		filepath.Join(modcache, "github.com", "google", "go-eventlog@v0.0.3-0.20260617163629-883cc5652c69", "testdata", "eventlogs", "tpm"),
	} {
		b, err := os.ReadFile(filepath.Join(dir, name+".bin"))
		if err == nil {
			return b
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	t.Fatalf("event log %s not found", name)
	return nil
}

func TestReplayEventLog(t *testing.T) {
	for _, name := range []string{
		"rhel8-uefi",
		"arch-linux-workstation",
		"cos-85-amd-sev",
		"cos-93-amd-sev",
		"cos-101-amd-sev",
		"ubuntu-1804-amd-sev",
		"ubuntu-2104-no-dbx",
		"ubuntu-2104-no-secure-boot",
		"ubuntu-2404-amd-sevsnp",
	} {
		t.Run(name, func(t *testing.T) {
			raw := eventLog(t, name)
			tp := openSim(t)
			before := tp.Commands()
			n, err := tp.ReplayEventLog(raw)
			if err != nil {
				t.Fatalf("ReplayEventLog: %v", err)
			}
			if got := tp.Commands() - before; got != n || n < 10 {
				t.Errorf("extended %d events with %d commands", n, got)
			}

			// go-eventlog's replay must match the simulator's PCRs.
			checkReplayed(t, tp, raw, n)

			// A second replay doubles up: the PCRs no longer match the log.
			if _, err := tp.ReplayEventLog(raw); err != nil {
				t.Fatal(err)
			}
			if _, err := verifyAgainstPCRs(t, tp, raw); err == nil {
				t.Error("go-eventlog verified a doubly replayed log")
			}
		})
	}
}

func TestReplayEventLogRefuses(t *testing.T) {
	tp := openSim(t)
	// glinux-alex starts PCR 0 at locality 3 (TXT).
	before := tp.Commands()
	if _, err := tp.ReplayEventLog(eventLog(t, "glinux-alex")); !errors.Is(err, ErrLocality) {
		t.Errorf("ReplayEventLog(glinux-alex): %v, want ErrLocality", err)
	}
	if n := tp.Commands() - before; n != 0 {
		t.Errorf("a refused log sent %d commands", n)
	}
	// debian-10 is a SHA-1-only log.
	if _, err := tp.ReplayEventLog(eventLog(t, "debian-10")); err == nil {
		t.Error("ReplayEventLog accepted a SHA-1-only log")
	}
	// host-gmes starts with an H-CRTM event.
	if _, err := tp.ReplayEventLog(eventLog(t, "host-gmes")); !errors.Is(err, ErrLocality) {
		t.Errorf("ReplayEventLog(host-gmes): %v, want ErrLocality", err)
	}
	if n := tp.Commands() - before; n != 0 {
		t.Errorf("refused logs sent %d commands", n)
	}
	if _, err := tp.ReplayEventLog([]byte("not a log")); err == nil {
		t.Error("ReplayEventLog accepted garbage")
	}

	// A log with an event in PCR 17 (DRTM) is refused.
	log := syntheticLog(t, event2{pcr: 0, typ: uint32(tcg.PostCode)}, event2{pcr: 17, typ: uint32(tcg.PostCode)})
	if _, err := tp.ReplayEventLog(log); err == nil {
		t.Error("ReplayEventLog accepted an event in PCR 17")
	}
	log = syntheticLog(t, event2{pcr: 0, typ: uint32(tcg.PostCode)}, event2{pcr: 4, typ: uint32(tcg.EFIAction)})
	if n, err := tp.ReplayEventLog(log); err != nil || n != 2 {
		t.Errorf("ReplayEventLog(synthetic) = %d, %v; want 2 events", n, err)
	}
}

// event2 is one event of a synthetic crypto-agile log.
type event2 struct {
	pcr, typ uint32
}

// syntheticLog builds a minimal crypto-agile log (SHA-256 only) of events.
func syntheticLog(t *testing.T, events ...event2) []byte {
	t.Helper()
	be := binary.LittleEndian
	var spec []byte
	spec = append(spec, "Spec ID Event03\x00"...)
	spec = be.AppendUint32(spec, 0) // platform class
	spec = append(spec, 0, 2, 0, 2) // version 2.0, errata 0, uintn size 2
	spec = be.AppendUint32(spec, 1) // one algorithm
	spec = be.AppendUint16(spec, uint16(tpm2.TPMAlgSHA256))
	spec = be.AppendUint16(spec, sha256.Size)
	spec = append(spec, 0) // no vendor info

	var log []byte
	log = be.AppendUint32(log, 0)                    // PCR
	log = be.AppendUint32(log, uint32(tcg.NoAction)) // type
	log = append(log, make([]byte, 20)...)           // SHA-1 digest
	log = be.AppendUint32(log, uint32(len(spec)))    // event size
	log = append(log, spec...)
	for i, e := range events {
		data := []byte{byte(i)}
		d := sha256.Sum256(data)
		log = be.AppendUint32(log, e.pcr)
		log = be.AppendUint32(log, e.typ)
		log = be.AppendUint32(log, 1)
		log = be.AppendUint16(log, uint16(tpm2.TPMAlgSHA256))
		log = append(log, d[:]...)
		log = be.AppendUint32(log, uint32(len(data)))
		log = append(log, data...)
	}
	return log
}

func TestCommands(t *testing.T) {
	tp := openSim(t)
	if n := tp.Commands(); n != 0 {
		t.Fatalf("Commands() = %d on a fresh TPM", n)
	}
	if _, err := tp.PCRs([]int{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if n := tp.Commands(); n != 1 {
		t.Errorf("Commands() = %d after reading 3 PCRs, want 1", n)
	}
	if _, err := tp.PCRs([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}); err != nil {
		t.Fatal(err)
	}
	if n := tp.Commands(); n != 3 {
		t.Errorf("Commands() = %d after reading 11 more PCRs, want 3", n)
	}
	ak := newAK(t, tp, AKECCP256) // CreatePrimary, CertifyCreation
	if n := tp.Commands(); n != 5 {
		t.Errorf("Commands() = %d after NewAK, want 5", n)
	}
	ek := eks(t, tp)[0]
	afterEKs := tp.Commands()
	// GetCapability, 8 NVReadPublic (all absent), CreatePrimary.
	if n := afterEKs - 5; n != 10 {
		t.Errorf("EKs without certificates sent %d commands, want 10", n)
	}
	cred, secret := makeCredential(t, ek.Public, ak.Params(), []byte("secret"))
	if _, err := ak.ActivateCredential(ek, cred, secret); err != nil {
		t.Fatal(err)
	}
	// StartAuthSession, PolicySecret, ActivateCredential, FlushContext.
	if n := tp.Commands() - afterEKs; n != 4 {
		t.Errorf("ActivateCredential sent %d commands, want 4", n)
	}
}

func TestPolicyDigests(t *testing.T) {
	// TCG EK Credential Profile 2.x, Annex B.6.
	for alg, want := range map[tpm2.TPMAlgID]struct{ a, b string }{
		tpm2.TPMAlgSHA256: {
			"837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa",
			"ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0",
		},
		tpm2.TPMAlgSHA384: {
			"8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53",
			"b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12",
		},
		tpm2.TPMAlgSHA512: {
			"1e3b76502c8a1425aa0b7b3fc646a1b0fae063b03b5368f9c4cddecaff0891dd682bac1a85d4d832b781ea451915de5fc5bf0dc4a1917cd42fa041e3f998e0ee",
			"b8221ca69e8550a4914de3faa6a18c072cc01208073a928d5d66d59ef79e49a429c41a6b269571d57edb25fbdb1838425608b413cd616a5f6db5b6071af99bea",
		},
	} {
		a, err := policyA(alg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := policyB(alg)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(a) != want.a {
			t.Errorf("policy A %v = %x, want %s", alg, a, want.a)
		}
		if hex.EncodeToString(b) != want.b {
			t.Errorf("policy B %v = %x, want %s", alg, b, want.b)
		}
	}
	if !bytes.Equal(mustPolicyA(t), tpm2.RSAEKTemplate.AuthPolicy.Buffer) {
		t.Error("policy A differs from go-tpm's EK template")
	}
}

func mustPolicyA(t *testing.T) []byte {
	t.Helper()
	a, err := policyA(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDERLength(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want int
		err  bool
	}{
		{[]byte{0x30, 0x03, 1, 2, 3, 0, 0}, 5, false},
		{[]byte{0x30, 0x81, 0x01, 9, 0xff}, 4, false},
		{append([]byte{0x30, 0x82, 0x01, 0x00}, make([]byte, 300)...), 260, false},
		{[]byte{0x30, 0x05, 1}, 7, true},
		{[]byte{0x31, 0x00}, 0, true},
		{[]byte{0x30, 0x80, 0, 0}, 0, true},
		{[]byte{0xff, 0xff}, 0, true},
		{nil, 0, true},
	} {
		got, err := derLength(c.in)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("derLength(% x) = %d, %v", c.in[:min(len(c.in), 6)], got, err)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(""); err == nil {
		t.Error(`Open("") succeeded`)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing): %v", err)
	}
	if _, err := Open(file); !errors.Is(err, linuxtpm.ErrFileIsNotDevice) {
		t.Errorf("Open(regular file): %v, want ErrFileIsNotDevice", err)
	}
	if _, err := Open("swtpm:" + file); !errors.Is(err, linuxudstpm.ErrFileIsNotSocket) {
		t.Errorf("Open(swtpm:regular file): %v, want ErrFileIsNotSocket", err)
	}
	if _, err := Open("device:" + file); !errors.Is(err, linuxtpm.ErrFileIsNotDevice) {
		t.Errorf("Open(device:regular file): %v, want ErrFileIsNotDevice", err)
	}

	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err := Open(sock)
	if err != nil {
		t.Fatalf("Open(socket): %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// checkReplayed checks that go-eventlog verifies raw against the TPM's
// SHA-256 PCRs after ReplayEventLog extended n events of it.
func checkReplayed(t *testing.T, tp *TPM, raw []byte, n int) {
	t.Helper()
	verified, err := verifyAgainstPCRs(t, tp, raw)
	if err != nil {
		t.Fatalf("go-eventlog Verify against the replayed PCRs: %v", err)
	}
	if verified != n {
		t.Errorf("go-eventlog verified %d events, ReplayEventLog extended %d", verified, n)
	}
}

// verifyAgainstPCRs verifies raw with go-eventlog against the TPM's SHA-256
// PCRs and returns the number of events verified.
func verifyAgainstPCRs(t *testing.T, tp *TPM, raw []byte) (int, error) {
	t.Helper()
	all := make([]int, maxReplayPCR+1)
	for i := range all {
		all[i] = i
	}
	values, err := tp.PCRs(all)
	if err != nil {
		t.Fatal(err)
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		t.Fatal(err)
	}
	var mrs []register.MR
	for i, d := range values {
		mrs = append(mrs, register.PCR{Index: i, Digest: d, DigestAlg: crypto.SHA256})
	}
	events, err := el.Verify(mrs)
	return len(events), err
}

package tpmtest

import (
	"bytes"
	"testing"
	"time"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/verifier/wire"
)

func TestSimulatorManufactured(t *testing.T) {
	ca := NewCA(t)
	tp := Simulator(t, ca)
	eks, err := tp.EKs()
	if err != nil {
		t.Fatalf("EKs: %v", err)
	}
	t.Cleanup(func() {
		for _, ek := range eks {
			if err := tp.CloseEK(ek); err != nil {
				t.Errorf("CloseEK: %v", err)
			}
		}
	})
	if len(eks) != 1 || eks[0].Type != "ecc-p256" || eks[0].Cert == nil {
		t.Fatalf("EKs = %+v, want one certified ecc-p256 EK", eks)
	}
	cert, err := goattest.ParseEKCertificate(eks[0].Cert)
	if err != nil {
		t.Fatalf("parse EK certificate: %v", err)
	}
	if cert.Issuer.CommonName != CAName || len(cert.UnhandledCriticalExtensions) != 1 {
		t.Errorf("EK certificate issuer %q, unhandled critical extensions %v", cert.Issuer, cert.UnhandledCriticalExtensions)
	}

	ak, err := tp.NewAK(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	req := &wire.EnrollRequest{EKCert: eks[0].Cert, EKPublic: eks[0].Public, AK: ak.Params()}
	if _, err := ca.Roots().Enroll(req, time.Now()); err != nil {
		t.Errorf("the CA's roots refuse its EK certificate: %v", err)
	}
	if _, err := NewCA(t).Roots().Enroll(req, time.Now()); err == nil {
		t.Error("another CA of the same name accepts the EK certificate")
	}

	// The simulator closes early without upsetting t.Cleanup, and another
	// one (with new seeds, so another EK) can open.
	if err := tp.CloseEK(eks[0]); err != nil {
		t.Fatal(err)
	}
	eks = nil
	if err := ak.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	tp2 := Simulator(t, nil)
	eks2, err := tp2.EKs()
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.CloseEK(eks2[0])
	if len(eks2) != 1 || eks2[0].Cert != nil || eks2[0].Type != "rsa2048" {
		t.Errorf("an unmanufactured simulator has EKs %+v, want the certificate-less RSA EK", eks2)
	}
}

func TestAddEKPersistent(t *testing.T) {
	ca := NewCA(t)
	tp := Simulator(t, nil)
	var pubs [][]byte
	for i, idx := range []tpm2.TPMHandle{NVIndexECCP256, NVIndexRSA2048} {
		pub, _ := AddEK(t, tp, ca, UniqueECCEKTemplate(bytes.Repeat([]byte{byte(i + 1)}, 32)), idx, tpm2.TPMHandle(0x81010001+i))
		pubs = append(pubs, pub)
	}
	eks, err := tp.EKs()
	if err != nil {
		t.Fatal(err)
	}
	if len(eks) != 2 {
		t.Fatalf("EKs returned %d keys, want 2", len(eks))
	}
	for i, ek := range eks {
		if !bytes.Equal(ek.Public, pubs[i]) || ek.Handle != tpm2.TPMHandle(0x81010001+i) {
			t.Errorf("EK %d: handle %#x, public area matches: %v", i, uint32(ek.Handle), bytes.Equal(ek.Public, pubs[i]))
		}
	}
}

func TestReplayLog(t *testing.T) {
	tp := Simulator(t, nil)
	raw := ReplayLog(t, tp, "rhel8-uefi")
	if !bytes.Equal(raw, EventLog(t, "rhel8-uefi.bin")) {
		t.Error("ReplayLog returned another log")
	}
	pcrs, err := tp.PCRs([]int{0})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(pcrs[0], make([]byte, 32)) {
		t.Error("PCR 0 is still zero after the replay")
	}
}

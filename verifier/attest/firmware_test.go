package attest_test

import (
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/tpmtest"
	"github.com/bootgate/bootgate/verifier/wire"
)

// endorsementAK creates an ECC AK as a primary key of the endorsement
// hierarchy, certified by itself as the agent's AKs are.
func endorsementAK(t *testing.T, tp *tpm.TPM) (wire.AKParams, tpm2.AuthHandle) {
	t.Helper()
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte("endorsement AK")}}),
	}
	tr := tp.Transport()
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = tpm2.FlushContext{FlushHandle: created.ObjectHandle}.Execute(tr) })
	certified, err := tpm2.CertifyCreation{
		SignHandle:     tpm2.AuthHandle{Handle: created.ObjectHandle, Name: created.Name, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:   tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		CreationHash:   created.CreationHash,
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		CreationTicket: created.CreationTicket,
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	return wire.AKParams{Public: created.OutPublic.Bytes(), CreateData: created.CreationData.Bytes(),
			CreateAttestation: certified.CertifyInfo.Bytes(), CreateSignature: tpm2.Marshal(certified.Signature)},
		tpm2.AuthHandle{Handle: created.ObjectHandle, Name: created.Name, Auth: tpm2.PasswordAuth(nil)}
}

// quotedFirmware quotes PCR 0 with ak and returns the quote's
// firmwareVersion.
func quotedFirmware(t *testing.T, tp *tpm.TPM, ak tpm2.AuthHandle) uint64 {
	t.Helper()
	q, err := tpm2.Quote{SignHandle: ak, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{1, 0, 0}}}}}.Execute(tp.Transport())
	if err != nil {
		t.Fatal(err)
	}
	att, err := q.Quoted.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return att.FirmwareVersion
}

// realFirmware reads TPM_PT_FIRMWARE_VERSION_1 and _2.
func realFirmware(t *testing.T, tp *tpm.TPM) uint64 {
	t.Helper()
	r, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTFirmwareVersion1), PropertyCount: 2}.Execute(tp.Transport())
	if err != nil {
		t.Fatal(err)
	}
	props, err := r.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) != 2 {
		t.Fatalf("firmware properties: %v", err)
	}
	return uint64(props.TPMProperty[0].Value)<<32 | uint64(props.TPMProperty[1].Value)
}

// TestFirmwareProven: the quote's firmwareVersion counts as proven only for
// an AK whose certified creation data shows a primary key of the
// endorsement hierarchy; the agent's owner-hierarchy AKs get it obfuscated.
func TestFirmwareProven(t *testing.T) {
	ca := tpmtest.NewCA(t)
	tp := tpmtest.Simulator(t, ca)
	eks, err := tp.EKs()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := tp.NewAK(tpm.AKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	eAK, eHandle := endorsementAK(t, tp)
	// What FirmwareProven stands for: the endorsement AK's quote shows the
	// real firmware version.
	if got, want := quotedFirmware(t, tp, eHandle), realFirmware(t, tp); got != want {
		t.Fatalf("endorsement AK quotes firmware %#x, the TPM has %#x", got, want)
	}
	for _, c := range []struct {
		name   string
		ak     wire.AKParams
		proven bool
	}{{"owner hierarchy", owner.Params(), false}, {"endorsement hierarchy", eAK, true}} {
		enr, err := ca.Roots().Enroll(&wire.EnrollRequest{EKCert: eks[0].Cert, EKPublic: eks[0].Public, AK: c.ak}, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if enr.FirmwareProven() != c.proven || enr.TPM.VendorID() != "BOOT" {
			t.Errorf("%s: FirmwareProven %v (TPM %+v), want %v", c.name, enr.FirmwareProven(), enr.TPM, c.proven)
		}
	}
}

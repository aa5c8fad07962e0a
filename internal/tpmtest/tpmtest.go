// Package tpmtest provides test fixtures for code that talks to TPMs: a test
// TPM manufacturer CA, TPM simulators manufactured with EK certificates from
// it, and the repository's recorded firmware event logs replayed into them.
//
// It is imported by tests only. The go-tpm-tools simulator it wraps is a
// process-wide singleton: while one Simulator is open, opening another blocks
// until the first is closed (by t.Cleanup, or explicitly with Close).
package tpmtest

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/verifier/attest"
)

// TCG-registered NV indices for EK certificates (EK Credential Profile 2.x).
const (
	NVIndexRSA2048 tpm2.TPMHandle = 0x01c00002 // low range, template L-1
	NVIndexECCP256 tpm2.TPMHandle = 0x01c0000a // low range, template L-2
)

// CAName is the common name of every test manufacturer root.
const CAName = "bootgate test TPM manufacturer"

// CA is a throwaway TPM manufacturer (a softtpm.Manufacturer named CAName,
// whose EK certificates name the model "bootgate simulator"): an ECDSA P-256
// root that issues EK certificates. Two CAs made by NewCA have the same
// name but different keys.
type CA struct{ m *softtpm.Manufacturer }

// NewCA makes a root CA named CAName, valid from an hour ago for ten years.
func NewCA(t testing.TB) *CA {
	t.Helper()
	m, err := softtpm.NewManufacturer(CAName)
	if err != nil {
		t.Fatalf("tpmtest: %v", err)
	}
	m.Model = "bootgate simulator"
	return &CA{m: m}
}

// Cert returns the root certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.m.Cert() }

// PEM returns the root certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.m.Cert().Raw})
}

// Roots returns verifier trust roots holding this CA, and allowlisting the
// certificate-less EKs whose host IDs are given.
func (ca *CA) Roots(allow ...string) *attest.Roots {
	return attest.NewRoots([]*x509.Certificate{ca.m.Cert()}, allow)
}

// IssueEKCert certifies an endorsement key as a TPM manufacturer does
// (softtpm.Manufacturer.IssueEKCert).
func (ca *CA) IssueEKCert(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := ca.m.IssueEKCert(pub)
	if err != nil {
		t.Fatalf("tpmtest: %v", err)
	}
	return der
}

// onceCloser makes Close idempotent, so that a test may close a simulator
// early (to open another one) and t.Cleanup close it again harmlessly.
type onceCloser struct {
	transport.TPMCloser
	once sync.Once
	err  error
}

func (c *onceCloser) Close() error {
	c.once.Do(func() { c.err = c.TPMCloser.Close() })
	return c.err
}

// Simulator starts a fresh TPM simulator (new random seeds) and wraps it with
// agent/tpm.New; it is closed on t.Cleanup, and Close may be called earlier.
// With a CA, the simulator is manufactured: its ECC P-256 EK (the TCG
// low-range template L-2, tpm2.ECCEKTemplate) is certified by ca and the
// certificate written to NV index 0x01c0000a. Without one it has no EK
// certificate at all, and agent/tpm falls back to its certificate-less RSA EK.
//
// Only one simulator runs at a time in a process: Simulator blocks while
// another is open.
func Simulator(t testing.TB, ca *CA) *tpm.TPM {
	t.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("tpmtest: open simulator: %v", err)
	}
	tp := tpm.New(&onceCloser{TPMCloser: sim})
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("tpmtest: close simulator: %v", err)
		}
	})
	if ca != nil {
		AddEK(t, tp, ca, tpm2.ECCEKTemplate, NVIndexECCP256, 0)
	}
	return tp
}

// AddEK manufactures one endorsement key: it creates the primary key of
// template in the endorsement hierarchy, certifies it with ca (IssueEKCert)
// and writes the certificate into NV index nvIndex. With persist non-zero the
// key is made persistent at that handle (agent/tpm then finds it by its
// certificate whatever the index's template); otherwise it is flushed, and
// agent/tpm recreates it from the index's TCG template, which must then be
// template. It returns the key's TPMT_PUBLIC and the certificate.
func AddEK(t testing.TB, tp *tpm.TPM, ca *CA, template tpm2.TPMTPublic, nvIndex, persist tpm2.TPMHandle) (public, cert []byte) {
	t.Helper()
	tr := tp.Transport()
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(tr)
	if err != nil {
		t.Fatalf("tpmtest: create EK: %v", err)
	}
	defer func() {
		if _, err := (tpm2.FlushContext{FlushHandle: created.ObjectHandle}).Execute(tr); err != nil {
			t.Errorf("tpmtest: flush EK: %v", err)
		}
	}()
	pub, err := created.OutPublic.Contents()
	if err != nil {
		t.Fatalf("tpmtest: parse EK public area: %v", err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatalf("tpmtest: decode EK public key: %v", err)
	}
	if persist != 0 {
		if _, err := (tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
			PersistentHandle: persist,
		}).Execute(tr); err != nil {
			t.Fatalf("tpmtest: persist EK at %#x: %v", uint32(persist), err)
		}
	}
	cert = ca.IssueEKCert(t, key)
	WriteNV(t, tp, nvIndex, cert)
	return created.OutPublic.Bytes(), cert
}

// nvChunk is the NV write size: below every TPM's TPM_PT_NV_BUFFER_MAX.
const nvChunk = 512

// WriteNV defines NV index idx with the size of data (owner-writable,
// readable with its own empty authorisation, as EK certificate indices are)
// and writes data into it.
func WriteNV(t testing.TB, tp *tpm.TPM, idx tpm2.TPMHandle, data []byte) {
	t.Helper()
	tr := tp.Transport()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	pub := tpm2.TPMSNVPublic{
		NVIndex: idx,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			OwnerWrite: true,
			OwnerRead:  true,
			AuthRead:   true,
			NoDA:       true,
			NT:         tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(data)),
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(pub)}).Execute(tr); err != nil {
		t.Fatalf("tpmtest: define NV index %#x: %v", uint32(idx), err)
	}
	for off := 0; off < len(data); off += nvChunk {
		// The index's name changes once it is written: read it each time.
		rp, err := (tpm2.NVReadPublic{NVIndex: idx}).Execute(tr)
		if err != nil {
			t.Fatalf("tpmtest: read NV index %#x public area: %v", uint32(idx), err)
		}
		end := min(off+nvChunk, len(data))
		if _, err := (tpm2.NVWrite{
			AuthHandle: owner,
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: rp.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data[off:end]},
			Offset:     uint16(off),
		}).Execute(tr); err != nil {
			t.Fatalf("tpmtest: write NV index %#x at %d: %v", uint32(idx), off, err)
		}
	}
}

// UniqueECCEKTemplate returns tpm2.ECCEKTemplate with the given bytes as the
// unique X coordinate: a template for another ECC P-256 endorsement-style key
// of the same TPM, for tests that need several distinct EKs (hosts) in one
// simulator.
func UniqueECCEKTemplate(x []byte) tpm2.TPMTPublic {
	t := tpm2.ECCEKTemplate
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: append([]byte(nil), x...)},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	})
	return t
}

// RepoRoot returns the repository root: the first directory holding go.mod,
// walking up from the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("tpmtest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("tpmtest: %v", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("tpmtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// EventLog reads the recorded firmware event log testdata/eventlogs/NAME of
// the repository; ".bin" is appended to a name without extension.
func EventLog(t testing.TB, name string) []byte {
	t.Helper()
	if filepath.Ext(name) == "" {
		name += ".bin"
	}
	if strings.ContainsRune(name, '/') {
		t.Fatalf("tpmtest: event log name %q has a path", name)
	}
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "testdata", "eventlogs", name))
	if err != nil {
		t.Fatalf("tpmtest: %v", err)
	}
	return b
}

// ReplayLog reads the recorded event log NAME (see EventLog), extends its
// SHA-256 digests into tp's PCRs with tp.ReplayEventLog, and returns the raw
// log, which then describes tp's PCRs.
func ReplayLog(t testing.TB, tp *tpm.TPM, name string) []byte {
	t.Helper()
	raw := EventLog(t, name)
	if _, err := tp.ReplayEventLog(raw); err != nil {
		t.Fatalf("tpmtest: replay %s: %v", name, err)
	}
	return raw
}

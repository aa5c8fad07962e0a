package tpm

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/keytype"
	"github.com/bootgate/bootgate/qemu/swtpm"
)

// startSwtpm manufactures a swtpm with EK and platform certificates from a
// throwaway manufacturer CA (qemu/swtpm), starts it on a unix socket with
// TPM2_Startup done, and returns the socket path. swtpm is stopped and its
// directory removed when the test ends.
func startSwtpm(t *testing.T) string {
	t.Helper()
	if err := swtpm.Available(); err != nil {
		t.Skipf("skipping the swtpm test: %v", err)
	}
	dir := t.TempDir() // removed after the Cleanup below has stopped swtpm
	ca, err := swtpm.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ca.Manufacture(ctx, state); err != nil {
		t.Fatal(err)
	}
	s, err := swtpm.Start(state, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop swtpm: %v", err)
		}
	})
	return s.Socket
}

// TestSwtpm checks what is particular to swtpm as swtpm_setup manufactures
// it: where its EKs are, that this package's TCG templates recreate them, and
// that an event log replays into it. Everything a TPM must do whatever it is
// (EKs, AKs, activation, quotes, PCRs) is in conformance_test.go, which runs
// against swtpm too.
func TestSwtpm(t *testing.T) {
	tp, err := Open("swtpm:" + startSwtpm(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	got := eks(t, tp)
	// swtpm_setup persists an RSA 2048 EK at 0x81010001 (certificate in the
	// low-range index 0x01c00002) and an ECC P-384 EK at 0x81010016
	// (certificate in the high-range index 0x01c00016).
	want := []struct {
		typ    string
		handle tpm2.TPMHandle
	}{{"rsa2048", 0x81010001}, {"ecc-p384", 0x81010016}}
	if len(got) != len(want) {
		t.Fatalf("EKs returned %d keys, want %d", len(got), len(want))
	}
	for i, w := range want {
		ek := got[i]
		if ek.Type != w.typ || ek.Handle != w.handle || ek.transient || ek.Cert == nil {
			t.Errorf("EK %d: %s at %#x (transient %v, certificate of %d bytes), want a certified %s at %#x",
				i, ek.Type, uint32(ek.Handle), ek.transient, len(ek.Cert), w.typ, uint32(w.handle))
		}
	}

	// The persisted EKs are the TCG default templates' keys.
	slots, err := ekSlots()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.index != 0x01c00002 && s.index != 0x01c00016 {
			continue
		}
		k := createEK(t, tp, s.template)
		flush(t, tp, k.handle)
		var ek EK
		for _, e := range got {
			if e.Type == keytype.Of(&k.pub) {
				ek = e
			}
		}
		if !bytes.Equal(k.public, ek.Public) {
			t.Errorf("template for NV index %#x does not recreate swtpm's %s EK", uint32(s.index), ek.Type)
		}
	}

	// A firmware log replays into swtpm's SHA-256 bank, as the demo does
	// before a VM's agent quotes it.
	raw := eventLog(t, "rhel8-uefi")
	n, err := tp.ReplayEventLog(raw)
	if err != nil {
		t.Fatalf("ReplayEventLog: %v", err)
	}
	checkReplayed(t, tp, raw, n)
	t.Logf("swtpm session: %d TPM commands", tp.Commands())
}

package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// startSwtpm manufactures a swtpm with EK and platform certificates from a
// local CA kept in a temporary directory, starts it on a unix socket and
// returns the socket path. The process and the directory are removed when the
// test ends.
func startSwtpm(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH: install swtpm and swtpm-tools to run this test", tool)
		}
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // removed after the Cleanup below has killed swtpm
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	caConf := filepath.Join(dir, "swtpm-localca.conf")
	writeFile(t, caConf, fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
		ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")))
	caOpts := filepath.Join(dir, "swtpm-localca.options")
	writeFile(t, caOpts, "--platform-manufacturer bootgate\n--platform-version 2.1\n--platform-model test\n")
	setupConf := filepath.Join(dir, "swtpm_setup.conf")
	writeFile(t, setupConf, fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
		localca, caConf, caOpts))

	setup := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--config", setupConf)
	setup.Env = append(os.Environ(), "TMPDIR="+dir)
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}

	sock := filepath.Join(dir, "sock")
	var stderr bytes.Buffer
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+state,
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl"),
		"--flags", "startup-clear")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("kill swtpm: %v", err)
		}
		<-exited
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return sock
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("swtpm exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm socket %s did not appear\n%s", sock, stderr.String())
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

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
		if ek.Type != w.typ || ek.Handle != w.handle || ek.transient {
			t.Errorf("EK %d: %s at %#x (transient %v), want %s at %#x", i, ek.Type, uint32(ek.Handle), ek.transient, w.typ, uint32(w.handle))
		}
		cert, err := x509.ParseCertificate(ek.Cert)
		if err != nil {
			t.Fatalf("EK %d certificate: %v", i, err)
		}
		if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(cryptoPublic(t, ek.Public)) {
			t.Errorf("EK %d certificate is for another key", i)
		}
		pub := unmarshalPublic(t, ek.Public)
		t.Logf("EK %d: %s at %#x, nameAlg %v, userWithAuth %v, authPolicy %x, certificate %d bytes from %q",
			i, ek.Type, uint32(ek.Handle), pub.NameAlg, pub.ObjectAttributes.UserWithAuth, pub.AuthPolicy.Buffer, len(ek.Cert), cert.Issuer)
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
			if e.Type == keyType(&k.pub) {
				ek = e
			}
		}
		if !bytes.Equal(k.public, ek.Public) {
			t.Errorf("template for NV index %#x does not recreate swtpm's %s EK", uint32(s.index), ek.Type)
		}
	}

	ak := newAK(t, tp, AKECCP256)
	if err := (&attest.ActivationParameters{EK: cryptoPublic(t, got[0].Public), AK: attestParams(ak.Params())}).CheckAKParameters(); err != nil {
		t.Fatalf("CheckAKParameters: %v", err)
	}
	for _, ek := range got {
		t.Run("activate-"+ek.Type, func(t *testing.T) {
			checkActivation(t, ak, ek)
		})
	}

	raw := eventLog(t, "rhel8-uefi")
	if _, err := tp.ReplayEventLog(raw); err != nil {
		t.Fatalf("ReplayEventLog: %v", err)
	}
	sel := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}
	nonce := []byte("swtpm nonce")
	quote, sig, err := ak.Quote(nonce, sel)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	values, err := tp.PCRs(sel)
	if err != nil {
		t.Fatalf("PCRs: %v", err)
	}
	var pcrs []attest.PCR
	for i, d := range values {
		pcrs = append(pcrs, attest.PCR{Index: i, Digest: d, DigestAlg: crypto.SHA256})
	}
	pub, err := attest.ParseAKPublic(ak.Params().Public)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify(attest.Quote{Quote: quote, Signature: sig}, pcrs, nonce); err != nil {
		t.Fatalf("Verify quote: %v", err)
	}
	if err := pub.Verify(attest.Quote{Quote: quote, Signature: sig}, pcrs, []byte("other")); err == nil {
		t.Error("Verify accepted a wrong nonce")
	}
	t.Logf("swtpm session: %d TPM commands", tp.Commands())
}

package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

type fakeTPM struct {
	pcr    int
	digest []byte
	calls  int
}

func (f *fakeTPM) Extend(pcr int, d []byte) error {
	f.pcr, f.digest = pcr, d
	f.calls++
	return nil
}

type fakeKexec struct {
	kernel, initrd []byte
	cmdline        string
	rebooted       bool
}

func (f *fakeKexec) FileLoad(k, i *os.File, cmdline string) error {
	var err error
	if f.kernel, err = os.ReadFile(k.Name()); err != nil {
		return err
	}
	if f.initrd, err = os.ReadFile(i.Name()); err != nil {
		return err
	}
	f.cmdline = cmdline
	return nil
}

func (f *fakeKexec) Reboot() error { f.rebooted = true; return nil }

func hexsum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func server(t *testing.T, files map[string][]byte) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestFetchMeasureLoad(t *testing.T) {
	kernel, initrd := bytes.Repeat([]byte("K"), 4096), bytes.Repeat([]byte("I"), 1001)
	ts := server(t, map[string][]byte{"/kernel": kernel, "/initrd": initrd})
	spec := Spec{
		Kernel:  File{URL: ts.URL + "/kernel", SHA256: hexsum(kernel), Size: int64(len(kernel))},
		Initrd:  File{URL: ts.URL + "/initrd", SHA256: hexsum(initrd)},
		Cmdline: "console=ttyS0",
	}
	tpm, kx := &fakeTPM{}, &fakeKexec{}
	extra, err := CPIO(map[string][]byte{"bootgate/result.json": []byte(`{"verdict":"pass"}`)})
	if err != nil {
		t.Fatal(err)
	}
	l := &Loader{HTTP: ts.Client(), Dir: t.TempDir(), PCR: 15, Measurer: tpm, Kexec: kx, Extra: extra}
	img, err := l.Fetch(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load(img); err != nil {
		t.Fatal(err)
	}
	if tpm.calls != 1 || tpm.pcr != 15 || !bytes.Equal(tpm.digest, img.Digest[:]) {
		t.Errorf("measured %d times into PCR %d: %x", tpm.calls, tpm.pcr, tpm.digest)
	}
	if !bytes.Equal(kx.kernel, kernel) || kx.cmdline != "console=ttyS0" {
		t.Errorf("kexec got another kernel or cmdline %q", kx.cmdline)
	}
	// The handed-over archive follows the initrd, 4-byte aligned, and parses.
	if !bytes.HasPrefix(kx.initrd, initrd) {
		t.Fatal("initrd not first")
	}
	rest := kx.initrd[(len(initrd)+3)/4*4:]
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(rest)))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range recs {
		found = found || r.Name == "bootgate/result.json"
	}
	if !found {
		t.Errorf("handed-over file missing: %v", recs)
	}
	if err := l.Execute(); err != nil || !kx.rebooted {
		t.Errorf("execute: %v, rebooted %v", err, kx.rebooted)
	}
}

func TestFetchRefuses(t *testing.T) {
	kernel := []byte("the real kernel")
	ts := server(t, map[string][]byte{"/kernel": kernel, "/initrd": []byte("initrd")})
	good := File{URL: ts.URL + "/kernel", SHA256: hexsum(kernel), Size: int64(len(kernel))}
	initrd := File{URL: ts.URL + "/initrd", SHA256: hexsum([]byte("initrd"))}
	for _, tc := range []struct {
		name   string
		kernel File
		digest bool
	}{
		{"wrong digest", File{URL: good.URL, SHA256: hexsum([]byte("another kernel"))}, true},
		{"wrong size", File{URL: good.URL, SHA256: good.SHA256, Size: good.Size + 1}, true},
		{"too large", File{URL: good.URL, SHA256: good.SHA256, Size: 3}, true},
		{"missing", File{URL: ts.URL + "/nothing", SHA256: good.SHA256}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kx := &fakeKexec{}
			l := &Loader{HTTP: ts.Client(), Dir: t.TempDir(), Kexec: kx}
			img, err := l.Fetch(context.Background(), Spec{Kernel: tc.kernel, Initrd: initrd})
			if err == nil || img != nil {
				t.Fatal("accepted")
			}
			if tc.digest != errors.Is(err, ErrDigest) {
				t.Errorf("ErrDigest = %v: %v", !tc.digest, err)
			}
			if _, statErr := os.Stat(l.Dir + "/kernel"); statErr == nil {
				t.Error("a refused file was left behind")
			}
		})
	}
}

func TestDryRun(t *testing.T) {
	kernel := []byte("k")
	ts := server(t, map[string][]byte{"/k": kernel, "/i": kernel})
	kx := &fakeKexec{}
	l := &Loader{HTTP: ts.Client(), Dir: t.TempDir(), Kexec: kx, DryRun: true}
	img, err := l.Fetch(context.Background(), Spec{Kernel: File{URL: ts.URL + "/k", SHA256: hexsum(kernel)}, Initrd: File{URL: ts.URL + "/i", SHA256: hexsum(kernel)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load(img); err != nil {
		t.Fatal(err)
	}
	if err := l.Execute(); err != nil || kx.kernel != nil || kx.rebooted {
		t.Fatalf("dry run reached kexec: %v", err)
	}
}

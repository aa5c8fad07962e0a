// Package boot loads an operating system and hands the machine to it. It is
// separate from attestation: it is told what to fetch and which digests to
// expect, and it does every check before the point of no return.
//
// Load fetches the kernel and initrd, checks their SHA-256 and size, and
// places them with kexec_file_load, which under Secure Boot lockdown also
// makes the running kernel check the new kernel's signature against its
// builtin and platform (db) keys. Execute is the point of no return. A Loader
// with DryRun set does everything but the kexec system calls.
package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// MaxFileBytes bounds a kernel or initrd download.
const MaxFileBytes = 512 << 20

// File is a file to fetch and the digest it must have.
type File struct {
	URL    string
	SHA256 string // lower-case hex
	Size   int64  // expected size; 0 means unknown (then MaxFileBytes bounds it)
}

// Spec is an operating system to boot.
type Spec struct {
	Kernel, Initrd File
	Cmdline        string
	// KernelSigner, if set, must have signed the kernel (Authenticode).
	KernelSigner *x509.Certificate
}

// ErrDigest reports a file whose content is not what the spec names.
var ErrDigest = errors.New("digest mismatch")

// Image is a fetched and checked operating system, in files under Dir.
type Image struct {
	Kernel, Initrd string // paths
	Cmdline        string
	// Digest is SHA-256(kernel SHA-256 || initrd SHA-256 || SHA-256(cmdline)):
	// what a Measurer extends into a PCR before the kexec.
	Digest [32]byte
}

// Measurer records an image's digest before it runs (a TPM PCR extend).
type Measurer interface {
	Extend(pcr int, sha256Digest []byte) error
}

// Kexec is the system's kexec; the Linux implementation is in kexec_linux.go.
type Kexec interface {
	FileLoad(kernel, initrd *os.File, cmdline string) error
	Reboot() error
}

// Loader fetches, checks, measures and loads images.
type Loader struct {
	HTTP *http.Client
	Dir  string // where fetched files are written (tmpfs in the initramfs)
	// PCR is where the image digest is extended; bootgate uses 15, which
	// neither firmware nor the Linux EFI stub measure into.
	PCR      int
	Measurer Measurer // nil skips measuring
	Kexec    Kexec
	DryRun   bool
	// Extra is appended to the initrd as one more cpio archive (the kernel
	// unpacks concatenated archives in order): how the agent hands data to
	// the next OS. Nil for none.
	Extra []byte
}

// Fetch downloads and checks spec's files.
func (l *Loader) Fetch(ctx context.Context, spec Spec) (*Image, error) {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("fetch OS: %w", err)
	}
	img := &Image{Cmdline: spec.Cmdline, Kernel: filepath.Join(l.Dir, "kernel"), Initrd: filepath.Join(l.Dir, "initrd")}
	kd, err := l.fetch(ctx, spec.Kernel, img.Kernel)
	if err != nil {
		return nil, fmt.Errorf("fetch kernel: %w", err)
	}
	if spec.KernelSigner != nil {
		if err := VerifyKernel(img.Kernel, spec.KernelSigner); err != nil {
			os.Remove(img.Kernel)
			return nil, err
		}
	}
	id, err := l.fetch(ctx, spec.Initrd, img.Initrd)
	if err != nil {
		return nil, fmt.Errorf("fetch initrd: %w", err)
	}
	cd := sha256.Sum256([]byte(spec.Cmdline))
	h := sha256.New()
	h.Write(kd)
	h.Write(id)
	h.Write(cd[:])
	copy(img.Digest[:], h.Sum(nil))
	return img, nil
}

func (l *Loader) fetch(ctx context.Context, f File, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := l.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", f.URL, resp.Status)
	}
	limit := int64(MaxFileBytes)
	if f.Size > 0 {
		limit = f.Size
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(resp.Body, limit+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	sum := h.Sum(nil)
	switch {
	case n > limit:
		err = fmt.Errorf("%w: %s is larger than %d bytes", ErrDigest, f.URL, limit)
	case f.Size > 0 && n != f.Size:
		err = fmt.Errorf("%w: %s has %d bytes, want %d", ErrDigest, f.URL, n, f.Size)
	case !strings.EqualFold(hex.EncodeToString(sum), f.SHA256):
		err = fmt.Errorf("%w: %s has SHA-256 %x, want %s", ErrDigest, f.URL, sum, f.SHA256)
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return sum, nil
}

// Load measures img and loads it with kexec_file_load (unless DryRun). After
// Load succeeds, only Execute remains.
func (l *Loader) Load(img *Image) error {
	if l.Measurer != nil {
		if err := l.Measurer.Extend(l.PCR, img.Digest[:]); err != nil {
			return fmt.Errorf("measure OS into PCR %d: %w", l.PCR, err)
		}
	}
	initrd := img.Initrd
	if len(l.Extra) > 0 {
		var err error
		if initrd, err = appendFile(img.Initrd, l.Extra); err != nil {
			return fmt.Errorf("hand over data: %w", err)
		}
	}
	if l.DryRun {
		return nil
	}
	k, err := os.Open(img.Kernel)
	if err != nil {
		return fmt.Errorf("load OS: %w", err)
	}
	defer k.Close()
	i, err := os.Open(initrd)
	if err != nil {
		return fmt.Errorf("load OS: %w", err)
	}
	defer i.Close()
	if err := l.Kexec.FileLoad(k, i, img.Cmdline); err != nil {
		return fmt.Errorf("kexec_file_load: %w", err)
	}
	return nil
}

// Execute jumps into the loaded OS. It returns only on failure.
func (l *Loader) Execute() error {
	if l.DryRun {
		return nil
	}
	return l.Kexec.Reboot()
}

// appendFile writes path+extra to a new file next to path.
func appendFile(path string, extra []byte) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	// cpio archives concatenate; pad the first to 4 bytes as the kernel expects.
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	out := path + ".handover"
	if err := os.WriteFile(out, append(b, extra...), 0o600); err != nil {
		return "", err
	}
	return out, nil
}

// CPIO builds a newc cpio archive of regular files (name → content, mode
// 0600) for Loader.Extra; the directories in their names are created.
func CPIO(files map[string][]byte) ([]byte, error) {
	names := slices.Sorted(maps.Keys(files))
	recs := make([]cpio.Record, 0, len(names))
	for _, n := range names {
		recs = append(recs, cpio.StaticFile(n, string(files[n]), 0o600))
	}
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return nil, fmt.Errorf("write cpio: %w", err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, fmt.Errorf("write cpio: %w", err)
	}
	return buf.Bytes(), nil
}

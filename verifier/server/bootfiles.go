package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/bootgate/bootgate/boot"
	"github.com/bootgate/bootgate/verifier/wire"
)

// BootOS is the production OS a passing host boots: its kernel and initrd
// files and its command line.
type BootOS struct {
	Kernel, Initrd string
	Cmdline        string
	// Signer, if set, is the certificate (PEM file) that must have signed
	// the kernel; the server refuses to start with a kernel it did not sign.
	Signer string
}

// bootFiles holds the production OS in memory, with the digests the verifier
// names in every passing verdict. Files are read once, at start: what is
// served is exactly what was hashed.
type bootFiles struct {
	spec  wire.BootSpec
	files map[string][]byte // by name: "kernel", "initrd"
	mod   time.Time
}

func loadBootFiles(bos *BootOS) (*bootFiles, error) {
	b := &bootFiles{files: map[string][]byte{}, mod: time.Now()}
	for _, f := range []struct {
		name, path string
		dst        *wire.File
	}{
		{"kernel", bos.Kernel, &b.spec.Kernel},
		{"initrd", bos.Initrd, &b.spec.Initrd},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("load production OS: %w", err)
		}
		sum := sha256.Sum256(data)
		b.files[f.name] = data
		*f.dst = wire.File{Path: wire.PathBoot + f.name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
	}
	b.spec.Cmdline = bos.Cmdline
	if bos.Signer != "" {
		pemBytes, err := os.ReadFile(bos.Signer)
		if err != nil {
			return nil, fmt.Errorf("load production OS signer: %w", err)
		}
		blk, _ := pem.Decode(pemBytes)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("load production OS signer: no certificate in %s", bos.Signer)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load production OS signer: %w", err)
		}
		if err := boot.VerifyKernel(bos.Kernel, cert); err != nil {
			return nil, fmt.Errorf("load production OS: %s: %w", bos.Kernel, err)
		}
		b.spec.KernelSigner = blk.Bytes
	}
	return b, nil
}

func (b *bootFiles) serve(w http.ResponseWriter, r *http.Request) {
	data, ok := b.files[r.PathValue("name")]
	if !ok {
		writeError(w, http.StatusNotFound, wire.CodeBadRequest, "no such boot file")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", b.mod, io.ReadSeeker(bytes.NewReader(data)))
}

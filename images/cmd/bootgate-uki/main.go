// Command bootgate-uki builds, signs and digests unified kernel images (UKI):
// systemd's EFI stub with the kernel, initrd and command line as PE sections,
// so that firmware verifies and measures all of them as one boot application.
//
//	bootgate-uki build --stub STUB --kernel K --initrd I --cmdline C --out OUT
//	bootgate-uki sign --key KEY.pem --cert CERT.pem --in IN --out OUT
//	bootgate-uki digest FILE     # Authenticode SHA-256: the PCR 4 event digest
//
// Builds are reproducible: the PE timestamp objcopy writes is zeroed.
package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/foxboron/go-uefi/authenticode"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bootgate-uki:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bootgate-uki build|sign|digest ...")
	}
	switch args[0] {
	case "build":
		return build(args[1:])
	case "sign":
		return sign(args[1:])
	case "digest":
		if len(args) != 2 {
			return errors.New("usage: bootgate-uki digest FILE")
		}
		d, err := digest(args[1])
		if err != nil {
			return err
		}
		fmt.Println(d)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// Section addresses for systemd 252's stub: above the stub's own sections,
// with room for a 32 MiB kernel before the initrd.
var sections = []struct{ name, vma string }{
	{".osrel", "0x20000"},
	{".cmdline", "0x30000"},
	{".linux", "0x2000000"},
	{".initrd", "0x4000000"},
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	stub := fs.String("stub", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "systemd EFI stub")
	kernel := fs.String("kernel", "", "kernel (bzImage with EFI stub)")
	initrd := fs.String("initrd", "", "initrd")
	cmdline := fs.String("cmdline", "", "kernel command line")
	out := fs.String("out", "", "output UKI")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kernel == "" || *initrd == "" || *out == "" {
		return errors.New("build: --kernel, --initrd and --out are required")
	}
	if fi, err := os.Stat(*kernel); err != nil || fi.Size() > 0x2000000 {
		return fmt.Errorf("build: kernel %s missing or larger than 32 MiB", *kernel)
	}
	tmp, err := os.MkdirTemp("", "uki")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	osrel := filepath.Join(tmp, "osrel")
	cmd := filepath.Join(tmp, "cmdline")
	if err := os.WriteFile(osrel, []byte("NAME=bootgate agent\nID=bootgate\nPRETTY_NAME=\"bootgate agent\"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(cmd, []byte(*cmdline+"\x00"), 0o644); err != nil {
		return err
	}
	files := map[string]string{".osrel": osrel, ".cmdline": cmd, ".linux": *kernel, ".initrd": *initrd}
	var oargs []string
	for _, s := range sections {
		oargs = append(oargs, "--add-section", s.name+"="+files[s.name], "--change-section-vma", s.name+"="+s.vma)
	}
	oargs = append(oargs, *stub, *out)
	if b, err := exec.Command("objcopy", oargs...).CombinedOutput(); err != nil {
		return fmt.Errorf("objcopy: %v\n%s", err, b)
	}
	return zeroTimestamp(*out)
}

// zeroTimestamp clears the COFF header's TimeDateStamp, which objcopy sets
// to the build time, so that the UKI's Authenticode digest (its PCR 4
// measurement) depends on its inputs only.
func zeroTimestamp(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return fmt.Errorf("%s is not a PE image", path)
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if pe+12 > len(b) || !bytes.Equal(b[pe:pe+4], []byte("PE\x00\x00")) {
		return fmt.Errorf("%s has no PE header", path)
	}
	binary.LittleEndian.PutUint32(b[pe+8:], 0)
	return os.WriteFile(path, b, 0o644)
}

func sign(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	keyPath := fs.String("key", "", "PEM private key")
	certPath := fs.String("cert", "", "PEM certificate")
	in := fs.String("in", "", "PE image")
	out := fs.String("out", "", "signed PE image")
	replace := fs.Bool("replace", false, "remove the image's existing signatures first (the kernel verifies only the first one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, cert, err := loadSigner(*keyPath, *certPath)
	if err != nil {
		return err
	}
	img, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	if *replace {
		if img, err = stripSignatures(img); err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
	}
	pe, err := authenticode.Parse(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("parse %s: %w", *in, err)
	}
	if _, err := pe.Sign(key, cert); err != nil {
		return fmt.Errorf("sign %s: %w", *in, err)
	}
	return os.WriteFile(*out, pe.Bytes(), 0o644)
}

func loadSigner(keyPath, certPath string) (crypto.Signer, *x509.Certificate, error) {
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kblk, _ := pem.Decode(kb)
	cblk, _ := pem.Decode(cb)
	if kblk == nil || cblk == nil {
		return nil, nil, errors.New("key and certificate must be PEM")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(kblk.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(kblk.Bytes); err != nil {
			return nil, nil, fmt.Errorf("parse %s: %w", keyPath, err)
		}
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s is not a signing key", keyPath)
	}
	return signer, cert, nil
}

// stripSignatures removes the certificate table (the Authenticode
// signatures) from a PE32+ image: its data-directory entry is cleared and the
// table, which must be at the end of the file, is cut off.
func stripSignatures(b []byte) ([]byte, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, errors.New("not a PE image")
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	opt := pe + 24
	if opt+2 > len(b) || binary.LittleEndian.Uint16(b[opt:]) != 0x20b {
		return nil, errors.New("not a PE32+ image")
	}
	dir := opt + 112 + 4*8 // data directory 4: the certificate table
	if dir+8 > len(b) {
		return nil, errors.New("truncated optional header")
	}
	off := int(binary.LittleEndian.Uint32(b[dir:]))
	size := int(binary.LittleEndian.Uint32(b[dir+4:]))
	if off == 0 && size == 0 {
		return b, nil
	}
	if off+size != len(b) {
		return nil, fmt.Errorf("certificate table at %d+%d is not at the end of the %d-byte file", off, size, len(b))
	}
	out := bytes.Clone(b[:off])
	binary.LittleEndian.PutUint64(out[dir:], 0)
	return out, nil
}

// digest is the Authenticode SHA-256 of a PE image, hex.
func digest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	pe, err := authenticode.Parse(f)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", path, err)
	}
	return hex.EncodeToString(pe.Hash(crypto.SHA256)), nil
}

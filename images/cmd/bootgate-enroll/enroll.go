package main

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efivar"
	"github.com/foxboron/go-uefi/efivarfs"

	"github.com/bootgate/bootgate/images/keys"
)

// enroll writes db, KEK and PK, in that order, each signed by the key one level
// up (PK by itself), and checks the result.
func enroll(c *console, o options) error {
	pk, err := keys.Load(o.dir, keys.PK)
	if err != nil {
		return fmt.Errorf("load PK: %w", err)
	}
	kek, err := keys.Load(o.dir, keys.KEK)
	if err != nil {
		return fmt.Errorf("load KEK: %w", err)
	}
	dbCerts, err := loadCertDirs(o.dbDirs)
	if err != nil {
		return err
	}
	if len(dbCerts) == 0 {
		return fmt.Errorf("no db certificates (*.der) in %s", strings.Join(o.dbDirs, ", "))
	}

	e := efivarfs.NewFS().CheckImmutable().UnsetImmutable().Open()
	sb, setup, err := modes()
	if err != nil {
		return err
	}
	c.printf("firmware: SetupMode=%d SecureBoot=%d", setup, sb)
	if setup != 1 {
		return errors.New("firmware is not in setup mode (a PK is enrolled already); start from an empty variable store")
	}

	steps := []struct {
		v      efivar.Efivar
		certs  []*x509.Certificate
		signer *keys.Pair
	}{
		{efivar.Db, dbCerts, kek},
		{efivar.KEK, []*x509.Certificate{kek.Cert}, pk},
		{efivar.PK, []*x509.Certificate{pk.Cert}, pk},
	}
	for _, s := range steps {
		sigdb, err := keys.SignatureDatabase(s.certs...)
		if err != nil {
			return fmt.Errorf("%s: %w", s.v.Name, err)
		}
		c.printf("writing %s: %s (signed by %q)", s.v.Name, describe(s.certs), s.signer.Cert.Subject.CommonName)
		if err := e.WriteSignedUpdate(s.v, sigdb, s.signer.Key, s.signer.Cert); err != nil {
			return fmt.Errorf("write %s: %w", s.v.Name, err)
		}
	}

	// Read everything back from the firmware.
	for _, s := range steps {
		got, err := readCerts(e, s.v)
		if err != nil {
			return fmt.Errorf("read back %s: %w", s.v.Name, err)
		}
		if !sameCerts(got, s.certs) {
			return fmt.Errorf("read back %s: holds %s, want %s", s.v.Name, describe(got), describe(s.certs))
		}
		c.printf("verified %s: %s", s.v.Name, describe(got))
	}
	if setup, err = readU8(efivar.SetupMode); err != nil {
		return err
	}
	c.printf("firmware: SetupMode=%d (SecureBoot takes effect at the next boot)", setup)
	if setup != 0 {
		return fmt.Errorf("firmware still in setup mode after PK was enrolled (SetupMode=%d)", setup)
	}
	return nil
}

// loadCertDirs reads the *.der certificates of dirs, each directory's files in
// name order.
func loadCertDirs(dirs []string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("db directory: %w", err)
		}
		paths, err := filepath.Glob(filepath.Join(d, "*.der"))
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", d, err)
		}
		slices.Sort(paths)
		for _, p := range paths {
			c, err := keys.LoadCertDER(p)
			if err != nil {
				return nil, err
			}
			certs = append(certs, c)
		}
	}
	return certs, nil
}

// readCerts returns the X.509 certificates in a signature-database variable,
// or nil if the variable does not exist. Hash entries are an error: bootgate
// enrolls none.
func readCerts(e *efivarfs.Efivarfs, v efivar.Efivar) ([]*x509.Certificate, error) {
	var sigdb signature.SignatureDatabase
	if err := e.GetVar(v, &sigdb); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	certs, other, err := keys.DatabaseCerts(&sigdb)
	if err != nil {
		return nil, err
	}
	if other != 0 {
		return certs, fmt.Errorf("%d non-certificate entries", other)
	}
	return certs, nil
}

// readU8 returns the one-byte value of a variable such as SecureBoot.
// modes reads the firmware's SecureBoot and SetupMode variables.
func modes() (secureBoot, setupMode int, err error) {
	if secureBoot, err = readU8(efivar.SecureBoot); err != nil {
		return 0, 0, err
	}
	if setupMode, err = readU8(efivar.SetupMode); err != nil {
		return 0, 0, err
	}
	return secureBoot, setupMode, nil
}

func readU8(v efivar.Efivar) (int, error) {
	b, err := os.ReadFile(filepath.Join(efivarsDir, v.Name+"-"+v.GUID.Format()))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", v.Name, err)
	}
	if len(b) != 5 { // 4 bytes of attributes, 1 of value
		return 0, fmt.Errorf("read %s: %d bytes, want 5", v.Name, len(b))
	}
	return int(b[4]), nil
}

// sameCerts reports whether a and b hold the same certificates, in any order.
func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			return false
		}
	}
	return true
}

// describe lists certificates by subject CN and the start of their SHA-256.
func describe(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return "(empty)"
	}
	parts := make([]string, len(certs))
	for i, c := range certs {
		sum := sha256.Sum256(c.Raw)
		parts[i] = fmt.Sprintf("%q (sha256:%x)", c.Subject.CommonName, sum[:8])
	}
	return strings.Join(parts, ", ")
}

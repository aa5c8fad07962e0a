package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/foxboron/go-uefi/efivar"
	"github.com/foxboron/go-uefi/efivarfs"

	"github.com/bootgate/bootgate/images/keys"
)

// check reports the firmware's Secure Boot state and fails unless Secure Boot
// is enforced (SecureBoot=1, SetupMode=0) with the expected PK, KEK and db.
// Expectations come from the certificates present in o.dir and o.dbDirs; a
// missing file means "anything".
func check(c *console, o options) error {
	e := efivarfs.NewFS().Open()
	var problems []string

	sb, setup, err := modes()
	if err != nil {
		return err
	}
	c.printf("SecureBoot=%d SetupMode=%d", sb, setup)
	if sb != 1 {
		problems = append(problems, fmt.Sprintf("SecureBoot=%d", sb))
	}
	if setup != 0 {
		problems = append(problems, fmt.Sprintf("SetupMode=%d", setup))
	}
	if b, err := os.ReadFile("/sys/kernel/security/lockdown"); err == nil {
		c.printf("kernel lockdown: %s", strings.TrimSpace(string(b)))
	}

	wantPK, err := optionalCert(filepath.Join(o.dir, keys.PK.Name+".pem"))
	if err != nil {
		return err
	}
	wantKEK, err := optionalCert(filepath.Join(o.dir, keys.KEK.Name+".pem"))
	if err != nil {
		return err
	}
	wantDB, err := loadCertDirs(existingDirs(o.dbDirs))
	if err != nil {
		return err
	}

	for _, v := range []struct {
		v    efivar.Efivar
		want []*x509.Certificate
	}{
		{efivar.PK, wantPK},
		{efivar.KEK, wantKEK},
		{efivar.Db, wantDB},
		{efivar.Dbx, nil},
	} {
		got, err := readCerts(e, v.v)
		switch {
		case err != nil:
			c.printf("%s: %v", v.v.Name, err)
			if v.v.Name != efivar.Dbx.Name {
				problems = append(problems, fmt.Sprintf("%s: %v", v.v.Name, err))
			}
		case got == nil:
			c.printf("%s: absent", v.v.Name)
			if v.v.Name != efivar.Dbx.Name {
				problems = append(problems, v.v.Name+" absent")
			}
		default:
			c.printf("%s: %s", v.v.Name, describe(got))
			if v.want != nil && !sameCerts(got, v.want) {
				problems = append(problems, fmt.Sprintf("%s holds %s, want %s", v.v.Name, describe(got), describe(v.want)))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// optionalCert reads a PEM certificate, returning nil if the file is absent.
func optionalCert(path string) ([]*x509.Certificate, error) {
	cert, err := keys.LoadCertPEM(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{cert}, nil
}

// existingDirs returns the directories of dirs that exist.
func existingDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

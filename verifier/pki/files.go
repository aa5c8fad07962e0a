package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/internal/atomicfile"
)

// newCert makes an ECDSA P-256 key and a certificate for it from tmpl,
// signed by parent with parentKey, or self-signed when parent is nil.
func newCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial()
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// pemFile is a certificate (mode 0644) or a private key (mode 0600) to write.
type pemFile struct {
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// LockFile is the lock file of a CA directory: InitCA and InitOperators
// hold an exclusive flock(2) on it while they check for the CA and create
// it, so that appliances sharing the directory (replicas starting
// together) create one CA between them; LoadCA holds a shared one while
// it reads. Its content is nothing.
const LockFile = "init.lock"

// lockDir creates dir if needed and takes a flock of kind (unix.LOCK_EX or
// unix.LOCK_SH) on its LockFile, waiting for it; unlock releases it.
func lockDir(dir string, kind int) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := flock(f, kind); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing the last descriptor releases the lock
}

// rlockDir takes a shared flock on dir's LockFile if there is one that can
// be opened (a directory made before there were lock files, or a read-only
// copy, has none, and is read without it).
func rlockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		return func() {}, nil
	}
	if err := flock(f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

func flock(f *os.File, kind int) error {
	for {
		err := unix.Flock(int(f.Fd()), kind)
		if err != unix.EINTR {
			return err
		}
	}
}

// initOnce creates the files create makes in dir, in their order, unless
// marker, the last of them, whose presence says the set is complete,
// exists: under dir's exclusive lock, so that of several callers sharing
// dir (appliances starting together) one creates the set and the others
// find it. create is called only when the set is to be made.
func initOnce(dir, marker string, create func() ([]pemFile, error)) error {
	unlock, err := lockDir(dir, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	files, err := create()
	if err != nil {
		return err
	}
	if len(files) == 0 || files[len(files)-1].name != marker {
		return fmt.Errorf("%s must be written last", marker)
	}
	return writePEM(dir, files)
}

// writePEM writes files into dir, creating it, in their order, each
// under a temporary name first and then renamed into place, so that a
// reader sees each file whole or not at all; a crash leaves files written
// before it, never a torn one.
func writePEM(dir string, files []pemFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range files {
		blk, mode := &pem.Block{Type: "CERTIFICATE"}, os.FileMode(0o644)
		if f.key != nil {
			der, err := x509.MarshalPKCS8PrivateKey(f.key)
			if err != nil {
				return err
			}
			blk, mode = &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600
		} else {
			blk.Bytes = f.cert.Raw
		}
		if err := atomicfile.Write(filepath.Join(dir, f.name), pem.EncodeToMemory(blk), mode); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(dir)
}

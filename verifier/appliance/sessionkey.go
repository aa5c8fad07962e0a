package appliance

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/internal/atomicfile"
	"github.com/bootgate/bootgate/verifier/server"
)

// loadSessionKey reads the session-sealing key from path, or, when no file
// is there, makes one with a fresh random key. Whoever holds the key can
// mint sessions for any EK, so the file must be a regular file (not a
// symbolic link) owned by this process's user, that no one else may read
// or write, of exactly server.SessionKeySize bytes; anything else is
// refused. A new key is written whole to a temporary file, synced, and
// linked into place, which fails if another replica made the file first:
// replicas starting together on one shared path end with one key, and a
// crash never leaves a partial key file. An empty path gives nil: the
// server makes a key of its own.
func loadSessionKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	key, err := readSessionKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createSessionKey(path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return readSessionKey(path)
}

// createSessionKey writes a new random key at path, unless a file is there
// (an error wrapping fs.ErrExist).
func createSessionKey(path string) error {
	key := make([]byte, server.SessionKeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return fmt.Errorf("session key: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".session-key-*")
	if err != nil {
		return fmt.Errorf("session key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("session key %s: %w", path, err)
	}
	// CreateTemp made the file 0600. link(2) fails with EEXIST when path
	// exists: the first replica's key stays.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("session key: %w", err)
	}
	// A directory this process may not open (mode -wx) cannot be synced;
	// the key is in place all the same.
	if err := atomicfile.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("session key %s: sync the directory: %w", path, err)
	}
	return nil
}

// readSessionKey reads and checks an existing key file; fs.ErrNotExist when
// there is none.
func readSessionKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("session key %s: a symbolic link; name the file itself", path)
	}
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("session key %s: not a regular file", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("session key %s: owned by uid %d, not by this process's user (uid %d)", path, sys.Uid, os.Geteuid())
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("session key %s: mode %04o lets others read or write it; chmod 600", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, server.SessionKeySize+1))
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if len(b) != server.SessionKeySize {
		size := fmt.Sprintf("%d bytes", len(b))
		if len(b) > server.SessionKeySize {
			size = fmt.Sprintf("more than %d bytes", server.SessionKeySize)
		}
		return nil, fmt.Errorf("session key %s: %s, want %d (a file of random bytes: head -c %d /dev/urandom)", path, size, server.SessionKeySize, server.SessionKeySize)
	}
	return b, nil
}

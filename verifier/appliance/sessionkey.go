package appliance

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bootgate/bootgate/verifier/server"
)

// loadSessionKey reads the session-sealing key from path, or creates the
// file with a fresh random key (mode 0600, never replacing a file another
// replica made meanwhile) when it does not exist. Whoever holds the key
// can mint sessions for any EK, so a key file that others than its owner
// may read or write, or that is not exactly server.SessionKeySize bytes, is
// refused. An empty path gives nil: the server makes a key of its own.
func loadSessionKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	key := make([]byte, server.SessionKeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	// The key is written to a file of its own first and linked into
	// place complete: a replica starting at the same moment finds either
	// no file or the whole key, never an empty or partial one.
	err := createKeyFile(path, key)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("session key %s: %w", path, err)
	}
	f, err := os.Open(path)
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

// createKeyFile writes key to a new file in path's directory, syncs it,
// and links it to path, which must not exist (the error then wraps
// fs.ErrExist); the new file's own name is removed either way.
func createKeyFile(path string, key []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	_, werr := f.Write(key)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

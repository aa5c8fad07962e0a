package appliance

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, werr := f.Write(key)
		if werr == nil {
			werr = f.Sync()
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			_ = os.Remove(path)
			return nil, fmt.Errorf("session key %s: %w", path, werr)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("session key: %w", err)
	}
	f, err = os.Open(path)
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

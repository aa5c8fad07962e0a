package appliance

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bootgate/bootgate/verifier/server"
)

func TestSessionKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "session.key")

	// Replicas starting together on one shared file end with one key.
	keys := make([][]byte, 4)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := loadSessionKey(path)
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i, k := range keys {
		if len(k) != server.SessionKeySize || !bytes.Equal(k, keys[0]) {
			t.Fatalf("replica %d has key %x, replica 0 %x", i, k, keys[0])
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("made the key file with mode %04o, want 0600", st.Mode().Perm())
	}
	again, err := loadSessionKey(path)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("reloaded %x, %v; want the same key", again, err)
	}
	if k, err := loadSessionKey(""); k != nil || err != nil {
		t.Errorf("no path: %x, %v; want nil, nil", k, err)
	}

	for name, c := range map[string]struct {
		data []byte
		mode os.FileMode
		want string
	}{
		"group readable": {bytes.Repeat([]byte{1}, 32), 0o640, "chmod 600"},
		"short":          {bytes.Repeat([]byte{1}, 16), 0o600, "16 bytes, want 32"},
		"long":           {bytes.Repeat([]byte{1}, 64), 0o600, "more than 32 bytes, want 32"},
		"empty":          {nil, 0o600, "0 bytes"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, c.data, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		if _, err := loadSessionKey(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s key file: %v, want an error saying %q", name, err, c.want)
		}
	}
	if _, err := loadSessionKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as key file: %v", err)
	}
}

package appliance

import (
	"bytes"
	"fmt"
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
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSessionKey(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("a symbolic link as key file: %v", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other.key")
		if err := os.WriteFile(other, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := loadSessionKey(other); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("a key file another user owns: %v", err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".session-key-*")); len(left) > 0 {
		t.Errorf("temporary key files left behind: %v", left)
	}
}

// TestSessionKeyConcurrentFirstStarts: replicas starting together on one
// new path never read a key file half written; all get the same key.
func TestSessionKeyConcurrentFirstStarts(t *testing.T) {
	dir := t.TempDir()
	for round := range 200 {
		path := filepath.Join(dir, fmt.Sprintf("key-%d", round))
		keys := make([][]byte, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() { keys[i], errs[i] = loadSessionKey(path) })
		}
		wg.Wait()
		for i := range keys {
			if errs[i] != nil || !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("round %d, replica %d: key %x, %v; replica 0 %x", round, i, keys[i], errs[i], keys[0])
			}
		}
	}
}

package bootfiles

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/pin/tftp/v3"
)

func setup(t *testing.T) (*Files, []byte) {
	t.Helper()
	return setupWith(t, Limits{})
}

func setupWith(t *testing.T, lim Limits) (*Files, []byte) {
	t.Helper()
	dir := t.TempDir()
	uki := bytes.Repeat([]byte("UKI!"), 100000) // 400 KB: many TFTP blocks
	os.MkdirAll(filepath.Join(dir, "bootgate"), 0o755)
	os.WriteFile(filepath.Join(dir, "bootgate", "agent.efi"), uki, 0o644)
	os.WriteFile(filepath.Join(t.TempDir(), "secret"), []byte("no"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "passwd"))
	f, err := New(dir, lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, uki
}

func TestOpenStaysInside(t *testing.T) {
	f, _ := setup(t)
	for _, name := range []string{"../secret", "/../../etc/passwd", "passwd", "bootgate", "", "bootgate/../../x", "nothing"} {
		if file, err := f.Open(name); !errors.Is(err, ErrNotFound) {
			if file != nil {
				file.Close()
			}
			t.Errorf("%q: %v, want ErrNotFound", name, err)
		}
	}
	for _, name := range []string{"bootgate/agent.efi", "/bootgate/agent.efi", "bootgate\\agent.efi"} {
		file, err := f.Open(name)
		if err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		file.Close()
	}
}

func TestTFTPAndHTTP(t *testing.T) {
	f, uki := setup(t)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ServeTFTP(ctx, conn) }()
	defer func() { cancel(); <-done }()
	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	wt, err := c.Receive("bootgate/agent.efi", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), uki) {
		t.Fatalf("TFTP: %d bytes, want %d", got.Len(), len(uki))
	}
	if _, err := c.Receive("../secret", "octet"); err == nil {
		t.Error("TFTP served a file outside its directory")
	}
	if _, err := c.Send("bootgate/agent.efi", "octet"); err == nil {
		t.Error("TFTP accepted a write")
	}

	ts := httptest.NewServer(f)
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/bootgate/agent.efi")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(b, uki) {
		t.Fatalf("HTTP: %d bytes", len(b))
	}
	resp, err = ts.Client().Get(ts.URL + "/bootgate/../../secret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("HTTP outside: %s", resp.Status)
	}
}

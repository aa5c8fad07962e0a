// Package bootfiles serves the agent UKI (and whatever else a boot network
// needs) read-only over TFTP, for PXE clients, and HTTP, for UEFI HTTP boot.
// Names are resolved inside one directory: no absolute paths, no "..", no
// symbolic links out, regular files only.
package bootfiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// ErrNotFound covers every name that does not resolve to a served file.
var ErrNotFound = errors.New("no such boot file")

// Files serves the files under one directory.
type Files struct {
	root *os.Root
	log  *slog.Logger
}

// New serves dir.
func New(dir string, log *slog.Logger) (*Files, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("boot files: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Files{root: r, log: log}, nil
}

// Open opens a served file by its client-given name.
func (f *Files) Open(name string) (*os.File, error) {
	name = strings.TrimLeft(strings.ReplaceAll(name, "\\", "/"), "/")
	clean := path.Clean(name)
	if clean == "." || strings.HasPrefix(clean, "..") || !filepath.IsLocal(clean) {
		return nil, ErrNotFound
	}
	file, err := f.root.Open(clean) // os.Root refuses escapes, also through links
	if err != nil {
		return nil, ErrNotFound
	}
	if fi, err := file.Stat(); err != nil || !fi.Mode().IsRegular() {
		file.Close()
		return nil, ErrNotFound
	}
	return file, nil
}

// ServeTFTP answers read requests on conn until ctx ends (then it lets
// transfers in progress finish); writes are refused.
func (f *Files) ServeTFTP(ctx context.Context, conn net.PacketConn) error {
	s := tftp.NewServer(func(name string, rf io.ReaderFrom) error {
		file, err := f.Open(name)
		if err != nil {
			f.log.Warn("tftp: refused", "file", name)
			return err
		}
		defer file.Close()
		if fi, err := file.Stat(); err == nil {
			if t, ok := rf.(tftp.OutgoingTransfer); ok {
				t.SetSize(fi.Size())
			}
		}
		start := time.Now()
		n, err := rf.ReadFrom(file)
		f.log.Info("tftp: sent", "file", name, "bytes", n, "ms", time.Since(start).Milliseconds(), "err", err)
		return err
	}, nil)
	s.SetTimeout(5 * time.Second)
	stop := context.AfterFunc(ctx, s.Shutdown)
	defer stop()
	return s.Serve(conn)
}

// ServeHTTP serves GET and HEAD.
func (f *Files) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "read only", http.StatusMethodNotAllowed)
		return
	}
	file, err := f.Open(r.URL.Path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer file.Close()
	fi, _ := file.Stat()
	w.Header().Set("Content-Type", "application/efi")
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), file)
}

// Close releases the directory.
func (f *Files) Close() error { return f.root.Close() }

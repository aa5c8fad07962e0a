// Package bootfiles serves the agent UKI (and whatever else a boot network
// needs) read-only over TFTP, for PXE clients, and HTTP, for UEFI HTTP boot.
// Names are resolved inside one directory: no absolute paths, no "..", no
// symbolic links out, regular files only. What a peer can make either
// server hold (connections, transfers, time) is bounded by Limits.
package bootfiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/bootgate/bootgate/verifier/connlimit"
)

// ErrNotFound covers every name that does not resolve to a served file.
var ErrNotFound = errors.New("no such boot file")

// Files serves the files under one directory.
type Files struct {
	root *os.Root
	log  *slog.Logger
	lim  Limits

	httpSlots, tftpSlots                    *connlimit.Counter
	tftpAdmitted, tftpDropped, tftpReplaced atomic.Uint64
}

// New serves dir within lim (zero fields take their defaults); invalid
// limits are an error.
func New(dir string, lim Limits, log *slog.Logger) (*Files, error) {
	lim = lim.WithDefaults()
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	httpSlots, err := connlimit.NewCounter(lim.HTTPConns)
	if err != nil {
		return nil, err
	}
	tftpSlots, err := connlimit.NewCounter(lim.TFTPTransfers)
	if err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("boot files: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Files{root: r, log: log, lim: lim, httpSlots: httpSlots, tftpSlots: tftpSlots}, nil
}

// Limits returns the limits in force, defaults filled in.
func (f *Files) Limits() Limits { return f.lim }

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

// ServeHTTPOn serves the files over HTTP on ln until ctx ends, then closes
// the connections. Connections beyond the HTTP caps are closed as soon as
// they are accepted; the others are bounded by HTTPReadHeaderTimeout (also
// on a new connection), HTTPIdleTimeout between requests, TransferTime per
// response and 8 KB of request headers. It returns ln's error, if any.
func (f *Files) ServeHTTPOn(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           f,
		ReadHeaderTimeout: f.lim.HTTPReadHeaderTimeout,
		ReadTimeout:       2 * f.lim.HTTPReadHeaderTimeout,
		WriteTimeout:      f.lim.TransferTime,
		IdleTimeout:       f.lim.HTTPIdleTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	err := hs.Serve(connlimit.NewListener(ln, f.httpSlots, "boot-http", f.log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// HTTPShed returns the number of HTTP connections closed for the caps.
func (f *Files) HTTPShed() uint64 { return f.httpSlots.Shed() }

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

package appliance

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/bootgate/bootgate/verifier/bootfiles"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/connlimit"
)

// File descriptors. Every listener a peer can reach has caps, and the caps
// of all of them, with a reserve for everything else, must fit in the
// process's RLIMIT_NOFILE: a flood on the boot network then exhausts its
// own listener's caps, never the descriptors the attestation and admin APIs
// need.
const (
	// reservedFiles is kept for everything that is not a capped
	// connection: the store, the DHCP and netlink sockets, the metrics
	// listener (capped at metricsConns), webhook connections, certificates,
	// policy and boot files read at start, the runtime.
	reservedFiles = 256
	// maxFileLimit is the most the soft limit is raised to (the kernel's
	// default fs.nr_open).
	maxFileLimit = 1 << 20
)

// Default caps of the attestation and admin APIs, and the fixed caps of the
// metrics listener.
var (
	defaultAPIConns   = connlimit.Limits{Total: 1024, PerSource: 16}
	defaultAdminConns = connlimit.Limits{Total: 64, PerSource: 16}
	metricsConns      = connlimit.Limits{Total: 32, PerSource: 8}
)

// errFileBudget reports caps that need more descriptors than the limit.
var errFileBudget = errors.New("connection caps exceed the file descriptor limit")

// fileBudget is how the process's descriptors are shared: one per
// attestation or admin API connection, Boot.Descriptors() for the boot
// files, and reservedFiles.
type fileBudget struct {
	Limit      uint64 // RLIMIT_NOFILE soft limit
	API, Admin connlimit.Limits
	Boot       *bootfiles.Limits // nil without boot files
}

// Need is the most descriptors the caps let peers hold, with the reserve.
func (b fileBudget) Need() int {
	n := reservedFiles + b.API.Total
	if b.Admin.Total > 0 {
		n += b.Admin.Total
	}
	if b.Boot != nil {
		n += b.Boot.Descriptors()
	}
	return n
}

// planFiles fills in the default caps of cfg and checks that they fit in
// limit descriptors. Caps that do not fit, or that are invalid, are an
// error wrapping errFileBudget or naming the field.
func planFiles(cfg *config.Config, limit uint64) (fileBudget, error) {
	b := fileBudget{Limit: limit, API: connLimits(cfg.Conns, defaultAPIConns)}
	if err := b.API.Validate(); err != nil {
		return b, fmt.Errorf("conns: %w", err)
	}
	if cfg.Admin != nil {
		b.Admin = connLimits(cfg.Admin.Conns, defaultAdminConns)
		if err := b.Admin.Validate(); err != nil {
			return b, fmt.Errorf("admin.conns: %w", err)
		}
	}
	if c := cfg.BootFiles; c != nil {
		lim := bootfiles.Limits{
			HTTPConns:             connlimit.Limits{Total: c.HTTPConns.Max, PerSource: c.HTTPConns.PerSource},
			TFTPTransfers:         connlimit.Limits{Total: c.TFTPTransfers.Max, PerSource: c.TFTPTransfers.PerSource},
			HTTPReadHeaderTimeout: c.HTTPReadHeaderTimeout,
			HTTPIdleTimeout:       c.HTTPIdleTimeout,
			TransferTime:          c.TransferTime,
			TFTPTimeout:           c.TFTPTimeout,
			TFTPRetries:           c.TFTPRetries,
		}.WithDefaults()
		if err := lim.Validate(); err != nil {
			return b, fmt.Errorf("bootfiles: %w", err)
		}
		b.Boot = &lim
	}
	if need := b.Need(); uint64(need) > limit {
		boot := 0
		if b.Boot != nil {
			boot = b.Boot.Descriptors()
		}
		return b, fmt.Errorf("%w: they need %d (attestation API %d, admin API %d, boot files %d, reserve %d), the limit is %d: lower conns, admin.conns, bootfiles.http_conns or bootfiles.tftp_transfers, or raise the hard RLIMIT_NOFILE",
			errFileBudget, need, b.API.Total, b.Admin.Total, boot, reservedFiles, limit)
	}
	return b, nil
}

// connLimits fills the zero fields of c from d.
func connLimits(c config.ConnLimits, d connlimit.Limits) connlimit.Limits {
	return connlimit.Limits{Total: c.Max, PerSource: c.PerSource}.WithDefaults(d)
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (at most
// maxFileLimit; never lower) and returns the soft limit in force and the
// hard limit.
func raiseFileLimit() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if want := min(r.Max, maxFileLimit); r.Cur < want {
		raised := syscall.Rlimit{Cur: want, Max: r.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return r.Cur, r.Max, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", want, err)
		}
		r = raised
	}
	return r.Cur, r.Max, nil
}

package bootfiles

import (
	"fmt"
	"time"

	"github.com/bootgate/bootgate/verifier/connlimit"
)

// Limits bounds what peers on the boot network can make the boot-file
// servers spend. A zero field takes its default (DefaultLimits).
type Limits struct {
	// HTTPConns caps open HTTP connections, in total and per source
	// address; connections beyond them are closed as soon as accepted.
	HTTPConns connlimit.Limits
	// TFTPTransfers caps concurrent TFTP transfers, in total and per
	// source address; a read request beyond them is dropped unanswered
	// before anything is opened for it.
	TFTPTransfers connlimit.Limits
	// HTTPReadHeaderTimeout bounds the wait for a request's headers, on a
	// new connection and after each response (slowloris); the whole
	// request must arrive within twice this.
	HTTPReadHeaderTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive connection with no new request
	// for this long.
	HTTPIdleTimeout time.Duration
	// TransferTime bounds sending one file, over HTTP (the response's write
	// deadline) or TFTP (the transfer is aborted with an error packet).
	TransferTime time.Duration
	// TFTPTimeout is how long a TFTP transfer waits for each acknowledgement
	// before it sends the block again.
	TFTPTimeout time.Duration
	// TFTPRetries is how many times an unacknowledged TFTP block (or
	// option acknowledgement) is sent again before the transfer is given
	// up (1 to 10): a read request that is never acknowledged gets 1 +
	// TFTPRetries copies of one block, and nothing more.
	TFTPRetries int
}

// DefaultLimits are the limits of a zero Limits: 256 HTTP connections (8
// per source), 64 TFTP transfers (2 per source), 5 s for request headers,
// 15 s idle, 5 min per file, 3 s per TFTP acknowledgement, 2 TFTP retries.
// They need at most DefaultLimits.Descriptors() = 643 file descriptors.
var DefaultLimits = Limits{
	HTTPConns:             connlimit.Limits{Total: 256, PerSource: 8},
	TFTPTransfers:         connlimit.Limits{Total: 64, PerSource: 2},
	HTTPReadHeaderTimeout: 5 * time.Second,
	HTTPIdleTimeout:       15 * time.Second,
	TransferTime:          5 * time.Minute,
	TFTPTimeout:           3 * time.Second,
	TFTPRetries:           2,
}

// maxTFTPRetries bounds TFTPRetries: more only multiplies what a spoofed
// read request makes the appliance send.
const maxTFTPRetries = 10

// WithDefaults returns l with each zero field set to its DefaultLimits
// value; a zero per-source cap becomes the default or the total, whichever
// is lower.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	l.HTTPConns = l.HTTPConns.WithDefaults(d.HTTPConns)
	l.TFTPTransfers = l.TFTPTransfers.WithDefaults(d.TFTPTransfers)
	for _, p := range []struct{ v, def *time.Duration }{
		{&l.HTTPReadHeaderTimeout, &d.HTTPReadHeaderTimeout},
		{&l.HTTPIdleTimeout, &d.HTTPIdleTimeout},
		{&l.TransferTime, &d.TransferTime},
		{&l.TFTPTimeout, &d.TFTPTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if l.TFTPRetries == 0 {
		l.TFTPRetries = d.TFTPRetries
	}
	return l
}

// Validate reports a cap or a duration that is not positive, a per-source
// cap above its total, or TFTPRetries outside 1 to 10.
func (l Limits) Validate() error {
	if err := l.HTTPConns.Validate(); err != nil {
		return fmt.Errorf("boot files over HTTP: %w", err)
	}
	if err := l.TFTPTransfers.Validate(); err != nil {
		return fmt.Errorf("boot files over TFTP: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HTTP read-header timeout", l.HTTPReadHeaderTimeout},
		{"HTTP idle timeout", l.HTTPIdleTimeout},
		{"transfer time", l.TransferTime},
		{"TFTP timeout", l.TFTPTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("boot files: %s %v is not positive", d.name, d.v)
		}
	}
	if l.TFTPRetries < 1 || l.TFTPRetries > maxTFTPRetries {
		return fmt.Errorf("boot files: TFTP retries %d not within 1 to %d", l.TFTPRetries, maxTFTPRetries)
	}
	return nil
}

// Descriptors is the most file descriptors the boot-file servers hold under
// l: the directory, one listening socket per protocol, and a socket and the
// open file per HTTP connection and per TFTP transfer.
func (l Limits) Descriptors() int {
	return 3 + 2*l.HTTPConns.Total + 2*l.TFTPTransfers.Total
}

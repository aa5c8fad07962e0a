package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bootgate/bootgate/internal/pgcluster"
)

// storeChoice is the -store flag: the appliance's store in the demo.
type storeChoice struct {
	postgres bool // PostgreSQL, a throwaway cluster; otherwise SQLite
	// explicit: -store postgres was given, so a missing server is an error
	// rather than a fall-back to SQLite.
	explicit bool
	bin      string // initdb's and postgres's directory; "" finds the installed server
}

func parseStore(v string, explicit bool) (storeChoice, error) {
	switch v {
	case "postgres":
		return storeChoice{postgres: true, explicit: explicit}, nil
	case "sqlite":
		return storeChoice{}, nil
	}
	return storeChoice{}, fmt.Errorf("-store: %q is neither postgres nor sqlite", v)
}

// demoStore is the store the demo's appliances run on.
type demoStore struct {
	pg  *pgcluster.Cluster // nil: SQLite
	dir string             // the cluster's temporary directory
}

// startStore starts the throwaway PostgreSQL cluster the demo's appliances
// keep their state in, fsync on as an appliance's database would run, with
// its log at logPath, which stays with the demo's other logs. The cluster's
// data and socket are in a temporary directory under /tmp: the socket's
// path must be short, and when the demo runs as root the server runs as
// the postgres user, whom every directory above its own must let through.
// When no server is installed and PostgreSQL was not asked for by name,
// startStore says so and returns a SQLite store: the demo shows the same
// with either.
func startStore(stdout io.Writer, c storeChoice, logPath string) (*demoStore, error) {
	if !c.postgres {
		return &demoStore{}, nil
	}
	dir, err := os.MkdirTemp("/tmp", "bgdemo-pg")
	if err != nil {
		return nil, err
	}
	pg, err := pgcluster.Start(dir, pgcluster.Options{Fsync: true, Log: logPath, Bin: c.bin})
	if err != nil {
		_ = os.RemoveAll(dir)
		if errors.Is(err, pgcluster.ErrUnavailable) && !c.explicit {
			fmt.Fprintf(stdout, "==> %v: the appliance falls back to SQLite (-store sqlite chooses it without this note)\n", err)
			return &demoStore{}, nil
		}
		return nil, fmt.Errorf("start PostgreSQL for the demo (-store sqlite runs without it): %w", err)
	}
	return &demoStore{pg: pg, dir: dir}, nil
}

// stop stops the cluster, if any, and removes its data; the log stays.
func (s *demoStore) stop(stdout io.Writer) {
	if s.pg == nil {
		return
	}
	if err := errors.Join(s.pg.Stop(), os.RemoveAll(s.dir)); err != nil {
		fmt.Fprintf(stdout, "demo: stop PostgreSQL: %v\n", err)
	}
}

// describe names the store for the demo's summary; sqlite is the
// appliance's SQLite file.
func (s *demoStore) describe(sqlite string) string {
	if s.pg == nil {
		return "SQLite, " + sqlite
	}
	return "PostgreSQL, a throwaway cluster (fsync on, Unix socket only; server log " + s.pg.Log() + ")"
}

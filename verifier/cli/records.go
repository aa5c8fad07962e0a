package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/store"
)

// storeFlags locate the store: --store, or the store named by --config.
type storeFlags struct {
	config, store string
	json          bool
}

func (f *storeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.config, "config", "", "appliance configuration naming the store")
	cmd.Flags().StringVar(&f.store, "store", "", "SQLite store file (overrides --config)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
}

func (f *storeFlags) open() (*store.SQLite, error) {
	path := f.store
	if path == "" {
		if f.config == "" {
			return nil, &ExitError{Code: ExitBadInput, Err: fmt.Errorf("give --config or --store")}
		}
		cfg, err := config.Load(f.config)
		if err != nil {
			return nil, &ExitError{Code: ExitBadInput, Err: err}
		}
		path = cfg.Store
	}
	return store.OpenSQLite(path)
}

func (e *env) hostsCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts the appliance has seen, with their state and last verdict",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := f.open()
			if err != nil {
				return err
			}
			defer st.Close()
			hosts, err := st.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return e.printJSON(hosts)
			}
			tw := e.table()
			fmt.Fprintln(tw, "HOST\tSTATE\tLAST VERDICT\tLAST SEEN\tATTESTATION\tEK")
			for _, h := range hosts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", h.ID, h.State, h.LastVerdict, h.LastSeen.Format(time.RFC3339), h.LastAttestationID, h.EKType)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func (e *env) incidentsCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "incidents",
		Short: "List incidents opened by failed attestations, with their reasons",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := f.open()
			if err != nil {
				return err
			}
			defer st.Close()
			incs, err := st.Incidents(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return e.printJSON(incs)
			}
			tw := e.table()
			fmt.Fprintln(tw, "INCIDENT\tHOST\tSTATE\tFAILURES\tOPENED\tREASONS")
			for _, in := range incs {
				var rules []string
				for _, r := range in.Reasons {
					if !slices.Contains(rules, r.Rule) {
						rules = append(rules, r.Rule)
					}
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", in.ID, in.HostID, in.State, in.Failures, in.Opened.Format(time.RFC3339), strings.Join(rules, ", "))
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

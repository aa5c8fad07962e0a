package cli

import (
	"context"
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

// listCmd makes a command that lists records from the store, as a table or
// as JSON.
func listCmd[T any](e *env, use, short string, fetch func(*store.SQLite, context.Context) ([]T, error), header string, row func(T) string) *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := f.open()
			if err != nil {
				return err
			}
			defer st.Close()
			items, err := fetch(st, cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return e.printJSON(items)
			}
			tw := e.table()
			fmt.Fprintln(tw, header)
			for _, it := range items {
				fmt.Fprintln(tw, row(it))
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func (e *env) hostsCmd() *cobra.Command {
	return listCmd(e, "hosts", "List the hosts the appliance has seen, with their state and last verdict",
		(*store.SQLite).Hosts,
		"HOST\tSTATE\tLAST VERDICT\tLAST SEEN\tATTESTATION\tEK",
		func(h store.Host) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s", h.ID, h.State, h.LastVerdict, h.LastSeen.Format(time.RFC3339), h.LastAttestationID, h.EKType)
		})
}

func (e *env) incidentsCmd() *cobra.Command {
	return listCmd(e, "incidents", "List incidents opened by failed attestations, with their reasons",
		(*store.SQLite).Incidents,
		"INCIDENT\tHOST\tSTATE\tFAILURES\tOPENED\tREASONS",
		func(in store.Incident) string {
			var rules []string
			for _, r := range in.Reasons {
				if !slices.Contains(rules, r.Rule) {
					rules = append(rules, r.Rule)
				}
			}
			return fmt.Sprintf("%d\t%s\t%s\t%d\t%s\t%s", in.ID, in.HostID, in.State, in.Failures, in.Opened.Format(time.RFC3339), strings.Join(rules, ", "))
		})
}

func (e *env) quarantineCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "quarantine HOST",
		Short: "Quarantine a host: forwarding stops at the next gateway sync, DHCP gives it a quarantine lease",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.open()
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Quarantine(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "host %s quarantined; it is admitted again only by a passing attestation\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

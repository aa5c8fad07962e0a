package cli

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/store"
)

// storeFlags locate the store: --store, or the store named by --config.
type storeFlags struct {
	config, store string
	json          bool
}

func (f *storeFlags) add(cmd *cobra.Command) { f.addTo(cmd.Flags()) }

func (f *storeFlags) addTo(fs *pflag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "appliance configuration naming the store")
	fs.StringVar(&f.store, "store", "", "SQLite store file (overrides --config)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
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
			if err := st.Quarantine(cmd.Context(), args[0], actor); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "host %s quarantined; it is admitted again only by a passing attestation\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// actor names the operator in the audit log.
var actor = func() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "operator"
}()

func (e *env) incidentCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "incident", Short: "Work an incident: show, export, assign, note, investigate, remediate"}
	var f storeFlags
	f.addTo(cmd.PersistentFlags())
	withIncident := func(use, short string, nargs int, run func(cmd *cobra.Command, st *store.SQLite, id int64, args []string) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(nargs),
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil {
					return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("incident ID %q: %w", args[0], err)}
				}
				st, err := f.open()
				if err != nil {
					return err
				}
				defer st.Close()
				return run(cmd, st, id, args[1:])
			},
		}
	}
	act := func(kind string) func(cmd *cobra.Command, st *store.SQLite, id int64, args []string) error {
		return func(cmd *cobra.Command, st *store.SQLite, id int64, args []string) error {
			text := strings.Join(args, " ")
			if err := st.Act(cmd.Context(), id, actor, store.IncidentAction{Kind: kind, Text: text}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "incident %d: %s recorded by %s\n", id, kind, actor)
			return nil
		}
	}
	show := withIncident("show ID", "Show an incident, its history and its latest reasons", 1, func(cmd *cobra.Command, st *store.SQLite, id int64, _ []string) error {
		in, notes, err := st.Incident(cmd.Context(), id)
		if err != nil {
			return err
		}
		if f.json {
			return e.printJSON(map[string]any{"incident": in, "history": notes})
		}
		fmt.Fprintf(e.stdout, "incident %d  host %s  state %s  failures %d  assignee %q\nopened %s  updated %s\n", in.ID, in.HostID, in.State, in.Failures, in.Assignee, in.Opened.Format(time.RFC3339), in.Updated.Format(time.RFC3339))
		for _, r := range in.Reasons {
			fmt.Fprintf(e.stdout, "  - %s (event %d): %s\n", r.Rule, r.Event, r.Detail)
		}
		for _, n := range notes {
			fmt.Fprintf(e.stdout, "  %s %s %s: %s\n", n.Time.Format(time.RFC3339), n.Author, n.Kind, n.Text)
		}
		return nil
	})
	export := withIncident("export ID FILE", "Write the incident's evidence bundle (JSON: incident, history, every attestation with its evidence)", 2, func(cmd *cobra.Command, st *store.SQLite, id int64, args []string) error {
		in, notes, err := st.Incident(cmd.Context(), id)
		if err != nil {
			return err
		}
		ids, err := st.IncidentAttestations(cmd.Context(), id)
		if err != nil {
			return err
		}
		var atts []*store.Attestation
		for _, aid := range ids {
			a, err := st.Attestation(cmd.Context(), aid)
			if err != nil {
				return err
			}
			atts = append(atts, a)
		}
		bundle := map[string]any{"incident": in, "history": notes, "attestations": atts}
		// A readable diff of the latest failing log against the host's last
		// passing log, where there is one.
		if last, pass := latestLogs(cmd.Context(), st, in.HostID, atts); last != nil && pass != nil {
			bundle["diff_against_last_pass"] = eventlog.Diff(pass, last)
		}
		b, err := json.MarshalIndent(bundle, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(args[0], b, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "incident %d: evidence bundle with %d attestations written to %s\n", id, len(atts), args[0])
		return nil
	})
	cmd.AddCommand(show, export,
		withIncident("assign ID WHO", "Assign the incident", 2, act("assign")),
		withIncident("note ID TEXT", "Add a note to the incident's history (quote the text)", 2, act("note")),
		withIncident("investigate ID", "Mark an open incident as under investigation", 1, act("investigate")),
		withIncident("remediate ID POSTMORTEM", "Mark the incident remediated (a post-mortem is required); the host rejoins after a fresh passing attestation", 2, act("remediate")),
	)
	return cmd
}

func (e *env) auditCmd() *cobra.Command {
	return listCmd(e, "audit", "Show the append-only audit log of operator actions",
		(*store.SQLite).Audit,
		"ID\tTIME\tACTOR\tACTION\tTARGET\tDETAIL",
		func(a store.AuditEntry) string {
			return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s", a.ID, a.Time.Format(time.RFC3339), a.Actor, a.Action, a.Target, a.Detail)
		})
}

// latestLogs returns the boot states of the latest attestation in atts and of
// the host's last passing attestation before it (read from the stored logs
// with their stored PCR values), or nils.
func latestLogs(ctx context.Context, st *store.SQLite, hostID string, atts []*store.Attestation) (last, pass *eventlog.BootState) {
	if len(atts) == 0 {
		return nil, nil
	}
	state := func(a *store.Attestation) *eventlog.BootState {
		bank := eventlog.Bank{Hash: crypto.SHA256, PCRs: map[int][]byte{}}
		for _, p := range a.Evidence.PCRs {
			bank.PCRs[p.Index] = p.Digest
		}
		s, err := eventlog.Verify(a.Evidence.EventLog, bank)
		if err != nil {
			return nil
		}
		return s
	}
	latest := atts[len(atts)-1]
	for id := latest.ID - 1; id > 0; id-- {
		a, err := st.Attestation(ctx, id)
		if err != nil || a.HostID != hostID || a.Verdict != "pass" {
			continue
		}
		return state(latest), state(a)
	}
	return nil, nil
}

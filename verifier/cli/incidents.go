package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/store"
)

func parseIncidentID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, &ExitError{Code: ExitBadInput, Err: fmt.Errorf("incident ID %q is not a number", s)}
	}
	return id, nil
}

func (e *env) incidentsListCmd(use string) *cobra.Command {
	var (
		o     output
		q     store.IncidentQuery
		all   bool
		limit int
	)
	cmd := e.clientCmd(&cobra.Command{Use: use, Short: "List incidents, newest first, with their failed rules", Args: cobra.NoArgs},
		func(ctx context.Context, c *admin.Client, _ []string) error {
			q.Limit = min(limit, admin.MaxLimit)
			list, next, err := pages(all, q.Before, func(before int64) ([]store.Incident, int64, error) {
				q.Before = before
				page, err := c.Incidents(ctx, q)
				if err != nil {
					return nil, 0, err
				}
				return page.Incidents, page.Next, nil
			})
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(admin.IncidentPage{Incidents: list, Next: next})
			}
			tw := e.table()
			fmt.Fprintln(tw, "INCIDENT\tHOST\tSTATE\tFAILURES\tOPENED\tASSIGNEE\tREASONS")
			for _, in := range list {
				assignee := in.Assignee
				if assignee == "" {
					assignee = "-"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", in.ID, textsafe.Escape(in.HostID), textsafe.Escape(in.State), in.Failures, when(in.Opened), textsafe.Escape(assignee), ruleList(in.Reasons))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != 0 {
				fmt.Fprintf(e.stderr, "more incidents: --before %d, or --all\n", next)
			}
			return nil
		})
	cmd.Flags().StringVar(&q.State, "state", "", "only incidents in this state (open, investigating, remediated, closed, unresolved)")
	cmd.Flags().StringVar(&q.Host, "host", "", "only this host's incidents")
	cmd.Flags().Int64Var(&q.Before, "before", 0, "start below this incident ID (paging)")
	cmd.Flags().IntVar(&limit, "limit", 100, "incidents per page")
	cmd.Flags().BoolVar(&all, "all", false, "follow every page")
	o.add(cmd)
	return cmd
}

func (e *env) incidentShowCmd() *cobra.Command {
	var o output
	cmd := e.clientCmd(&cobra.Command{Use: "show ID", Short: "Show an incident: failed rules with their events, the event-log diff, evidence and history", Args: cobra.ExactArgs(1)},
		func(ctx context.Context, c *admin.Client, args []string) error {
			id, err := parseIncidentID(args[0])
			if err != nil {
				return err
			}
			d, err := c.Incident(ctx, id)
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(d)
			}
			in := d.Incident
			fmt.Fprintf(e.stdout, "incident %d  host %s  state %s  failures %d  assignee %q\nopened %s  updated %s  attestations %v\n",
				in.ID, textsafe.Escape(in.HostID), textsafe.Escape(in.State), in.Failures, in.Assignee, when(in.Opened), when(in.Updated), d.Attestations)
			if l := d.Latest; l != nil {
				fmt.Fprintf(e.stdout, "latest failure: attestation %d at %s, policy %s (%s)\n", l.AttestationID, l.Time, textsafe.Escape(l.PolicyName), textsafe.Escape(l.PolicyDigest))
				fmt.Fprintf(e.stdout, "EK %s %s, issued by %s; event log %d bytes, %d events\n", textsafe.Escape(l.EKType), textsafe.Escape(l.EKSubject), textsafe.Escape(l.EKIssuer), l.EventLogBytes, l.EventLogEvents)
				if t := l.TPM; t != (store.TPM{}) {
					fw := t.Firmware
					if fw == "" {
						fw = "not proven"
					}
					fmt.Fprintf(e.stdout, "TPM %s %s (version %s), firmware %s\n", textsafe.Escape(t.Manufacturer), textsafe.Escape(t.Model), textsafe.Escape(t.Version), textsafe.Escape(fw))
				}
				fmt.Fprintln(e.stdout, "failed rules:")
				for _, r := range l.Reasons {
					if r.Event > 0 {
						fmt.Fprintf(e.stdout, "  - %s (event %d): %s\n", textsafe.Escape(r.Rule), r.Event, textsafe.Escape(r.Detail))
					} else {
						fmt.Fprintf(e.stdout, "  - %s: %s\n", textsafe.Escape(r.Rule), textsafe.Escape(r.Detail))
					}
				}
			}
			switch d.Diff.Against {
			case "last_pass":
				fmt.Fprintf(e.stdout, "diff against the host's last pass (attestation %d):\n", d.Diff.AttestationID)
			case "reference":
				fmt.Fprintf(e.stdout, "diff against %s, the known-good log policy %s was learned from:\n", textsafe.Escape(d.Diff.Reference), textsafe.Escape(d.Diff.PolicyName))
			case "policy":
				fmt.Fprintf(e.stdout, "departures from policy %s (%s):\n", textsafe.Escape(d.Diff.PolicyName), textsafe.Escape(d.Diff.PolicyDigest))
			}
			for _, line := range d.Diff.Lines {
				fmt.Fprintf(e.stdout, "  %s\n", textsafe.Escape(line))
			}
			if d.Diff.Note != "" {
				fmt.Fprintf(e.stdout, "  (%s)\n", textsafe.Escape(d.Diff.Note))
			}
			fmt.Fprintln(e.stdout, "history:")
			for _, n := range d.History {
				fmt.Fprintf(e.stdout, "  %s %s %s: %s\n", when(n.Time), textsafe.Escape(n.Author), textsafe.Escape(n.Kind), textsafe.Escape(n.Text))
			}
			return nil
		})
	o.add(cmd)
	return cmd
}

func (e *env) incidentExportCmd() *cobra.Command {
	return e.clientCmd(&cobra.Command{Use: "export ID FILE",
		Short: "Write the incident's evidence bundle (JSON: every failed attestation with raw log, quote, PCRs and EK certificate, the last pass, the policy, the diff, the history)",
		Args:  cobra.ExactArgs(2)},
		func(ctx context.Context, c *admin.Client, args []string) error {
			id, err := parseIncidentID(args[0])
			if err != nil {
				return err
			}
			n, err := writeBundleFile(ctx, c, id, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "incident %d: evidence bundle (%d bytes) written to %s\n", id, n, args[1])
			return nil
		})
}

// writeBundleFile streams incident id's evidence bundle into the file
// path (mode 0600) through a temporary file beside it, renamed over path
// only once the whole bundle is in: a transfer that fails leaves path as
// it was.
func writeBundleFile(ctx context.Context, c *admin.Client, id int64, path string) (n int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".bootgate-bundle-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if n, err = c.WriteBundle(ctx, id, f); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	return n, os.Rename(f.Name(), path)
}

func (e *env) incidentsCmd() *cobra.Command {
	cmd := e.incidentsListCmd("incidents")
	cmd.Short = "List incidents (or: incidents list|show|export)"
	cmd.AddCommand(e.incidentsListCmd("list"), e.incidentShowCmd(), e.incidentExportCmd())
	return cmd
}

func (e *env) incidentCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "incident", Short: "Work an incident: show, export, assign, note, investigate, remediate"}
	act := func(use, kind, short string, nargs int) *cobra.Command {
		return e.clientCmd(&cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(nargs)},
			func(ctx context.Context, c *admin.Client, args []string) error {
				id, err := parseIncidentID(args[0])
				if err != nil {
					return err
				}
				if err := c.Act(ctx, id, admin.Action{Kind: kind, Text: strings.Join(args[1:], " ")}); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "incident %d: %s recorded\n", id, kind)
				return nil
			})
	}
	cmd.AddCommand(e.incidentShowCmd(), e.incidentExportCmd(),
		act("assign ID WHO", "assign", "Assign the incident", 2),
		act("note ID TEXT", "note", "Add a note to the incident's history (quote the text)", 2),
		act("investigate ID", "investigate", "Mark an open incident as under investigation", 1),
		act("remediate ID POSTMORTEM", "remediate", "Mark the incident remediated (a post-mortem is required); the host rejoins after a fresh passing attestation", 2),
	)
	return cmd
}

func (e *env) auditCmd() *cobra.Command {
	var (
		o      output
		before int64
		limit  int
	)
	cmd := e.clientCmd(&cobra.Command{Use: "audit", Short: "Show the append-only audit log of operator actions, newest first", Args: cobra.NoArgs},
		func(ctx context.Context, c *admin.Client, _ []string) error {
			page, err := c.Audit(ctx, before, limit)
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(page)
			}
			tw := e.table()
			fmt.Fprintln(tw, "ID\tTIME\tOPERATOR\tACTION\tTARGET\tDETAIL")
			for _, a := range page.Entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", a.ID, when(a.Time), textsafe.Escape(a.Actor), textsafe.Escape(a.Action), textsafe.Escape(a.Target), textsafe.Escape(a.Detail))
			}
			return tw.Flush()
		})
	cmd.Flags().Int64Var(&before, "before", 0, "start below this entry ID (paging)")
	cmd.Flags().IntVar(&limit, "limit", 100, "entries per page")
	o.add(cmd)
	return cmd
}

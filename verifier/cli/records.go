package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// The operator commands talk to the appliance's admin API over mTLS with the
// operator's certificate, never to its store: the appliance checks who they
// are and writes what they do to its audit log.

// defaultProfile is where `bootgate operator add --out` is expected to have
// put the operator's profile, unless --operator or BOOTGATE_OPERATOR says
// otherwise.
func defaultProfile() string {
	if p := os.Getenv("BOOTGATE_OPERATOR"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "bootgate", "operator.yaml")
}

func (e *env) client() (*admin.Client, error) {
	if e.profile == "" {
		return nil, &ExitError{Code: ExitBadInput, Err: fmt.Errorf("give --operator PROFILE (written by `bootgate operator add`)")}
	}
	p, err := admin.LoadProfile(e.profile)
	if err != nil {
		return nil, &ExitError{Code: ExitBadInput, Err: err}
	}
	c, err := admin.NewClient(p)
	if err != nil {
		return nil, &ExitError{Code: ExitBadInput, Err: err}
	}
	return c, nil
}

// pages reads one page from cursor, or with all every page after it too,
// and returns the items and the cursor of the page that follows (zero when
// none does).
func pages[T any, C comparable](all bool, cursor C, fetch func(C) ([]T, C, error)) ([]T, C, error) {
	var items []T
	var zero C
	for {
		page, next, err := fetch(cursor)
		if err != nil {
			return nil, zero, err
		}
		items = append(items, page...)
		if !all || next == zero {
			return items, next, nil
		}
		cursor = next
	}
}

// output prints v as JSON with --json, or as a table otherwise.
type output struct{ json bool }

func (o *output) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
}

// clientCmd makes a command that calls the admin API.
func (e *env) clientCmd(cmd *cobra.Command, run func(ctx context.Context, c *admin.Client, args []string) error) *cobra.Command {
	cmd.RunE = func(cc *cobra.Command, args []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		return run(cc.Context(), c, args)
	}
	return cmd
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func (e *env) statusCmd() *cobra.Command {
	var o output
	cmd := e.clientCmd(&cobra.Command{Use: "status", Short: "Show the fleet at a glance: hosts, incidents and leases by state", Args: cobra.NoArgs},
		func(ctx context.Context, c *admin.Client, _ []string) error {
			s, err := c.Summary(ctx)
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(s)
			}
			fmt.Fprintf(e.stdout, "hosts      admitted %d  quarantined %d\n", s.Hosts[store.HostAdmitted], s.Hosts[store.HostQuarantined])
			fmt.Fprintf(e.stdout, "incidents  open %d  investigating %d  remediated %d  closed %d\n",
				s.Incidents[store.IncidentOpen], s.Incidents[store.IncidentInvestigating], s.Incidents[store.IncidentRemediated], s.Incidents[store.IncidentClosed])
			if s.Leases != nil {
				fmt.Fprintf(e.stdout, "leases     production %d  quarantine %d\n", s.Leases["production"], s.Leases["quarantine"])
			}
			return nil
		})
	o.add(cmd)
	return cmd
}

func (e *env) hostsCmd() *cobra.Command {
	var (
		o     output
		q     store.HostQuery
		all   bool
		limit int
	)
	cmd := e.clientCmd(&cobra.Command{Use: "hosts", Short: "List hosts with their state, last attestation and lease", Args: cobra.NoArgs},
		func(ctx context.Context, c *admin.Client, _ []string) error {
			q.Limit = min(limit, admin.MaxLimit)
			hosts, next, err := pages(all, q.After, func(after string) ([]admin.HostView, string, error) {
				q.After = after
				page, err := c.Hosts(ctx, q)
				if err != nil {
					return nil, "", err
				}
				return page.Hosts, page.Next, nil
			})
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(admin.HostPage{Hosts: hosts, Next: next})
			}
			tw := e.table()
			fmt.Fprintln(tw, "HOST\tSTATE\tLAST VERDICT\tLAST SEEN\tATTESTATION\tLEASE\tEK")
			for _, h := range hosts {
				lease := "-"
				if h.Lease != nil {
					lease = h.Lease.IP + " (" + h.Lease.Pool + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", textsafe.Escape(h.ID), textsafe.Escape(h.State), textsafe.Escape(h.LastVerdict), when(h.LastSeen), h.LastAttestationID, textsafe.Escape(lease), textsafe.Escape(h.EKType))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(e.stderr, "more hosts: --after %s, or --all\n", textsafe.Escape(next))
			}
			return nil
		})
	cmd.Flags().StringVar(&q.State, "state", "", "only hosts in this state (admitted, quarantined)")
	cmd.Flags().StringVar(&q.Prefix, "prefix", "", "only hosts whose ID starts with this")
	cmd.Flags().StringVar(&q.After, "after", "", "start after this host ID (paging)")
	cmd.Flags().IntVar(&limit, "limit", 100, "hosts per page")
	cmd.Flags().BoolVar(&all, "all", false, "follow every page")
	o.add(cmd)
	return cmd
}

func (e *env) hostCmd() *cobra.Command {
	var o output
	show := e.clientCmd(&cobra.Command{Use: "show HOST", Short: "Show a host: state, lease, recent attestations and incidents", Args: cobra.ExactArgs(1)},
		func(ctx context.Context, c *admin.Client, args []string) error {
			h, err := c.Host(ctx, args[0])
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(h)
			}
			fmt.Fprintf(e.stdout, "host %s  state %s  EK %s %s\nfirst seen %s  last seen %s\n", textsafe.Escape(h.ID), textsafe.Escape(h.State), textsafe.Escape(h.EKType), textsafe.Escape(h.EKIssuer), when(h.FirstSeen), when(h.LastSeen))
			if h.Lease != nil {
				fmt.Fprintf(e.stdout, "lease %s (%s pool) MAC %s until %s\n", textsafe.Escape(h.Lease.IP), textsafe.Escape(h.Lease.Pool), textsafe.Escape(h.Lease.MAC), when(h.Lease.Expires))
			}
			fmt.Fprintln(e.stdout, "attestations:")
			for _, a := range h.Attestations {
				fmt.Fprintf(e.stdout, "  %d  %s  %s  %s\n", a.ID, when(a.Time), textsafe.Escape(a.Verdict), ruleList(a.Reasons))
			}
			fmt.Fprintln(e.stdout, "incidents:")
			for _, in := range h.Incidents {
				fmt.Fprintf(e.stdout, "  %d  %s  %d failures  opened %s\n", in.ID, textsafe.Escape(in.State), in.Failures, when(in.Opened))
			}
			return nil
		})
	o.add(show)
	cmd := &cobra.Command{Use: "host", Short: "Look at one host"}
	cmd.AddCommand(show)
	return cmd
}

// ruleList names the failed rules of reasons, each once.
func ruleList(reasons []wire.Reason) string {
	var rules []string
	for _, r := range reasons {
		if !slices.Contains(rules, r.Rule) {
			rules = append(rules, r.Rule)
		}
	}
	if len(rules) == 0 {
		return "-"
	}
	return textsafe.Escape(strings.Join(rules, ", "))
}

func (e *env) quarantineCmd() *cobra.Command {
	return e.clientCmd(&cobra.Command{
		Use:   "quarantine HOST",
		Short: "Quarantine a host: forwarding stops at the next gateway sync, DHCP gives it a quarantine lease",
		Args:  cobra.ExactArgs(1),
	}, func(ctx context.Context, c *admin.Client, args []string) error {
		if err := c.Quarantine(ctx, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "host %s quarantined; it is admitted again only by a passing attestation\n", args[0])
		return nil
	})
}

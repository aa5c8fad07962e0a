package cli

import (
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
)

func (e *env) policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Derive and check attestation policies offline"}
	cmd.AddCommand(e.policyLearnCmd(), e.policyCheckCmd(), e.policyDiffCmd())
	return cmd
}

// offlineState replays a log against itself, in the PCR bank h, or for h
// 0 in its SHA-256 bank or, lacking one, SHA-1. There is no quote offline,
// so this shows what the log claims, which is what a policy is written
// against. A log that cannot be read exits 2; a readable log without the
// bank h is replayed in its own bank, for the policy to refuse by
// log.pcr_bank.
func offlineState(path string, h crypto.Hash) (*eventlog.BootState, error) {
	raw, err := readInput(path, "event log")
	if err != nil {
		return nil, err
	}
	// A log without the bank asked for is read in its own, so that it
	// fails the policy's bank rule instead of being unreadable.
	st, err := eventlog.Offline(raw, h)
	var be *eventlog.BankError
	if errors.As(err, &be) {
		st, err = eventlog.Offline(raw, 0)
	}
	if err != nil {
		return nil, &ExitError{Code: ExitBadInput, Err: fmt.Errorf("%s: %w", path, err)}
	}
	return st, nil
}

func (e *env) policyLearnCmd() *cobra.Command {
	var logPath, name, bankName string
	var opts policy.LearnOptions
	cmd := &cobra.Command{
		Use:   "learn --eventlog FILE",
		Short: "Print the narrowest policy that a known-good host's event log passes; allowances and pins are listed on stderr",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var h crypto.Hash
			switch strings.ToLower(bankName) {
			case policy.BankSHA256:
			case policy.BankSHA1:
				h, opts.AllowSHA1 = crypto.SHA1, true
			default:
				return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("--pcr-bank: %q is neither %s nor %s", bankName, policy.BankSHA256, policy.BankSHA1)}
			}
			st, err := offlineState(logPath, h)
			if err != nil {
				return err
			}
			if h != 0 && st.Hash != h {
				err := fmt.Errorf("learn policy: %w: the log carries no %v digests", policy.ErrNotReference, h)
				fmt.Fprintln(e.stderr, "bootgate:", err)
				return &ExitError{Code: ExitPolicyFail, Err: err}
			}
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(logPath), filepath.Ext(logPath))
			}
			p, notes, err := policy.Learn(name, st, opts)
			if errors.Is(err, policy.ErrNotReference) {
				fmt.Fprintln(e.stderr, "bootgate:", err)
				for _, a := range st.Anomalies {
					fmt.Fprintf(e.stderr, "  event %d: %s\n", a.Event, textsafe.Escape(a.Detail))
				}
				return &ExitError{Code: ExitPolicyFail, Err: err}
			}
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			// Notes quote the log (a variable name, a command line):
			// escaped, as every text from a host is on a terminal.
			for _, n := range notes {
				fmt.Fprintf(e.stderr, "allowed: %s\n", textsafe.Escape(n))
			}
			b, err := p.Marshal()
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&logPath, "eventlog", "", "raw TCG event log (binary_bios_measurements)")
	cmd.Flags().StringVar(&name, "name", "", "policy name (default: the log's file name)")
	cmd.Flags().BoolVar(&opts.AllowSecureBootOff, "allow-secure-boot-off", false, "write secure_boot.allow_disabled if the log booted with Secure Boot off (risk: boot code runs unverified)")
	cmd.Flags().BoolVar(&opts.AllowAnyBootApp, "allow-any-boot-app", false, "write allow_any_boot_app if the log measured no boot application (risk: any signed image boots)")
	cmd.Flags().BoolVar(&opts.AllowEmptyKeys, "allow-empty-keys", false, "write allow_any for PK, KEK or db, and an empty dbx requirement, if the log shows them empty (risk: whoever sets them decides what boots)")
	cmd.Flags().BoolVar(&opts.AllowUnverifiedBootApps, "allow-unverified-boot-apps", false, "write the allowances for a Secure Boot log in which no authority verified a boot application")
	cmd.Flags().BoolVar(&opts.AllowDebug, "allow-debug", false, "write the debug allowances for UEFI Debug Mode and DMA Protection Disabled if the log reports them")
	cmd.Flags().StringVar(&bankName, "pcr-bank", policy.BankSHA256, "the PCR bank the policy describes: sha256, or sha1 for hosts that have no SHA-256 bank (risk: SHA-1 is broken for collisions; writes pcr_bank: sha1)")
	_ = cmd.MarkFlagRequired("eventlog")
	return cmd
}

func (e *env) policyCheckCmd() *cobra.Command {
	var logPath, policyPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check --policy FILE --eventlog FILE",
		Short: "Evaluate an event log against a policy: exit 0 pass, 1 policy failure, 2 unreadable input",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if asJSON {
				// Unreadable input is answered in JSON too, before the exit.
				defer func() { err = e.jsonError(err) }()
			}
			p, err := policy.Load(policyPath)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			st, err := offlineState(logPath, p.Bank())
			if err != nil {
				return err
			}
			failures := p.Evaluate(st)
			if asJSON {
				out := map[string]any{"pass": len(failures) == 0, "policy": p.Name, "failures": failures}
				if st.PaddingBytes > 0 {
					out["padding_bytes"] = st.PaddingBytes
				}
				if err := e.printJSON(out); err != nil {
					return err
				}
			} else {
				if st.PaddingBytes > 0 {
					fmt.Fprintf(e.stderr, "note: the log ends with %d bytes of padding after its last event\n", st.PaddingBytes)
				}
				for _, f := range failures {
					fmt.Fprintln(e.stdout, textsafe.Escape(f.String()))
				}
				if len(failures) == 0 {
					fmt.Fprintf(e.stdout, "pass: %s meets policy %q\n", logPath, p.Name)
				}
			}
			if len(failures) > 0 {
				return &ExitError{Code: ExitPolicyFail, Err: errors.New("policy failed")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (YAML)")
	cmd.Flags().StringVar(&logPath, "eventlog", "", "raw TCG event log")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("policy")
	_ = cmd.MarkFlagRequired("eventlog")
	return cmd
}

// jsonError prints err, an unreadable-input error (exit 2), as JSON
// {"error": {"code": "unreadable_input", "message": ...}} on stdout, so that
// a caller parsing --json output gets JSON whatever happens; other errors
// pass through.
func (e *env) jsonError(err error) error {
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitBadInput {
		return err
	}
	if perr := e.printJSON(map[string]any{"error": map[string]string{"code": "unreadable_input", "message": ee.Err.Error()}}); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

func (e *env) policyDiffCmd() *cobra.Command {
	var reference, logPath, policyPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff --eventlog FILE (--reference GOOD-LOG | --policy FILE)",
		Short: "Explain how an event log departs from a known-good log, or from a policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if asJSON {
				defer func() { err = e.jsonError(err) }()
			}
			var p *policy.Policy
			var h crypto.Hash // the log's own bank, unless a policy names one
			if policyPath != "" && reference == "" {
				if p, err = policy.Load(policyPath); err != nil {
					return &ExitError{Code: ExitBadInput, Err: err}
				}
				h = p.Bank()
			}
			st, err := offlineState(logPath, h)
			if err != nil {
				return err
			}
			switch {
			case reference != "":
				// The reference in the bank of the log it is compared with.
				ref, err := offlineState(reference, st.Hash)
				if err != nil {
					return err
				}
				d := eventlog.Diff(ref, st)
				if asJSON {
					if err := e.printJSON(map[string]any{"against": "reference", "differences": append([]string{}, d...)}); err != nil {
						return err
					}
				} else {
					for _, line := range d {
						fmt.Fprintln(e.stdout, textsafe.Escape(line))
					}
				}
				if len(d) == 0 {
					if !asJSON {
						fmt.Fprintln(e.stdout, "no difference bootgate looks at")
					}
					return nil
				}
				return &ExitError{Code: ExitPolicyFail, Err: errors.New("the logs differ")}
			case p != nil:
				fs := p.Evaluate(st)
				if asJSON {
					if err := e.printJSON(map[string]any{"against": "policy", "policy": p.Name, "policy_digest": p.Digest(), "failures": append([]policy.Failure{}, fs...)}); err != nil {
						return err
					}
				} else {
					for _, f := range fs {
						fmt.Fprintln(e.stdout, textsafe.Escape(f.String()))
					}
				}
				if len(fs) == 0 {
					if !asJSON {
						fmt.Fprintf(e.stdout, "the log meets policy %q\n", p.Name)
					}
					return nil
				}
				return &ExitError{Code: ExitPolicyFail, Err: errors.New("policy failed")}
			}
			return &ExitError{Code: ExitBadInput, Err: errors.New("give --reference or --policy")}
		},
	}
	cmd.Flags().StringVar(&logPath, "eventlog", "", "the event log to explain")
	cmd.Flags().StringVar(&reference, "reference", "", "a known-good host's event log")
	cmd.Flags().StringVar(&policyPath, "policy", "", "a policy file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("eventlog")
	return cmd
}

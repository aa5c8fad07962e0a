package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/store"
)

func (e *env) operatorCmd() *cobra.Command {
	var (
		cfgPath, out string
		validity     time.Duration
	)
	add := &cobra.Command{
		Use:   "add NAME --config FILE --out PROFILE",
		Short: "Issue an operator certificate (run on the appliance) and write the operator's profile for the CLI",
		Long: "Issues a client certificate naming the operator from the appliance's operator CA and writes a\n" +
			"profile (mode 0600) with the admin API's address, the CA of its server certificate, and the\n" +
			"operator's certificate and key. Hand the profile to the operator over a trusted channel; the\n" +
			"CLI reads it from --operator, $BOOTGATE_OPERATOR or ~/.config/bootgate/operator.yaml.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := adminConfig(cfgPath)
			if err != nil {
				return err
			}
			serverCA, err := os.ReadFile(cfg.Admin.ServerCA)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("admin.server_ca: %w", err)}
			}
			if _, err := os.Stat(out); err == nil {
				return &ExitError{Code: ExitBadInput, Err: fmt.Errorf("%s exists; not overwriting a profile", out)}
			}
			if err := pki.InitOperators(cfg.Admin.Operators, 5*365*24*time.Hour); err != nil {
				return err
			}
			ops, err := pki.LoadOperators(cfg.Admin.Operators, true)
			if err != nil {
				return err
			}
			certPEM, keyPEM, err := ops.Issue(args[0], validity)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			b, err := yaml.Marshal(admin.Profile{Admin: cfg.Admin.URL, ServerCA: string(serverCA), Certificate: string(certPEM), Key: string(keyPEM)})
			if err != nil {
				return err
			}
			if err := auditLocal(cmd.Context(), cfg, "operator-add", args[0], "valid "+validity.String()); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(out, b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "operator %s: profile for %s written to %s (valid %s)\n", args[0], cfg.Admin.URL, out, validity)
			return nil
		},
	}
	add.Flags().DurationVar(&validity, "validity", 90*24*time.Hour, "certificate lifetime")
	add.Flags().StringVar(&out, "out", "", "where to write the operator's profile")
	_ = add.MarkFlagRequired("out")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list --config FILE",
		Short: "List the operator certificates issued, with their expiry and revocation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, ops, err := loadOperators(cfgPath)
			if err != nil {
				return err
			}
			issued, err := ops.Issued()
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(append([]pki.IssuedOperator{}, issued...))
			}
			tw := e.table()
			fmt.Fprintln(tw, "OPERATOR\tSERIAL\tNOT AFTER\tREVOKED")
			for _, op := range issued {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", op.Name, op.Serial, when(op.NotAfter), op.Revoked)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke NAME --config FILE",
		Short: "Revoke every certificate issued to an operator; the admin API refuses them from its next request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, ops, err := loadOperators(cfgPath)
			if err != nil {
				return err
			}
			serials, err := ops.Revoke(args[0])
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			if err := auditLocal(cmd.Context(), cfg, "operator-revoke", args[0], strings.Join(serials, " ")); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "operator %s: revoked %s\n", args[0], strings.Join(serials, ", "))
			return nil
		},
	}
	cmd := &cobra.Command{Use: "operator", Short: "Manage the operators who may use the admin API and dashboard (run on the appliance)"}
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "appliance configuration (YAML)")
	_ = cmd.MarkPersistentFlagRequired("config")
	cmd.AddCommand(add, list, revoke)
	return cmd
}

// adminConfig loads an appliance configuration that has an admin section.
func adminConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, &ExitError{Code: ExitBadInput, Err: err}
	}
	if cfg.Admin == nil {
		return nil, &ExitError{Code: ExitBadInput, Err: errors.New("the configuration has no admin section")}
	}
	return cfg, nil
}

// loadOperators loads the configuration and its operator CA, without the
// CA's key (listing and revoking do not need it).
func loadOperators(cfgPath string) (*config.Config, *pki.Operators, error) {
	cfg, err := adminConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	ops, err := pki.LoadOperators(cfg.Admin.Operators, false)
	if err != nil {
		return nil, nil, err
	}
	return cfg, ops, nil
}

// auditLocal writes an action taken on the appliance (not through the admin
// API) to the store's audit log, under the local user's name.
func auditLocal(ctx context.Context, cfg *config.Config, action, target, detail string) error {
	st, err := store.Open(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.RecordAction(ctx, localActor(), action, target, detail)
}

// localActor names the person at the appliance's console in the audit log.
func localActor() string {
	for _, v := range []string{"SUDO_USER", "USER"} {
		if u := os.Getenv(v); u != "" {
			return "local:" + u
		}
	}
	return "local"
}

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/admin"
	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/pki"
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
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			if cfg.Admin == nil {
				return &ExitError{Code: ExitBadInput, Err: errors.New("the configuration has no admin section")}
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
	add.Flags().StringVar(&cfgPath, "config", "", "appliance configuration (YAML)")
	add.Flags().StringVar(&out, "out", "", "where to write the operator's profile")
	add.Flags().DurationVar(&validity, "validity", 90*24*time.Hour, "certificate lifetime")
	_ = add.MarkFlagRequired("config")
	_ = add.MarkFlagRequired("out")
	cmd := &cobra.Command{Use: "operator", Short: "Manage the operators who may use the admin API and dashboard"}
	cmd.AddCommand(add)
	return cmd
}

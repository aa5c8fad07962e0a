package cli

import (
	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/config"
)

func (e *env) serveCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the appliance's attestation API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadAppliance(cfgPath)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			return appliance.Run(cmd.Context(), cfg, appliance.Options{Logger: e.logger})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "appliance configuration (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

package cli

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/config"
)

func (e *env) serveCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the appliance; SIGHUP reloads its policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGHUP is caught from the start: one that arrives while the
			// configuration loads waits for the appliance instead of ending it.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer func() { signal.Stop(hup); close(hup) }()
			cfg, err := config.LoadAppliance(cfgPath)
			if err != nil {
				return &ExitError{Code: ExitBadInput, Err: err}
			}
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default: // a reload is pending already
					}
				}
			}()
			return appliance.Run(cmd.Context(), cfg, appliance.Options{Logger: e.logger, Reload: reload})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "appliance configuration (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

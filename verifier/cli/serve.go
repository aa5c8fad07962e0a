package cli

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/appliance"
	"github.com/bootgate/bootgate/verifier/config"
)

func (e *env) serveCmd() *cobra.Command {
	var cfgPath, cpuProfile string
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
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
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
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the whole run to this file when the appliance stops (load tests)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// startCPUProfile profiles the process's CPU into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

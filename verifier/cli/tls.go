package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/verifier/pki"
)

func (e *env) tlsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tls", Short: "Manage the attestation API's TLS certificate"}
	var dir string
	var hosts []string
	var validity time.Duration
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --host ADDR",
		Short: "Create a CA for the agents to trust and the API's server certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pki.WriteServerTLS(dir, hosts, validity); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote %s (give it to agents), %s and %s\n",
				filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "output directory")
	initCmd.Flags().StringSliceVar(&hosts, "host", nil, "IP address or DNS name of the API (repeatable)")
	initCmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "certificate lifetime")
	_ = initCmd.MarkFlagRequired("dir")
	_ = initCmd.MarkFlagRequired("host")
	cmd.AddCommand(initCmd)
	return cmd
}

// Package cli is the bootgate command: the appliance (serve) and its
// operators' tools (policy, hosts, incidents, tls).
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bootgate/bootgate/internal/textsafe"
)

// ExitError carries a process exit status chosen by a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit statuses of `policy check`, also used for unreadable input elsewhere.
const (
	ExitPolicyFail = 1
	ExitBadInput   = 2
)

// Run executes the bootgate command line and returns the process exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil && ee.Code != ExitPolicyFail {
			fmt.Fprintln(stderr, "bootgate:", textsafe.Escape(ee.Err.Error()))
		}
		return ee.Code
	}
	fmt.Fprintln(stderr, "bootgate:", textsafe.Escape(err.Error()))
	return 2
}

type env struct {
	stdout, stderr io.Writer
	logger         *slog.Logger
	profile        string // the operator's profile for the admin API
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	e := &env{stdout: stdout, stderr: stderr, logger: slog.New(textsafe.Handler(slog.NewTextHandler(stderr, nil)))}
	root := &cobra.Command{
		Use:           "bootgate",
		Short:         "bootgate admits machines only after their TPM proves a known-good boot",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&e.profile, "operator", defaultProfile(), "operator profile for the admin API (env BOOTGATE_OPERATOR)")
	root.AddCommand(e.serveCmd(), e.policyCmd(), e.tlsCmd(), e.operatorCmd(),
		e.statusCmd(), e.hostsCmd(), e.hostCmd(), e.incidentsCmd(), e.incidentCmd(), e.quarantineCmd(), e.auditCmd(), e.ekCmd(), e.ekRootsCmd())
	return root
}

// printJSON prints v as indented JSON with its text escaped
// (textsafe.JSON): what a host sent reaches the terminal inert.
func (e *env) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if b, err = textsafe.JSON(b); err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = e.stdout.Write(out.Bytes())
	return err
}

func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
}

func readInput(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &ExitError{Code: ExitBadInput, Err: fmt.Errorf("read %s: %w", what, err)}
	}
	return b, nil
}

// Command bootgate is the appliance and its operators' tool; see `bootgate help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bootgate/bootgate/verifier/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

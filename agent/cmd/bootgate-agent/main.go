// Command bootgate-agent attests this machine's boot to a bootgate verifier.
//
// In the boot path (-boot) it runs as the initramfs's uinit and decides
// between the production OS and quarantine. As a process it attests once and
// exits:
// 0 when the host was admitted, 1 when the verifier refused it (the reasons are
// printed), 2 when no verdict could be had.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/bootgate/bootgate/agent/bootflow"
	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/verifier/wire"
)

const securityfsLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bootgate-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		tpmSpec  = fs.String("tpm", "device:/dev/tpmrm0", `TPM: "device:PATH" or "swtpm:SOCKET"`)
		verifier = fs.String("verifier", "", "verifier URL, e.g. https://10.0.0.1:8443")
		caFile   = fs.String("ca", "", "the appliance CA certificate (PEM) the agent trusts")
		logPath  = fs.String("eventlog", securityfsLog, "raw TCG event log of this boot")
		replay   = fs.Bool("replay-eventlog", false, "test TPMs only: first extend the event log into the TPM's PCRs, as firmware would have")
		akAlg    = fs.String("ak", "ecc", "attestation key algorithm: ecc (P-256) or rsa (2048)")
		name     = fs.String("name", "", "name shown in the output")
		bootMode = fs.Bool("boot", false, "run as the initramfs's uinit: configuration from the kernel command line, then kexec or quarantine")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bootMode {
		err := runBoot(ctx, stdout)
		fmt.Fprintln(stderr, "bootgate-agent:", err)
		if errors.Is(err, bootflow.ErrRebootRequired) {
			rebootLater(stdout, stderr, 30*time.Second)
		}
		// Never fall through to a shell or an OS: the host stays here.
		for {
			time.Sleep(time.Hour)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := attest(ctx, log, stdout, *tpmSpec, *verifier, *caFile, *logPath, *replay, *akAlg, *name); err != nil {
		var refused errRefused
		if errors.As(err, &refused) {
			return 1
		}
		fmt.Fprintln(stderr, "bootgate-agent:", err)
		return 2
	}
	return 0
}

type errRefused struct{}

func (errRefused) Error() string { return "refused" }

func attest(ctx context.Context, log *slog.Logger, out io.Writer, tpmSpec, verifier, caFile, logPath string, replay bool, akAlg, name string) error {
	if verifier == "" || caFile == "" {
		return errors.New("--verifier and --ca are required")
	}
	alg := tpm.AKECCP256
	switch akAlg {
	case "ecc":
	case "rsa":
		alg = tpm.AKRSA2048
	default:
		return fmt.Errorf("--ak: %q is neither ecc nor rsa", akAlg)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("read CA: no certificate in %s", caFile)
	}
	eventLog, err := os.ReadFile(logPath)
	if err != nil {
		return fmt.Errorf("read event log: %w", err)
	}
	t, err := tpm.Open(tpmSpec)
	if err != nil {
		return fmt.Errorf("open TPM: %w", err)
	}
	defer t.Close()
	if replay {
		n, err := t.ReplayEventLog(eventLog)
		if err != nil {
			return fmt.Errorf("replay event log into the test TPM: %w", err)
		}
		log.Info("replayed event log into the TPM", "events", n)
	}
	c := &client.Client{
		BaseURL: verifier,
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		}},
		Logger: log,
		AK:     alg,
	}
	rep, err := c.Attest(ctx, t, eventLog)
	if err != nil {
		return err
	}
	if name == "" {
		name = rep.Result.HostID
	}
	r := rep.Result
	fmt.Fprintf(out, "%s: host %s verdict %s (attestation %d, EK %s, %d TPM commands, %s)\n",
		name, r.HostID, r.Verdict, r.AttestationID, rep.EK.Type, rep.TPMCommands, rep.Duration.Round(time.Millisecond))
	if r.Verdict == wire.VerdictPass {
		return nil
	}
	fmt.Fprintf(out, "%s: QUARANTINED, incident %d:\n", name, r.IncidentID)
	for _, reason := range r.Reasons {
		if reason.Event > 0 {
			fmt.Fprintf(out, "  - %s: event %d: %s\n", reason.Rule, reason.Event, reason.Detail)
		} else {
			fmt.Fprintf(out, "  - %s: %s\n", reason.Rule, reason.Detail)
		}
	}
	return errRefused{}
}

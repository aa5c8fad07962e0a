package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/agent/bootflow"
	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/drivers"
	"github.com/bootgate/bootgate/agent/event"
	"github.com/bootgate/bootgate/agent/netup"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/boot"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Files the images put in the agent's initramfs.
const (
	defaultCA      = "/etc/bootgate/ca.pem"
	securityfs     = "/sys/kernel/security"
	cmdlinePrefix  = "bootgate."
	defaultTPMSpec = "device:/dev/tpmrm0"
)

// bootConfig is read from the kernel command line (bootgate.KEY=VALUE), which
// is part of the signed, measured UKI.
type bootConfig struct {
	verifier string // bootgate.verifier=https://HOST:PORT
	ca       string // bootgate.ca=PATH
	tpm      string // bootgate.tpm=device:/dev/tpmrm0
	dryRun   bool   // bootgate.dryrun=1: do everything but the kexec
	ak       tpm.AKAlg
}

func parseCmdline(cmdline string) (bootConfig, error) {
	c := bootConfig{ca: defaultCA, tpm: defaultTPMSpec}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		k, ok := strings.CutPrefix(k, cmdlinePrefix)
		if !ok {
			continue
		}
		switch k {
		case "verifier":
			c.verifier = v
		case "ca":
			c.ca = v
		case "tpm":
			c.tpm = v
		case "dryrun":
			c.dryRun = v == "1" || v == "true"
		case "ak":
			if v == "rsa" {
				c.ak = tpm.AKRSA2048
			}
		default:
			return c, fmt.Errorf("unknown kernel parameter bootgate.%s", k)
		}
	}
	return c, nil
}

// runBoot is the agent as the initramfs's uinit: bring the network up,
// attest, and kexec into the production OS or stay quarantined.
func runBoot(ctx context.Context, console io.Writer) error {
	ev := event.New(console)
	log := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ev.Emit(wire.EventAgentStart, nil)
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	cfg, err := parseCmdline(string(raw))
	if err != nil {
		ev.Emit(wire.EventConfigError, map[string]any{"error": err.Error()})
		return err
	}
	if err := unix.Mount("securityfs", securityfs, "securityfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		log.Warn("mount securityfs", "err", err)
	}
	// Early in boot the kernel's random pool may not be ready, and getrandom
	// blocks DHCP and TLS: seed it from the TPM's generator.
	if t, err := tpm.Open(cfg.tpm); err != nil {
		log.Warn("open TPM for entropy", "err", err)
	} else {
		seed, err := t.Random(64)
		t.Close()
		if err == nil {
			err = netup.AddEntropy(seed)
		}
		if err != nil {
			log.Warn("seed kernel random pool from the TPM", "err", err)
		}
	}
	// The NIC drivers for the devices present, from /lib/modules/RELEASE.
	// One that fails to load is reported; DHCP goes on with the others.
	loaded, err := drivers.Load(drivers.Config{}, log)
	if err != nil {
		ev.Emit(wire.EventModulesError, map[string]any{"error": err.Error()})
	}
	ev.Emit(wire.EventModulesLoaded, map[string]any{"count": len(loaded), "drivers": loaded})
	var lease *netup.Lease
	for lease == nil {
		dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		lease, err = netup.DHCP(dctx, log)
		cancel()
		if err != nil {
			ev.Emit(wire.EventNetworkError, map[string]any{"error": err.Error()})
			time.Sleep(5 * time.Second)
		}
	}
	ev.Emit(wire.EventNetworkUp, map[string]any{"interface": lease.Interface, "address": lease.Address.String(), "dhcp_ms": lease.Took.Milliseconds()})

	caPEM, err := os.ReadFile(cfg.ca)
	if err != nil {
		return fmt.Errorf("read appliance CA: %w", err)
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		return fmt.Errorf("read appliance CA: no certificate in %s", cfg.ca)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("read appliance CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	// The appliance names its attestation endpoint and its CA's fingerprint
	// in the DHCP vendor option; the kernel command line may override the
	// endpoint. A fingerprint that is not our CA's means this DHCP server is
	// not our appliance: trust is only ever the CA built into this image.
	if cfg.verifier == "" {
		cfg.verifier = lease.Endpoint
	}
	foreign := false
	if len(lease.CAFingerprint) > 0 {
		if sum := sha256.Sum256(ca.Raw); !bytes.Equal(sum[:], lease.CAFingerprint) {
			foreign = true
			ev.Emit(wire.EventConfigError, map[string]any{"error": "the DHCP server names another appliance CA than the one this agent trusts"})
		}
	}
	if cfg.verifier == "" {
		err := errors.New("no attestation endpoint: none in the DHCP vendor option, none on the kernel command line (bootgate.verifier=)")
		ev.Emit(wire.EventConfigError, map[string]any{"error": err.Error()})
		return err
	}
	ev.Emit(wire.EventVerifier, map[string]any{"url": cfg.verifier, "from_dhcp": cfg.verifier == lease.Endpoint, "alternates": len(lease.Alternates)})
	httpc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
	}}
	// The attestation is bound to the current lease: the quarantine one, and
	// the production one after a move (an attempt that fails after it
	// attests from there).
	link := func() (net.HardwareAddr, netip.Addr, error) {
		ip, ok := netip.AddrFromSlice(lease.Address)
		if !ok || len(lease.MAC) == 0 {
			return nil, netip.Addr{}, fmt.Errorf("the lease on %s names no address or MAC", lease.Interface)
		}
		return lease.MAC, ip.Unmap(), nil
	}
	// The appliance's other replicas, when it named them: tried in turn when
	// the endpoint cannot be reached. An endpoint from the command line is
	// the operator's choice alone.
	// A DHCP server that names another CA is not our appliance: its endpoint
	// is tried (TLS to our CA decides), but it does not get to name more.
	var alternates []string
	if cfg.verifier == lease.Endpoint && !foreign {
		for _, a := range lease.Alternates {
			alternates = append(alternates, strings.TrimRight(a, "/"))
		}
	}
	flow := &bootflow.Flow{
		Client: &client.Client{BaseURL: strings.TrimRight(cfg.verifier, "/"), Alternates: alternates,
			HTTP: httpc, Logger: log, AK: cfg.ak, Identity: true, Link: link},
		IdentityClient: client.IdentityClient(pool),
		ApplianceCA:    caPEM,
		OpenTPM:        func() (*tpm.TPM, error) { return tpm.Open(cfg.tpm) },
		EventLog:       func() ([]byte, error) { return os.ReadFile(securityfsLog) },
		Loader:         &boot.Loader{HTTP: httpc, Dir: "/tmp/bootgate-os", PCR: wire.BoundaryPCR, Kexec: boot.LinuxKexec{}, DryRun: cfg.dryRun},
		Events:         ev,
		Console:        console,
		Backoff:        bootflow.Backoff{Min: 2 * time.Second, Max: 60 * time.Second},
		Renew: func(ctx context.Context) (string, error) {
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			l, err := netup.Renew(rctx, lease.Interface, log)
			if err != nil {
				return "", err
			}
			lease = l
			// Connections kept alive from the quarantine address are dead.
			httpc.CloseIdleConnections()
			return l.Address.String(), nil
		},
	}
	return flow.Run(ctx)
}

// rebootLater restarts the machine after a pause to read the console: the
// boot failed past bootgate's boundary, and only a fresh boot (and its fresh
// PCRs) can attest again.
func rebootLater(console, stderr io.Writer, after time.Duration) {
	fmt.Fprintf(console, "\n*** bootgate: this boot failed after the handover began; restarting in %s to attest again. ***\n", after)
	time.Sleep(after)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		fmt.Fprintln(stderr, "bootgate-agent: reboot:", err)
	}
}

package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/drivers"
	"github.com/bootgate/bootgate/agent/netup"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/verifier/wire"
)

// callAppliance proves the handover: it recreates the identity key in the
// TPM (a deterministic primary; the private key never left the TPM), and calls
// the appliance over mTLS with it and the identity certificate it was given.
func callAppliance(ctx context.Context, verifier string) (map[string]any, error) {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	_ = unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	t, err := tpm.Open("device:/dev/tpmrm0")
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if seed, err := t.Random(64); err == nil {
		_ = netup.AddEntropy(seed)
	}
	if _, err := drivers.Load(drivers.Config{}, log); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	lease, err := netup.DHCP(dctx, log)
	cancel()
	if err != nil {
		return nil, err
	}
	key, err := t.IdentityKey()
	if err != nil {
		return nil, err
	}
	defer key.Close()
	certPEM, err := os.ReadFile("/" + wire.HandoverIdentityPath)
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for b := certPEM; ; {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		chain = append(chain, blk.Bytes)
	}
	if len(chain) == 0 {
		return nil, errors.New("no identity certificate")
	}
	caPEM, err := os.ReadFile("/" + wire.HandoverApplianceCA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	// The client the agent fetched the OS with.
	c := client.IdentityClient(roots)(&wire.Identity{Cert: chain[0], Chain: chain[1:]}, key)
	resp, err := c.Get(strings.TrimRight(verifier, "/") + wire.PathIdentity)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	out := map[string]any{"status": resp.StatusCode, "address": lease.Address.String()}
	var who wire.WhoAmI
	if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &who) == nil {
		out["host_id"], out["state"] = who.HostID, who.State
	} else {
		out["body"] = strings.TrimSpace(string(body))
	}
	// The identity lives a day: the OS renews it over itself, for the same
	// TPM-resident key, without attesting again.
	renewed, err := (&client.Client{BaseURL: strings.TrimRight(verifier, "/"), HTTP: c}).RenewIdentity(ctx)
	if err != nil {
		out["renew_error"] = err.Error()
	} else if nc, err := x509.ParseCertificate(renewed.Cert); err != nil {
		out["renew_error"] = err.Error()
	} else {
		out["renewed"] = nc.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Signer().Public())
		out["renewed_not_after"] = renewed.NotAfter
	}
	fmt.Printf("*** the production OS called the appliance with its TPM-resident identity: %d %s ***\n", resp.StatusCode, who.State)
	return out, nil
}

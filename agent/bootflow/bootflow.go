// Package bootflow is the agent's decision: attest, and boot the production
// OS only after a passing verdict and a fully checked image; otherwise stay
// quarantined, show why, and attest again with backoff. There is one place
// that leads to the kexec, and every failure leads back to the loop.
package bootflow

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/bootgate/bootgate/agent/client"
	"github.com/bootgate/bootgate/agent/event"
	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/boot"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Backoff spaces the attempts after a failure: exponential from Min to Max
// with full jitter, so that a rack that failed together does not retry in step.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait before attempt n (n ≥ 1 counts the failures so far).
func (b Backoff) Delay(n int, r *rand.Rand) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + time.Duration(r.Int64N(int64(d/2)+1))
}

// Wait is the wait before attempt n+1 after n failures, the last of which
// came with a verifier's request to wait hint (a 429's Retry-After; 0 for
// none): Delay(n), or, if hint is longer, hint plus up to half of it of
// jitter (so that the hosts a busy verifier refused together do not come
// back together), never more than Max.
func (b Backoff) Wait(n int, hint time.Duration, r *rand.Rand) time.Duration {
	d := b.Delay(n, r)
	if hint <= d {
		return d
	}
	return min(hint+time.Duration(r.Int64N(int64(hint/2)+1)), max(b.Max, d))
}

// Flow holds what one boot's decision needs.
type Flow struct {
	Client   *client.Client
	OpenTPM  func() (*tpm.TPM, error)
	EventLog func() ([]byte, error)
	Loader   *boot.Loader
	Events   *event.Emitter
	Console  io.Writer // where people read why the host is quarantined
	Backoff  Backoff
	// Renew, if set, is called after a pass and before the OS is fetched: it
	// moves the host to its production lease and returns the new address.
	Renew func(ctx context.Context) (string, error)
	// ApplianceCA (PEM) is handed to the OS, so that it can reach the
	// appliance with the identity as the agent did.
	ApplianceCA []byte
	// IdentityClient, if set, makes the HTTP client that fetches the OS with
	// the host identity (mTLS); required when Client.Identity is set.
	IdentityClient func(id *wire.Identity, key *tpm.Key) *http.Client
	// MaxAttempts bounds the attempts (0: no bound, as in production, where
	// a quarantined host keeps trying until it passes).
	MaxAttempts int

	// crossed is set once PCR 15 moved in this boot (credentials unsealed,
	// or an OS measured): the verifier refuses quotes taken after that.
	crossed bool
}

// ErrQuarantined is returned when MaxAttempts ran out without a pass.
var ErrQuarantined = errors.New("host stays quarantined")

// ErrRebootRequired is returned when the flow failed after it moved PCR 15
// (it unsealed credentials or measured an OS, then could not boot it): the
// verifier refuses quotes taken past that boundary, so only a reboot can
// attest again.
var ErrRebootRequired = errors.New("the boot failed past bootgate's boundary (PCR 15 moved): reboot to attest again")

// Run loops until an attestation passes and its OS is loaded, then executes
// it (which does not return on success). It returns when ctx ends, after
// MaxAttempts, or when the kexec itself fails.
func (f *Flow) Run(ctx context.Context) error {
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x62677465))
	for attempt := 1; f.MaxAttempts == 0 || attempt <= f.MaxAttempts; attempt++ {
		img, ok, hint := f.attempt(ctx, attempt)
		if ok {
			f.Events.Emit(wire.EventKexec, map[string]any{"attempt": attempt, "os_digest": fmt.Sprintf("%x", img.Digest)})
			if err := f.Loader.Execute(); err != nil {
				f.Events.Emit(wire.EventBootError, map[string]any{"error": "kexec: " + err.Error()})
				return fmt.Errorf("kexec: %w", err)
			}
			return nil // dry run
		}
		if f.crossed {
			f.Events.Emit(wire.EventRebootRequired, map[string]any{"attempt": attempt, "pcr": wire.BoundaryPCR})
			return ErrRebootRequired
		}
		if f.MaxAttempts != 0 && attempt == f.MaxAttempts {
			break
		}
		d := f.Backoff.Wait(attempt, hint, r)
		f.Events.Emit(wire.EventRetry, map[string]any{"attempt": attempt, "in_ms": d.Milliseconds(), "retry_after_ms": hint.Milliseconds()})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return ErrQuarantined
}

// attempt runs one attestation and, on a pass, fetches, checks, measures and
// loads the OS. It reports true only when the OS is loaded and nothing
// remains but to execute it; on a failure, the wait the verifier asked for
// (client.APIError.RetryAfter), or 0.
func (f *Flow) attempt(ctx context.Context, n int) (*boot.Image, bool, time.Duration) {
	img, ok, err := f.try(ctx, n)
	var apiErr *client.APIError
	if err != nil && errors.As(err, &apiErr) {
		return img, ok, apiErr.RetryAfter
	}
	return img, ok, 0
}

// try is attempt; the error is the failure's, when it has one.
func (f *Flow) try(ctx context.Context, n int) (*boot.Image, bool, error) {
	fail := func(name wire.Event, err error) (*boot.Image, bool, error) {
		f.Events.Emit(name, map[string]any{"attempt": n, "error": err.Error()})
		return nil, false, err
	}
	eventLog, err := f.EventLog()
	if err != nil {
		return fail(wire.EventAttestError, fmt.Errorf("read event log: %w", err))
	}
	t, err := f.OpenTPM()
	if err != nil {
		return fail(wire.EventAttestError, fmt.Errorf("open TPM: %w", err))
	}
	rep, err := f.Client.Attest(ctx, t, eventLog)
	if err != nil {
		t.Close()
		return fail(wire.EventAttestError, err)
	}
	if rep.IdentityKey != nil {
		defer rep.IdentityKey.Close()
	}
	res := rep.Result
	f.Events.Emit(wire.EventAttested, map[string]any{
		"attempt": n, "verdict": res.Verdict, "host_id": res.HostID, "attestation_id": res.AttestationID,
		"incident_id": res.IncidentID, "reasons": res.Reasons, "ek": rep.EK.Type,
		"tpm_commands": rep.TPMCommands, "attest_ms": rep.Duration.Milliseconds(),
	})
	if res.Verdict != wire.VerdictPass {
		t.Close()
		f.showQuarantine(res)
		return nil, false, nil
	}
	if res.Boot == nil {
		t.Close()
		return fail(wire.EventBootError, errors.New("the verifier named no production OS"))
	}
	if f.Renew != nil {
		addr, err := f.Renew(ctx)
		if err != nil {
			t.Close()
			return fail(wire.EventNetworkError, fmt.Errorf("move to the production lease: %w", err))
		}
		f.Events.Emit(wire.EventNetworkProduction, map[string]any{"address": addr})
	}
	spec := boot.Spec{
		Kernel:  boot.File{URL: f.Client.BaseURL + res.Boot.Kernel.Path, SHA256: res.Boot.Kernel.SHA256, Size: res.Boot.Kernel.Size},
		Initrd:  boot.File{URL: f.Client.BaseURL + res.Boot.Initrd.Path, SHA256: res.Boot.Initrd.SHA256, Size: res.Boot.Initrd.Size},
		Cmdline: res.Boot.Cmdline,
	}
	if len(res.Boot.KernelSigner) > 0 {
		if spec.KernelSigner, err = x509.ParseCertificate(res.Boot.KernelSigner); err != nil {
			t.Close()
			return fail(wire.EventBootError, fmt.Errorf("the verifier named an unreadable kernel signer: %w", err))
		}
	}
	// Credentials: unsealed by this TPM in this boot state, then a boundary
	// is extended into the policy PCR so that they cannot be unsealed again
	// in this boot.
	files := map[string][]byte{}
	if len(res.Credentials) > 0 {
		n, err := unsealAll(t, rep.EK, res.Credentials, files)
		if err != nil {
			t.Close()
			return fail(wire.EventBootError, fmt.Errorf("unseal credentials: %w", err))
		}
		// Extend moves PCR 15 of every allocated bank: a quote of any bank
		// taken past this point shows the boundary.
		boundary := wire.BoundaryDigest()
		f.crossed = true
		if err := t.Extend(wire.BoundaryPCR, boundary[:]); err != nil {
			t.Close()
			return fail(wire.EventBootError, fmt.Errorf("extend the boundary into PCR %d: %w", wire.BoundaryPCR, err))
		}
		f.Events.Emit(wire.EventCredentials, map[string]any{"unsealed": n, "boundary_pcr": wire.BoundaryPCR})
	}
	if res.Identity != nil {
		files[wire.HandoverIdentityPath] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Identity.Cert})
		for _, c := range res.Identity.Chain {
			files[wire.HandoverIdentityPath] = append(files[wire.HandoverIdentityPath], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
		if f.ApplianceCA != nil {
			files[wire.HandoverApplianceCA] = f.ApplianceCA
		}
	}
	// With an identity, the OS is fetched over mTLS with the TPM-resident key.
	if res.Identity != nil && rep.IdentityKey != nil {
		f.Loader.HTTP = f.IdentityClient(res.Identity, rep.IdentityKey)
		f.Events.Emit(wire.EventIdentity, map[string]any{"not_after": res.Identity.NotAfter})
	}
	img, err := f.Loader.Fetch(ctx, spec)
	if err != nil {
		t.Close()
		return fail(wire.EventBootError, err)
	}
	f.Events.Emit(wire.EventOSVerified, map[string]any{"kernel_sha256": spec.Kernel.SHA256, "initrd_sha256": spec.Initrd.SHA256})
	handover, err := json.Marshal(wire.Handover{
		HostID: res.HostID, AttestationID: res.AttestationID, Verdict: res.Verdict, PolicyDigest: res.PolicyDigest,
		Verifier: f.Client.BaseURL,
	})
	if err != nil {
		t.Close()
		return fail(wire.EventBootError, err)
	}
	files[wire.HandoverPath] = handover
	if f.Loader.Extra, err = boot.CPIO(files); err != nil {
		t.Close()
		return fail(wire.EventBootError, err)
	}
	f.Loader.Measurer = t
	f.crossed = true
	err = f.Loader.Load(img)
	f.Loader.Measurer = nil
	t.Close()
	if err != nil {
		return fail(wire.EventBootError, err)
	}
	f.Events.Emit(wire.EventOSLoaded, map[string]any{"pcr": f.Loader.PCR, "os_digest": fmt.Sprintf("%x", img.Digest)})
	return img, true, nil
}

// showQuarantine tells the person at the console why this host does not boot.
func (f *Flow) showQuarantine(res wire.Result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n*** bootgate: host %s is QUARANTINED (incident %d). It will not boot until it attests cleanly. ***\n", res.HostID, res.IncidentID)
	for _, r := range res.Reasons {
		if r.Event > 0 {
			fmt.Fprintf(&b, "    %s (event %d): %s\n", r.Rule, r.Event, r.Detail)
		} else {
			fmt.Fprintf(&b, "    %s: %s\n", r.Rule, r.Detail)
		}
	}
	_, _ = io.WriteString(f.Console, b.String())
	f.Events.Emit(wire.EventQuarantined, map[string]any{"host_id": res.HostID, "incident_id": res.IncidentID, "reasons": len(res.Reasons)})
}

// unsealAll unseals every credential with the EK the verifier enrolled and
// puts each in files as wire.HandoverCredentialsDir/NAME.
func unsealAll(t *tpm.TPM, enrolled tpm.EK, creds []wire.Credential, files map[string][]byte) (int, error) {
	ek, err := t.ReloadEK(enrolled)
	if err != nil {
		return 0, err
	}
	defer t.CloseEK(ek)
	for _, c := range creds {
		if strings.ContainsAny(c.Name, "/\\") || c.Name == "" || c.Name[0] == '.' {
			return 0, fmt.Errorf("credential name %q", c.Name)
		}
		bank, err := wire.ParseBank(c.PCRBank)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", c.Name, err)
		}
		v, err := t.Unseal(ek, &tpm.SealedBlob{Public: c.Public, Duplicate: c.Duplicate, EncryptedSeed: c.EncryptedSeed, PCRs: c.PCRs, Bank: bank})
		if err != nil {
			return 0, fmt.Errorf("%s: %w", c.Name, err)
		}
		files[wire.HandoverCredentialsDir+"/"+c.Name] = v
	}
	return len(creds), nil
}

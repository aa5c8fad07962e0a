// Package config reads the appliance's configuration file. Like a policy, it is
// decoded strictly and validated in one step: unknown fields are errors.
package config

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/policy"
)

// Config is the appliance configuration. Relative paths are relative to the
// configuration file's directory.
type Config struct {
	// Listen is the attestation API's address, e.g. ":8443".
	Listen string `yaml:"listen"`
	// AttestBehindNAT says that agents reach the attestation API through
	// network address translation, so a connection's source address is not
	// the address the agent quoted and is not compared with it (default
	// false). The quote stays bound to its MAC and IP, and with dhcp that
	// IP must be leased to that MAC. Risk: without dhcp, nothing then ties
	// an attestation to the link it arrived on.
	AttestBehindNAT bool `yaml:"attest_behind_nat"`
	TLS             TLS  `yaml:"tls"`
	// Policy is the attestation policy file.
	Policy string `yaml:"policy"`
	// PolicyReference is the known-good event log the policy was learned
	// from (optional): incidents of hosts that never passed are shown as a
	// diff against it.
	PolicyReference string `yaml:"policy_reference"`
	// Store is where the appliance keeps its state: an SQLite database
	// file (the default, embedded), or a postgres:// URL naming a
	// PostgreSQL database that several appliances may share.
	Store string `yaml:"store"`
	EK    EK     `yaml:"ek"`
	// SessionTTL bounds the time between enrollment and quote (default 60s).
	SessionTTL time.Duration `yaml:"session_ttl"`
	// SessionKey is the file of the 32-byte key that seals enrollment
	// sessions into the tokens agents return with their quotes, created
	// (mode 0600) when missing. Replicas sharing a store give each the
	// same key, so that any of them takes any quote. Without it each
	// process makes its own key at start, and an agent whose quote reaches
	// another process, or this one after a restart, enrolls again.
	SessionKey string `yaml:"session_key"`
	// PCRs overrides the SHA-256 PCRs every quote must cover (default 0-15).
	PCRs []int `yaml:"pcrs"`
	// LogCache is the number of distinct event logs whose verification is
	// remembered (default 1024; 0 keeps the default, -1 disables), within
	// eventlog.DefaultCacheBytes (64 MiB) whatever the count.
	LogCache int `yaml:"log_cache"`
	// Boot is the production OS that admitted hosts boot (optional).
	Boot *Boot `yaml:"boot"`
	// DHCP makes the appliance the boot network's DHCP server (optional).
	DHCP *DHCP `yaml:"dhcp"`
	// Gateway makes the appliance forward boot-network traffic only for
	// admitted hosts' production leases (nftables; needs dhcp).
	Gateway *Gateway `yaml:"gateway"`
	// BootFiles serves the agent UKI for network boot (optional).
	BootFiles *BootFiles `yaml:"bootfiles"`
	// PKI is the attestation CA that issues host identities (optional).
	PKI *PKI `yaml:"pki"`
	// MetricsListen serves Prometheus metrics over plain HTTP on this
	// address, e.g. 127.0.0.1:9100 (optional; keep it off the boot network).
	MetricsListen string `yaml:"metrics_listen"`
	// Webhook receives incident events as JSON (optional).
	Webhook *Webhook `yaml:"webhook"`
	// Admin serves the operators' API and dashboard over mTLS (optional).
	Admin *Admin `yaml:"admin"`
	// Conns caps the attestation API's open connections (default 1024 in
	// total, 16 per source address).
	Conns ConnLimits `yaml:"conns"`
	// Work caps the attestation API's enrollments, quotes and identity
	// renewals in progress (default 64 in total, 4 per source address;
	// with attest_behind_nat, per_source defaults to max): one beyond
	// them is answered 429 with a Retry-After, which the agent honours.
	Work ConnLimits `yaml:"work"`
	// Retention bounds what the store keeps (docs/store.md, "Retention");
	// zero fields keep the defaults.
	Retention Retention `yaml:"retention"`
}

// Retention bounds the attestations and evidence the store keeps. Zero
// fields keep the defaults; negative ones are refused.
type Retention struct {
	// MaxAge: attestations older than this are deleted with the evidence
	// only they referenced (default 2160h, 90 days), except each host's
	// latest attestation and latest pass, every incident's first and last
	// attestation, and everything an unresolved incident holds.
	MaxAge time.Duration `yaml:"max_age"`
	// Every is how often the appliance deletes (default 1m).
	Every time.Duration `yaml:"every"`
	// Batch bounds the attestations deleted each time, in one
	// transaction (default 1000, at most 10000).
	Batch int `yaml:"batch"`
	// StoredFailures is how many failed attestations of one host are
	// stored with their evidence within FailureWindow (default 10, at most
	// 10000). Failures beyond it are still decided and counted on the
	// host's incident with their reasons; their evidence is not stored. A
	// pass and a failure that opens or reopens an incident are always
	// stored.
	StoredFailures int `yaml:"stored_failures"`
	// FailureWindow is the window of StoredFailures (default 1h).
	FailureWindow time.Duration `yaml:"failure_window"`
	// IncidentFailures bounds the failed attestations stored for one
	// incident, whatever the window (default 50, at most 10000): what
	// a host failing for as long as its incident stays unresolved stores.
	IncidentFailures int `yaml:"incident_failures"`
}

// MaxRetentionBatch and MaxStoredFailures bound Retention's counts (the
// store's limits).
const (
	MaxRetentionBatch = 10000
	MaxStoredFailures = 10000
)

func (r Retention) validate() []error {
	var errs []error
	for name, d := range map[string]time.Duration{"max_age": r.MaxAge, "every": r.Every, "failure_window": r.FailureWindow} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("retention.%s: negative", name))
		}
	}
	if r.Batch < 0 || r.Batch > MaxRetentionBatch {
		errs = append(errs, fmt.Errorf("retention.batch: %d not within 0 to %d", r.Batch, MaxRetentionBatch))
	}
	for name, n := range map[string]int{"stored_failures": r.StoredFailures, "incident_failures": r.IncidentFailures} {
		if n < 0 || n > MaxStoredFailures {
			errs = append(errs, fmt.Errorf("retention.%s: %d not within 0 to %d", name, n, MaxStoredFailures))
		}
	}
	return errs
}

// ConnLimits caps a listener's open connections (TFTP: its transfers): Max
// in total and PerSource from one source address (an IPv4 address, or an
// IPv6 /64). Connections beyond them are closed as soon as they are
// accepted. Zero keeps the default; the appliance refuses to start when the
// caps of all its listeners need more file descriptors than its
// RLIMIT_NOFILE allows.
type ConnLimits struct {
	Max       int `yaml:"max"`
	PerSource int `yaml:"per_source"`
}

func (l ConnLimits) validate(name string) error {
	if l.Max < 0 || l.PerSource < 0 {
		return fmt.Errorf("%s: negative", name)
	}
	if l.Max > 0 && l.PerSource > l.Max {
		return fmt.Errorf("%s: per_source %d above max %d", name, l.PerSource, l.Max)
	}
	return nil
}

// Admin configures the operators' API and dashboard (docs/admin.md).
type Admin struct {
	// Listen is the admin API's address; keep it on the management
	// network, e.g. 192.0.2.10:9443, never on the boot network.
	Listen string `yaml:"listen"`
	// Operators is the operator CA's directory (created on first start);
	// `bootgate operator add` issues operator certificates from it.
	Operators string `yaml:"operators"`
	// URL is how operators reach the API (default https:// + listen).
	URL string `yaml:"url"`
	// ServerCA is the CA operators trust for the appliance's TLS
	// certificate (default: ca.pem next to tls.cert).
	ServerCA string `yaml:"server_ca"`
	// Conns caps the admin API's open connections (default 64 in total,
	// 16 per source address).
	Conns ConnLimits `yaml:"conns"`
}

// Webhook is where incident alerts are posted.
type Webhook struct {
	URL string `yaml:"url"`
}

// PKI configures the attestation CA: a root and an issuing CA in Dir
// (created on first start); host identities live IdentityTTL (default 24h)
// and are renewed over themselves (wire.PathIdentityRenew) while the host is
// admitted.
type PKI struct {
	Dir         string        `yaml:"dir"`
	IdentityTTL time.Duration `yaml:"identity_ttl"`
	// MaxAge bounds identity renewals: a host renews its identity only
	// within this time of its last attestation (default 720h, 30 days);
	// after it, the host must reboot and attest.
	MaxAge time.Duration `yaml:"max_age"`
}

// BootFiles serves a directory read-only over TFTP and HTTP. Everything a
// peer on the boot network can make these servers hold is capped; zero
// fields keep the defaults (docs/dhcp.md, "Boot files").
type BootFiles struct {
	Dir  string `yaml:"dir"`
	TFTP string `yaml:"tftp"` // listen address, e.g. 10.23.0.1:69
	HTTP string `yaml:"http"` // listen address for UEFI HTTP boot (optional)
	// HTTPConns caps open HTTP connections (default 256, 8 per source).
	HTTPConns ConnLimits `yaml:"http_conns"`
	// TFTPTransfers caps concurrent TFTP transfers (default 64, 2 per
	// source); a read request beyond them is dropped unanswered.
	TFTPTransfers ConnLimits `yaml:"tftp_transfers"`
	// HTTPReadHeaderTimeout bounds the wait for a request's headers
	// (default 5s).
	HTTPReadHeaderTimeout time.Duration `yaml:"http_read_header_timeout"`
	// HTTPIdleTimeout closes a keep-alive connection idle this long
	// (default 15s).
	HTTPIdleTimeout time.Duration `yaml:"http_idle_timeout"`
	// TransferTime bounds sending one file over either protocol (default
	// 5m); size it for the largest file over the slowest link.
	TransferTime time.Duration `yaml:"transfer_time"`
	// TFTPTimeout is the wait for each TFTP acknowledgement (default 3s).
	TFTPTimeout time.Duration `yaml:"tftp_timeout"`
	// TFTPRetries is how many times an unacknowledged TFTP block is sent
	// again (default 2, at most 10).
	TFTPRetries int `yaml:"tftp_retries"`
}

// Gateway configures admission at the appliance's forwarding path.
type Gateway struct {
	// Interface is the boot network interface whose forwarding is governed.
	Interface string `yaml:"interface"`
	// Sync is how often the admitted set is reconciled with the store
	// (default 1s): the longest a quarantine takes to cut a host off.
	Sync time.Duration `yaml:"sync"`
}

// DHCP configures the attestation-gated DHCP server (docs/dhcp.md).
type DHCP struct {
	Interface string `yaml:"interface"` // the boot network interface
	ServerIP  string `yaml:"server_ip"` // the appliance's address on it
	Endpoint  string `yaml:"endpoint"`  // attestation API URL for agents (option 43)
	// Alternates are the other replicas' attestation API URLs, for agents
	// to try when endpoint cannot be reached (option 43 holds them all in
	// 255 bytes).
	Alternates []string `yaml:"alternates"`
	CA         string   `yaml:"ca"`        // appliance CA (PEM) whose fingerprint agents get
	BootFile   string   `yaml:"boot_file"` // TFTP path of the agent UKI for PXE clients
	BootURL    string   `yaml:"boot_url"`  // HTTP URL of the agent UKI for UEFI HTTP boot
	Quarantine Pool     `yaml:"quarantine"`
	Production Pool     `yaml:"production"`
	// Relays are the IPv4 addresses (giaddr) of the DHCP relay agents whose
	// requests are answered; their option 82 is recorded with the lease.
	// Empty (the default): no relays, and a request with a nonzero giaddr
	// gets no answer.
	Relays []string `yaml:"relays"`
}

// Pool is one address pool.
type Pool struct {
	Start     string        `yaml:"start"`
	End       string        `yaml:"end"`
	PrefixLen int           `yaml:"prefix_len"`
	Router    string        `yaml:"router"`
	DNS       []string      `yaml:"dns"`
	LeaseTime time.Duration `yaml:"lease_time"`
}

// Boot names the production OS files. The agent checks their SHA-256, which
// the verifier computes at start, and the kernel's signature is checked again
// by kexec_file_load under Secure Boot lockdown.
type Boot struct {
	Kernel  string `yaml:"kernel"`
	Initrd  string `yaml:"initrd"`
	Cmdline string `yaml:"cmdline"`
	// Signer is the certificate (PEM) that must have signed the kernel; the
	// agent refuses a kernel it did not sign.
	Signer string `yaml:"signer"`
}

// TLS names the appliance's server certificate and key (PEM).
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// EK is the EK provenance configuration.
type EK struct {
	// Roots is a directory of manufacturer root and intermediate
	// certificates (PEM or DER).
	Roots string `yaml:"roots"`
	// Allow lists host IDs (hex, from the EK public key) of TPMs without an
	// EK certificate that may enroll. Risk: nothing vouches for such a TPM
	// but the operator who listed it.
	Allow []string `yaml:"allow"`
	// AllowSHA1 accepts EK certificates signed with SHA-1, as some older
	// TPMs' are (Nuvoton's NTC root 02 EKs). Risk: SHA-1 collisions are
	// practical, so a CA still signing with it could be led to sign a
	// forged certificate.
	AllowSHA1 bool `yaml:"allow_sha1"`
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty configuration", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	paths := []*string{&c.TLS.Cert, &c.TLS.Key, &c.Policy, &c.PolicyReference, &c.EK.Roots, &c.SessionKey}
	if !strings.Contains(c.Store, "://") {
		paths = append(paths, &c.Store) // a file, not a URL
	}
	if c.Boot != nil {
		paths = append(paths, &c.Boot.Kernel, &c.Boot.Initrd, &c.Boot.Signer)
	}
	if c.DHCP != nil {
		paths = append(paths, &c.DHCP.CA)
	}
	if c.BootFiles != nil {
		paths = append(paths, &c.BootFiles.Dir)
	}
	if c.PKI != nil {
		paths = append(paths, &c.PKI.Dir)
	}
	if c.Admin != nil {
		if c.Admin.ServerCA == "" && c.TLS.Cert != "" {
			c.Admin.ServerCA = filepath.Join(filepath.Dir(c.TLS.Cert), "ca.pem")
		}
		paths = append(paths, &c.Admin.Operators, &c.Admin.ServerCA)
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	req := func(name, v string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required", name))
		}
	}
	req("listen", c.Listen)
	req("tls.cert", c.TLS.Cert)
	req("tls.key", c.TLS.Key)
	req("policy", c.Policy)
	req("store", c.Store)
	if strings.Contains(c.Store, "://") && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		errs = append(errs, errors.New("store: a URL must be postgres:// (or postgresql://); a file is named by its path"))
	}
	req("ek.roots", c.EK.Roots)
	if c.DHCP != nil {
		req("dhcp.interface", c.DHCP.Interface)
		req("dhcp.server_ip", c.DHCP.ServerIP)
		req("dhcp.endpoint", c.DHCP.Endpoint)
		// Agents refuse anything but https:// (they trust only TLS to the
		// CA they carry): a cleartext URL here would leave them unable to
		// attest.
		for i, u := range append([]string{c.DHCP.Endpoint}, c.DHCP.Alternates...) {
			name := "dhcp.endpoint"
			if i > 0 {
				name = fmt.Sprintf("dhcp.alternates[%d]", i-1)
			}
			if p, err := url.Parse(u); u != "" && (err != nil || p.Scheme != "https" || p.Host == "") {
				errs = append(errs, fmt.Errorf("%s: %q is not an https:// URL", name, u))
			}
		}
		for name, p := range map[string]Pool{"quarantine": c.DHCP.Quarantine, "production": c.DHCP.Production} {
			req("dhcp."+name+".start", p.Start)
			req("dhcp."+name+".end", p.End)
			if p.PrefixLen <= 0 || p.PrefixLen > 32 || p.LeaseTime <= 0 {
				errs = append(errs, fmt.Errorf("dhcp.%s: prefix_len and lease_time are required", name))
			}
		}
		for _, r := range c.DHCP.Relays {
			if ip := net.ParseIP(r).To4(); ip == nil || ip.IsUnspecified() {
				errs = append(errs, fmt.Errorf("dhcp.relays: %q is not an IPv4 address", r))
			}
		}
	}
	if c.BootFiles != nil {
		req("bootfiles.dir", c.BootFiles.Dir)
		if c.BootFiles.TFTP == "" && c.BootFiles.HTTP == "" {
			errs = append(errs, errors.New("bootfiles: give tftp or http"))
		}
		b := c.BootFiles
		errs = append(errs, b.HTTPConns.validate("bootfiles.http_conns"), b.TFTPTransfers.validate("bootfiles.tftp_transfers"))
		for name, d := range map[string]time.Duration{"http_read_header_timeout": b.HTTPReadHeaderTimeout,
			"http_idle_timeout": b.HTTPIdleTimeout, "transfer_time": b.TransferTime, "tftp_timeout": b.TFTPTimeout} {
			if d < 0 {
				errs = append(errs, fmt.Errorf("bootfiles.%s: negative", name))
			}
		}
		if b.TFTPRetries < 0 || b.TFTPRetries > 10 {
			errs = append(errs, fmt.Errorf("bootfiles.tftp_retries: %d not within 0 to 10", b.TFTPRetries))
		}
	}
	if c.Webhook != nil {
		req("webhook.url", c.Webhook.URL)
	}
	if c.Admin != nil {
		req("admin.listen", c.Admin.Listen)
		req("admin.operators", c.Admin.Operators)
		if c.Admin.URL == "" {
			c.Admin.URL = "https://" + c.Admin.Listen
		}
		errs = append(errs, c.Admin.Conns.validate("admin.conns"))
	}
	if c.Gateway != nil {
		req("gateway.interface", c.Gateway.Interface)
		if c.DHCP == nil {
			errs = append(errs, errors.New("gateway: needs dhcp (admitted addresses are production leases)"))
		}
	}
	if c.Boot != nil {
		req("boot.kernel", c.Boot.Kernel)
		req("boot.initrd", c.Boot.Initrd)
		// The production OS is served only to hosts presenting an identity
		// the attestation CA issued: without one, anyone could fetch it.
		if c.PKI == nil {
			errs = append(errs, errors.New("boot: needs pki (boot files are served only to admitted hosts' identities)"))
		}
	}
	errs = append(errs, c.Conns.validate("conns"), c.Work.validate("work"))
	errs = append(errs, c.Retention.validate()...)
	if c.SessionTTL < 0 {
		errs = append(errs, errors.New("session_ttl: negative"))
	}
	for _, p := range c.PCRs {
		if p < 0 || p > 23 {
			errs = append(errs, fmt.Errorf("pcrs: %d is not a PCR", p))
		}
	}
	return errors.Join(errs...)
}

// UncoveredPCRsError reports PCRs that the policy reads but the quote does
// not cover: the rules reading them would pass with nothing to check.
type UncoveredPCRsError struct {
	Missing []int // sorted PCR indices
	Quoted  []int // the PCRs the appliance asks agents to quote
}

func (e *UncoveredPCRsError) Error() string {
	names := make([]string, len(e.Missing))
	for i, p := range e.Missing {
		names[i] = fmt.Sprintf("PCR %d", p)
	}
	return fmt.Sprintf("pcrs: the policy reads %s, which the quoted PCRs %v leave out; add them to pcrs", strings.Join(names, ", "), e.Quoted)
}

// CheckQuotedPCRs returns an *UncoveredPCRsError unless quoted (the PCRs the
// appliance asks every quote to cover, after defaults) contains every PCR in
// read (policy.Policy.PCRs).
func CheckQuotedPCRs(quoted, read []int) error {
	var missing []int
	for _, p := range read {
		if !slices.Contains(quoted, p) && !slices.Contains(missing, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return &UncoveredPCRsError{Missing: missing, Quoted: slices.Sorted(slices.Values(quoted))}
}

// DefaultPCRs are the SHA-256 PCRs every quote must cover when pcrs is not
// set: 0 to 15.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// QuotedPCRs returns the PCRs the appliance asks every quote to cover: pcrs,
// or DefaultPCRs.
func (c *Config) QuotedPCRs() []int {
	if len(c.PCRs) == 0 {
		return DefaultPCRs
	}
	return c.PCRs
}

// Appliance is a configuration checked together with the files it depends
// on that decide admission: the parsed policy, whose PCRs the quoted PCRs
// cover, and the policy reference's replayed boot state. Only
// LoadAppliance makes one.
type Appliance struct {
	*Config
	// Policy is the parsed, validated policy file (Config.Policy).
	Policy *policy.Policy
	// Reference is the policy reference's boot state (nil without
	// policy_reference or without admin: only the admin API shows it).
	Reference *eventlog.BootState
}

// LoadAppliance reads and validates a configuration file (Load), loads its
// policy and checks that the quoted PCRs (QuotedPCRs) cover every PCR the
// policy reads, and, with an admin section, replays the policy reference.
// Errors: Load's; policy.Load's unchanged (they name the policy file); an
// *UncoveredPCRsError prefixed with path; a policy reference that cannot
// be read or replayed as "policy_reference: read event log: …" or
// "policy_reference: FILE: …".
func LoadAppliance(path string) (*Appliance, error) {
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	pol, ref, err := c.loadPolicy()
	var uncovered *UncoveredPCRsError
	if errors.As(err, &uncovered) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	return &Appliance{Config: c, Policy: pol, Reference: ref}, nil
}

// loadPolicy reads c's policy file, checks that the quoted PCRs cover it,
// and, with an admin section, replays the policy reference: what
// LoadAppliance and ReloadPolicy share.
func (c *Config) loadPolicy() (*policy.Policy, *eventlog.BootState, error) {
	pol, err := policy.Load(c.Policy)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckQuotedPCRs(c.QuotedPCRs(), pol.PCRs()); err != nil {
		return nil, nil, err
	}
	var ref *eventlog.BootState
	if c.Admin != nil && c.PolicyReference != "" {
		if ref, err = replay(c.PolicyReference, pol.Bank()); err != nil {
			return nil, nil, fmt.Errorf("policy_reference: %w", err)
		}
	}
	return pol, ref, nil
}

// ReloadPolicy reads a's policy file and policy reference again, as
// LoadAppliance does, for an operator's reload: it returns the new policy
// and reference, or LoadAppliance's errors, and changes nothing in a.
func (a *Appliance) ReloadPolicy() (*policy.Policy, *eventlog.BootState, error) {
	pol, ref, err := a.loadPolicy()
	if err != nil {
		return nil, nil, err
	}
	// A file caught while an editor writes it can parse cut short (a last
	// section missing is still a policy): read it again, and refuse it if
	// it changed meanwhile. Replacing the file by a rename avoids both.
	again, err := os.ReadFile(a.Config.Policy)
	if err != nil {
		return nil, nil, fmt.Errorf("read policy: %w", err)
	}
	if !bytes.Equal(again, pol.Source()) {
		return nil, nil, fmt.Errorf("%s: %w: the file changed while it was read; write the new policy to a temporary file and rename it over the old one", a.Config.Policy, policy.ErrInvalid)
	}
	return pol, ref, nil
}

// replay replays an event log against itself in the PCR bank h (the
// policy's, so that the reference compares with hosts' logs): there is no
// quote offline, so this is what the log claims, which is what a policy is
// written against.
func replay(path string, h crypto.Hash) (*eventlog.BootState, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	st, err := eventlog.Offline(raw, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

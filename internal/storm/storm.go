// Package storm is a boot-storm load generator: it plays many hosts, each
// with its own TPM impersonated in software (internal/softtpm), through the
// agent's whole exchange with real appliances over TLS (enroll, credential
// activation, quote over a firmware log, identity key certification), and
// checks what each host gets back as the agent would: a passing verdict, an
// identity certificate for its own identity key, and credentials that its
// TPM really unseals. A host that does not get all of it is an error.
//
// Each host connects from its own loopback address (127.x.y.z, which Linux
// routes to lo without configuration) and quotes that address with its own
// MAC, so that the appliance's link check (the connection comes from the
// quoted address) and its per-source connection caps see separate hosts.
// Each host makes one TLS connection with a full handshake, as a booting
// agent does: no session is resumed across hosts.
package storm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bootgate/bootgate/internal/softtpm"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Config is one storm.
type Config struct {
	// URLs are the appliances' attestation API base URLs
	// (https://127.0.0.1:8443); host i goes to URLs[i % len(URLs)].
	URLs []string
	// Roots verify the appliances' TLS certificates.
	Roots *x509.CertPool
	// Concurrency bounds the hosts in flight at once (default 32).
	Concurrency int
	// Timeout bounds one host's whole exchange, retries included
	// (default 60 s).
	Timeout time.Duration
	// MaxRetries bounds the retries of one request answered 429 or 503
	// with Retry-After (default 20).
	MaxRetries int
	// MaxRetryAfter caps the wait a Retry-After asks for (default 5 s).
	MaxRetryAfter time.Duration
	// Failover, when set, makes a host whose exchange met a transport
	// error (an appliance down or killed) start it again on the next URL,
	// after FailoverPause, as the agent moves to another replica; at most
	// MaxRetries times. Without it a transport error is the host's error.
	Failover bool
	// FailoverPause is the wait before an exchange starts again after a
	// transport error (default 200 ms).
	FailoverPause time.Duration
	// Finished, if set, counts the hosts whose exchange has ended, as they
	// end, for a caller that acts midway through a storm.
	Finished *atomic.Int64
}

// DefaultFirstSource is the first simulated host's source address.
var DefaultFirstSource = netip.MustParseAddr("127.1.0.1")

// Host is one simulated host: its software TPM, the event log its
// firmware wrote, and the link it attests from.
type Host struct {
	TPM      *softtpm.TPM
	EventLog []byte
	MAC      net.HardwareAddr
	IP       netip.Addr
}

// Manufacture makes n hosts that booted with eventLog: each a software
// TPM with its EK certified by m and its PCRs replayed from eventLog, a
// locally administered MAC and a loopback address from first (see
// DefaultFirstSource; host i uses the i-th address after first, skipping
// .0 and .255). It runs on up to workers goroutines.
func Manufacture(m *softtpm.Manufacturer, eventLog []byte, n, workers int, first netip.Addr) ([]*Host, error) {
	pcrs, err := softtpm.Replay(eventLog)
	if err != nil {
		return nil, err
	}
	if !first.IsValid() {
		first = DefaultFirstSource
	}
	addrs, err := sourceAddrs(first, n)
	if err != nil {
		return nil, err
	}
	hosts := make([]*Host, n)
	var next atomic.Int64
	errs := make([]error, max(workers, 1))
	var wg sync.WaitGroup
	for w := range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || errs[w] != nil {
					return
				}
				tp, err := softtpm.New(m, nil)
				if err == nil {
					err = tp.SetPCRs(pcrs)
				}
				if err != nil {
					errs[w] = err
					return
				}
				hosts[i] = &Host{TPM: tp, EventLog: eventLog, IP: addrs[i],
					MAC: net.HardwareAddr{0x02, 0x42, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("manufacture hosts: %w", err)
	}
	return hosts, nil
}

// sourceAddrs returns n IPv4 addresses from first on, skipping those whose
// last byte is 0 or 255; they must stay within 127.0.0.0/8.
func sourceAddrs(first netip.Addr, n int) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		if !a.Is4() || a.As4()[0] != 127 {
			return nil, fmt.Errorf("source addresses from %v: %d hosts leave 127.0.0.0/8", first, n)
		}
		if b := a.As4()[3]; b != 0 && b != 255 {
			out = append(out, a)
		}
	}
	return out, nil
}

// Outcome is one host's exchange.
type Outcome struct {
	Host    int
	Latency time.Duration // from the first request to the checked result
	Retries int           // requests answered 429/503 with Retry-After and sent again
	// Failovers counts the moves to the next URL after a transport error
	// (Config.Failover); CrossQuotes is 1 when the admitting quote was
	// taken by another appliance than the one the host enrolled with.
	Failovers, CrossQuotes int
	Err                    error // nil: admitted, with an identity and unsealed credentials
	Admitted               time.Time
	// HostID and AttestationID are the appliance's, from the admitting
	// result.
	HostID        string
	AttestationID int64
}

// Result is a storm's outcome.
type Result struct {
	Outcomes []Outcome
	Elapsed  time.Duration
	// CPU is this process's CPU time (user + system) during the storm.
	CPU time.Duration
}

// Run plays hosts against cfg.URLs, at most cfg.Concurrency at once, and
// returns every host's outcome. It returns early only when ctx ends (the
// hosts not started then are counted as errors).
func Run(ctx context.Context, cfg Config, hosts []*Host) (*Result, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("storm: no appliance URL")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 20
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 5 * time.Second
	}
	if cfg.FailoverPause <= 0 {
		cfg.FailoverPause = 200 * time.Millisecond
	}
	res := &Result{Outcomes: make([]Outcome, len(hosts))}
	cpu0 := cpuTime()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(cfg.Concurrency, len(hosts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(hosts) {
					return
				}
				o := &res.Outcomes[i]
				o.Host = i
				if err := ctx.Err(); err != nil {
					o.Err = err
					continue
				}
				t0 := time.Now()
				cfg.play(ctx, hosts[i], i, o)
				o.Admitted = time.Now()
				o.Latency = o.Admitted.Sub(t0)
				if cfg.Finished != nil {
					cfg.Finished.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = cpuTime() - cpu0
	return res, nil
}

// play runs host h's exchange against URL i mod the count and records its
// outcome in o. With cfg.Failover, a transport error moves to the next URL
// as the agent does: an enrollment starts again there, and a quote is sent
// there as it is (any replica sharing the session key takes it); a quote
// the next replica does not know (its session was used up before the
// appliance went away, or the replicas do not share a key) starts the
// exchange again there.
func (cfg *Config) play(ctx context.Context, h *Host, i int, o *Outcome) {
	u := i
	next := func() bool {
		if !cfg.Failover || o.Failovers >= cfg.MaxRetries || ctx.Err() != nil || !transportError(o.Err) {
			return false
		}
		o.Failovers++
		u++
		select {
		case <-ctx.Done():
			return false
		case <-time.After(cfg.FailoverPause):
			return true
		}
	}
	url := func() string { return cfg.URLs[u%len(cfg.URLs)] }
	for {
		enrolledAt := u
		p, n, err := cfg.Enroll(ctx, h, url())
		o.Retries += n
		if o.Err = err; err != nil {
			if next() {
				continue
			}
			return
		}
		for {
			res, n, err := cfg.Quote(ctx, h, p, url())
			o.Retries += n
			if o.Err = err; err == nil {
				o.HostID, o.AttestationID = res.HostID, res.AttestationID
				if u%len(cfg.URLs) != enrolledAt%len(cfg.URLs) {
					o.CrossQuotes++
				}
				return
			}
			var se *StatusError
			if cfg.Failover && u != enrolledAt && errors.As(err, &se) && se.Code == wire.CodeUnknownSession {
				break // enroll again where the quote landed
			}
			if !next() {
				return
			}
		}
	}
}

// TransportError is a request that got no whole answer: the appliance
// could not be reached, or went away mid-exchange.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

func transportError(err error) bool {
	var te *TransportError
	return errors.As(err, &te)
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// client is one host's HTTP client: one connection from the host's own
// address, no session resumption.
func (cfg *Config) client(h *Host) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: h.IP.AsSlice()}, Timeout: cfg.Timeout}
	return &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS13},
		MaxIdleConnsPerHost: 1,
	}}
}

// Pending is a host enrolled with one appliance, its quote made and ready
// to send: to that appliance, or to any replica that shares its session key.
type Pending struct {
	hostID string
	req    wire.QuoteRequest
}

// Enroll runs host h's enrollment with the appliance at base and makes its
// quote as the agent does (credential activation, identity certification,
// a quote over the link): what Quote sends. It returns the retries spent
// on 429/503 answers.
func (cfg *Config) Enroll(ctx context.Context, h *Host, base string) (_ *Pending, retries int, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c := cfg.client(h)
	defer c.CloseIdleConnections()
	tp := h.TPM
	pub, cd, att, sig := tp.AKParams()
	var enr wire.EnrollResponse
	retries, err = cfg.post(ctx, c, base+wire.PathEnroll, wire.EnrollRequest{EKCert: tp.EKCert(), EKPublic: tp.EKPublic(),
		AK: wire.AKParams{Public: pub, CreateData: cd, CreateAttestation: att, CreateSignature: sig}}, &enr)
	if err != nil {
		return nil, retries, fmt.Errorf("enroll: %w", err)
	}
	secret, err := tp.ActivateCredential(enr.Credential, enr.Secret)
	if err != nil {
		return nil, retries, err
	}
	certify, csig, err := tp.CertifyIdentity(enr.Nonce)
	if err != nil {
		return nil, retries, err
	}
	qd, err := wire.QualifyingData(enr.Nonce, h.MAC, h.IP)
	if err != nil {
		return nil, retries, err
	}
	quote, qsig, err := tp.Quote(qd, enr.PCRs)
	if err != nil {
		return nil, retries, err
	}
	req := wire.QuoteRequest{Session: enr.Session, ActivationSecret: secret, Quote: quote, Signature: qsig,
		EventLog: h.EventLog, MAC: h.MAC.String(), IP: h.IP.String(),
		Identity: &wire.IdentityRequest{Public: tp.IdentityPublic(), CertifyInfo: certify, Signature: csig}}
	for _, i := range enr.PCRs {
		if i < 0 || i >= softtpm.NumPCRs {
			return nil, retries, fmt.Errorf("the appliance asks for PCR %d", i)
		}
		req.PCRs = append(req.PCRs, wire.PCR{Index: i, Digest: tp.PCR(i)})
	}
	return &Pending{hostID: enr.HostID, req: req}, retries, nil
}

// Quote sends p's quote to the appliance at base and checks the result as
// the agent would (check). It returns the retries spent on 429/503 answers.
func (cfg *Config) Quote(ctx context.Context, h *Host, p *Pending, base string) (_ *wire.Result, retries int, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c := cfg.client(h)
	defer c.CloseIdleConnections()
	var res wire.Result
	if retries, err = cfg.post(ctx, c, base+wire.PathQuote, p.req, &res); err != nil {
		return nil, retries, fmt.Errorf("quote: %w", err)
	}
	if err := check(h, p.hostID, &res); err != nil {
		return nil, retries, err
	}
	return &res, retries, nil
}

// check verifies a result as the agent acts on it: a pass for this host,
// an identity certificate for this TPM's identity key signed by the
// issuer that comes with it, and credentials that this TPM unseals.
func check(h *Host, hostID string, res *wire.Result) error {
	if res.Verdict != wire.VerdictPass {
		reasons := make([]string, 0, len(res.Reasons))
		for _, r := range res.Reasons {
			reasons = append(reasons, r.Rule)
		}
		return fmt.Errorf("verdict %q (%s)", res.Verdict, strings.Join(reasons, ", "))
	}
	if res.HostID != hostID {
		return fmt.Errorf("result for host %q, enrolled as %q", res.HostID, hostID)
	}
	if res.Identity == nil {
		return errors.New("no identity certificate")
	}
	cert, err := x509.ParseCertificate(res.Identity.Cert)
	if err != nil {
		return fmt.Errorf("identity certificate: %w", err)
	}
	if !h.TPM.IdentityKey().Equal(cert.PublicKey) {
		return errors.New("the identity certificate is for another key")
	}
	if len(res.Identity.Chain) == 0 {
		return errors.New("the identity certificate comes without its issuer")
	}
	issuer, err := x509.ParseCertificate(res.Identity.Chain[0])
	if err != nil {
		return fmt.Errorf("identity issuer: %w", err)
	}
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("identity certificate: %w", err)
	}
	if len(res.Credentials) == 0 {
		return errors.New("no credentials")
	}
	for _, c := range res.Credentials {
		v, err := h.TPM.Unseal(c.Public, c.Duplicate, c.EncryptedSeed, c.PCRs)
		if err != nil {
			return fmt.Errorf("credential %q: %w", c.Name, err)
		}
		if c.Name == "bootstrap-token" && len(v) == 0 {
			return errors.New("empty bootstrap token")
		}
	}
	return nil
}

// StatusError is a non-2xx answer that is not retried.
type StatusError struct {
	Status int
	Code   wire.Code
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d %s", e.Status, e.Code) }

// post sends one JSON request; an answer 429, or 503 with Retry-After, is
// waited for (Retry-After in seconds, capped by MaxRetryAfter; 100 ms when
// absent) and sent again, up to MaxRetries times. It returns the number of
// retries.
func (cfg *Config) post(ctx context.Context, c *http.Client, url string, in, out any) (int, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	for retries := 0; ; retries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return retries, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return retries, &TransportError{err}
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxBodyBytes))
		resp.Body.Close()
		if err != nil {
			return retries, &TransportError{fmt.Errorf("read response: %w", err)}
		}
		ra := resp.Header.Get("Retry-After")
		if resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode == http.StatusServiceUnavailable && ra != "") {
			if retries >= cfg.MaxRetries {
				return retries, fmt.Errorf("HTTP %d after %d retries", resp.StatusCode, retries)
			}
			wait := 100 * time.Millisecond
			if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
				wait = min(time.Duration(s)*time.Second, cfg.MaxRetryAfter)
			}
			select {
			case <-ctx.Done():
				return retries, ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			var e wire.Error
			_ = json.Unmarshal(b, &e)
			return retries, &StatusError{Status: resp.StatusCode, Code: e.Code}
		}
		if err := json.Unmarshal(b, out); err != nil {
			return retries, fmt.Errorf("decode response: %w", err)
		}
		return retries, nil
	}
}

// Summary is a storm's figures.
type Summary struct {
	Hosts, Admitted, Errors, Retries int
	Elapsed                          time.Duration
	P50, P99                         time.Duration
	// Rate is admitted hosts per second of the storm.
	Rate float64
	// GeneratorCPU is the generator's CPU time during the storm.
	GeneratorCPU time.Duration
	// FirstErrors counts the errors by message (at most 10 distinct).
	FirstErrors map[string]int
}

// Summarize computes a storm's figures; latencies are those of admitted
// hosts.
func (r *Result) Summarize() Summary {
	s := Summary{Hosts: len(r.Outcomes), Elapsed: r.Elapsed, GeneratorCPU: r.CPU, FirstErrors: map[string]int{}}
	var lat []time.Duration
	for _, o := range r.Outcomes {
		s.Retries += o.Retries
		if o.Err != nil {
			s.Errors++
			msg := o.Err.Error()
			if _, ok := s.FirstErrors[msg]; ok || len(s.FirstErrors) < 10 {
				s.FirstErrors[msg]++
			}
			continue
		}
		s.Admitted++
		lat = append(lat, o.Latency)
	}
	slices.Sort(lat)
	s.P50, s.P99 = percentile(lat, 50), percentile(lat, 99)
	if r.Elapsed > 0 {
		s.Rate = float64(s.Admitted) / r.Elapsed.Seconds()
	}
	return s
}

// percentile is the nearest-rank percentile p of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

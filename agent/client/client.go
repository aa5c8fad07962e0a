// Package client is the agent's side of the attestation protocol: it proves
// the TPM's identity (EK certificate, AK activation) and its boot state (quote
// and event log) to the verifier and returns the verdict.
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bootgate/bootgate/agent/tpm"
	"github.com/bootgate/bootgate/verifier/wire"
)

// APIError is a refusal from the verifier, with its documented code
// (wire.CodeHTTP when the answer was not a wire.Error).
type APIError struct {
	Status  int
	Code    wire.Code
	Message string
	// RetryAfter is the wait the answer's Retry-After header asked for
	// (whole seconds; the HTTP-date form is ignored), at most
	// MaxRetryAfter; zero without one.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("verifier refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// MaxRetryAfter bounds the wait a verifier's Retry-After can ask of the
// agent: a longer one is taken as this.
const MaxRetryAfter = 5 * time.Minute

// retryAfter reads a Retry-After header's delta-seconds, bounded by
// MaxRetryAfter; anything else (absent, a date, garbage, negative) is 0.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get(wire.RetryAfterHeader))
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0
	}
	if len(v) > 9 { // more seconds than MaxRetryAfter in any case
		return MaxRetryAfter
	}
	n, _ := strconv.Atoi(v) // nine digits at most: no error
	return min(time.Duration(n)*time.Second, MaxRetryAfter)
}

// Client talks to one verifier, or to one replica of it at a time. A Client
// is used by one goroutine at a time.
type Client struct {
	// BaseURL is the verifier's address, e.g. https://10.0.0.1:8443.
	BaseURL string
	// Alternates are other replicas of the verifier (sharing its store and
	// session key). When a request cannot reach BaseURL (a transport
	// error, not a refusal or the caller's cancellation), BaseURL moves to
	// the next of BaseURL and Alternates, in turn, for the caller's retry.
	Alternates []string
	endpoints  []string // the first BaseURL, then Alternates
	current    int      // BaseURL's index in endpoints
	// HTTP must trust the appliance's CA (the agent carries it in its
	// measured initramfs) and should carry a timeout.
	HTTP   *http.Client
	Logger *slog.Logger
	// AK is the attestation key algorithm; ECC P-256 by default.
	AK tpm.AKAlg
	// Identity asks for a host identity certificate for the TPM's identity
	// key (certified by the AK); the key stays loaded in Report.IdentityKey.
	Identity bool
	// Link returns the link the attestation is bound to (its quote's
	// qualifying data is wire.QualifyingData of the nonce, this MAC and this
	// IPv4 address): the MAC of the interface the agent leased its address
	// on, and that address. The verifier refuses the attestation
	// (wire.CodeLinkMismatch) unless it arrives from that address, leased to
	// that MAC. Nil: the link of the connection the enrollment went over
	// (LocalLink).
	Link func() (net.HardwareAddr, netip.Addr, error)
}

// Report describes one attestation, for the console and for measurements.
type Report struct {
	Result wire.Result
	// EK is the EK the verifier enrolled (closed; tpm.ReloadEK makes it
	// usable): credentials are sealed to it.
	EK          tpm.EK
	TPMCommands int
	Duration    time.Duration
	// IdentityKey is loaded when Client.Identity was set; the caller closes
	// it. With a pass, Result.Identity certifies it.
	IdentityKey *tpm.Key
}

// Attest runs one attestation with t and the raw TCG event log of this boot.
// A returned Report carries the verifier's verdict (pass or fail); an error
// means there is no verdict (TPM failure, refusal, verifier unreachable). In
// both of the latter cases the caller must treat the host as not admitted.
func (c *Client) Attest(ctx context.Context, t *tpm.TPM, eventLog []byte) (*Report, error) {
	start, cmds0 := time.Now(), t.Commands()
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eks, err := t.EKs()
	if err != nil {
		return nil, fmt.Errorf("find endorsement keys: %w", err)
	}
	defer func() {
		for _, ek := range eks {
			if ek.Public != nil {
				_ = t.CloseEK(ek)
			}
		}
	}()
	if len(eks) == 0 {
		return nil, errors.New("find endorsement keys: none")
	}
	ak, err := t.NewAK(c.AK)
	if err != nil {
		return nil, fmt.Errorf("create attestation key: %w", err)
	}
	defer ak.Close()

	// Try the EKs in the TPM's preference order; an EK the verifier cannot
	// trust may be followed by one it can.
	var (
		enr    wire.EnrollResponse
		chosen tpm.EK
		errs   []error
	)
	// Without a Link, the connection the enrollment goes over names this
	// end's address (the boot agent always sets Link).
	var local net.Addr
	enrollCtx := ctx
	if c.Link == nil {
		enrollCtx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr() },
		})
	}
	for _, ek := range eks {
		err := c.postPatiently(enrollCtx, wire.PathEnroll, wire.EnrollRequest{EKCert: ek.Cert, EKPublic: ek.Public, AK: ak.Params()}, &enr)
		if err == nil {
			chosen = ek
			break
		}
		errs = append(errs, fmt.Errorf("EK %s: %w", ek.Type, err))
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Code != wire.CodeEKUntrusted {
			break
		}
	}
	if chosen.Public == nil {
		return nil, fmt.Errorf("enroll: %w", errors.Join(errs...))
	}
	log.Info("enrolled", "host", enr.HostID, "ek", chosen.Type)
	// A TPM without a resource manager has few object slots: free the EKs
	// that were not chosen before activation needs one.
	for i, ek := range eks {
		if ek.Handle != chosen.Handle {
			_ = t.CloseEK(ek)
			eks[i] = tpm.EK{}
		}
	}

	secret, err := ak.ActivateCredential(chosen, enr.Credential, enr.Secret)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	// The EK's work is done: free its object slot for the identity key.
	for i := range eks {
		if eks[i].Public != nil {
			_ = t.CloseEK(eks[i])
			eks[i] = tpm.EK{}
		}
	}
	var identity *wire.IdentityRequest
	var idKey *tpm.Key
	if c.Identity {
		if idKey, err = t.IdentityKey(); err != nil {
			return nil, err
		}
		attest, sig, err := ak.Certify(idKey, enr.Nonce)
		if err != nil {
			idKey.Close()
			return nil, err
		}
		identity = &wire.IdentityRequest{Public: idKey.Public(), CertifyInfo: attest, Signature: sig}
	}
	keep := false
	defer func() {
		if idKey != nil && !keep {
			idKey.Close()
		}
	}()
	var mac net.HardwareAddr
	var ip netip.Addr
	if c.Link != nil {
		mac, ip, err = c.Link()
	} else {
		mac, ip, err = LocalLink(local)
	}
	if err != nil {
		return nil, fmt.Errorf("attestation link: %w", err)
	}
	qd, err := wire.QualifyingData(enr.Nonce, mac, ip)
	if err != nil {
		return nil, fmt.Errorf("attestation link: %w", err)
	}
	bank, err := wire.ParseBank(enr.PCRBank)
	if err != nil {
		return nil, fmt.Errorf("quote: the verifier names a bank this agent does not quote: %w", err)
	}
	quote, sig, err := ak.QuoteBank(qd, bank, enr.PCRs)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	values, err := t.BankPCRs(bank, enr.PCRs)
	if err != nil {
		return nil, fmt.Errorf("read PCRs: %w", err)
	}
	req := wire.QuoteRequest{
		Session: enr.Session, ActivationSecret: secret, Quote: quote, Signature: sig, EventLog: eventLog,
		Identity: identity, MAC: mac.String(), IP: ip.String(),
	}
	for _, i := range enr.PCRs {
		req.PCRs = append(req.PCRs, wire.PCR{Index: i, Digest: values[i]})
	}
	// A quote of another bank than SHA-256 comes with a SHA-256 quote of
	// the boundary PCR: the verifier sees that this boot has not been
	// handed over in the bank every agent marks.
	if bank != crypto.SHA256 {
		bq, bsig, err := ak.QuoteBank(qd, crypto.SHA256, []int{wire.BoundaryPCR})
		if err != nil {
			return nil, fmt.Errorf("quote the boundary: %w", err)
		}
		bv, err := t.BankPCRs(crypto.SHA256, []int{wire.BoundaryPCR})
		if err != nil {
			return nil, fmt.Errorf("read the boundary PCR: %w", err)
		}
		req.Boundary = &wire.BoundaryQuote{Quote: bq, Signature: bsig, PCRs: []wire.PCR{{Index: wire.BoundaryPCR, Digest: bv[wire.BoundaryPCR]}}}
	}
	rep := &Report{EK: chosen}
	if err := c.postPatiently(ctx, wire.PathQuote, req, &rep.Result); err != nil {
		return nil, fmt.Errorf("submit quote: %w", err)
	}
	rep.TPMCommands = t.Commands() - cmds0
	rep.Duration = time.Since(start)
	rep.IdentityKey, keep = idKey, true
	return rep, nil
}

// Retries of a request refused with wire.CodeRetryLater: the appliance
// refused it before reading it (an enrollment was not made, a quote's
// session is still unused), and waiting its Retry-After saves the TPM's
// work that starting over would cost (a new AK, activation, quote). At
// most patientRetries retries, waiting at most patientWait in all, well
// within a session's lifetime (60 s by default); beyond, the refusal is
// returned and the caller's backoff takes over.
const (
	patientRetries = 3
	patientWait    = 20 * time.Second
)

// postPatiently is post, retrying a CodeRetryLater refusal after its
// Retry-After (with up to a quarter of it of jitter, so that the agents
// refused together come back apart) within patientRetries and patientWait.
func (c *Client) postPatiently(ctx context.Context, path string, in, out any) error {
	var waited time.Duration
	for try := 0; ; try++ {
		err := c.post(ctx, path, in, out)
		var apiErr *APIError
		if err == nil || try == patientRetries || !errors.As(err, &apiErr) || apiErr.Code != wire.CodeRetryLater || apiErr.RetryAfter <= 0 {
			return err
		}
		d := apiErr.RetryAfter + time.Duration(mrand.Int64N(int64(apiErr.RetryAfter/4)+1))
		if waited+d > patientWait {
			return err
		}
		waited += d
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// LocalLink is the link of a connection's local address: that IPv4 address
// and the MAC of the interface that holds it (six zero bytes for an interface
// without one, such as loopback). It fails for an IPv6 address, or one that
// no interface of this network namespace holds.
func LocalLink(local net.Addr) (net.HardwareAddr, netip.Addr, error) {
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return nil, netip.Addr{}, fmt.Errorf("no local TCP address (%v)", local)
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if ip = ip.Unmap(); !ok || !ip.Is4() {
		return nil, netip.Addr{}, fmt.Errorf("local address %v is not IPv4", tcp.IP)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || !n.IP.Equal(tcp.IP) {
				continue
			}
			switch len(ifc.HardwareAddr) {
			case wire.MACLen:
				return ifc.HardwareAddr, ip, nil
			case 0:
				return make(net.HardwareAddr, wire.MACLen), ip, nil
			default:
				return nil, netip.Addr{}, fmt.Errorf("interface %s has a %d-byte hardware address, not a MAC", ifc.Name, len(ifc.HardwareAddr))
			}
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("no interface holds the local address %s", ip)
}

// RenewIdentity asks the verifier to reissue the identity that c.HTTP
// presents (an mTLS client with the identity and its TPM-resident key, as
// IdentityClient makes) for the same key.
func (c *Client) RenewIdentity(ctx context.Context) (*wire.Identity, error) {
	var id wire.Identity
	if err := c.post(ctx, wire.PathIdentityRenew, struct{}{}, &id); err != nil {
		return nil, fmt.Errorf("renew identity: %w", err)
	}
	return &id, nil
}

// ErrNotHTTPS refuses a verifier URL that is not https://: the agent trusts
// nothing but TLS to the CA it carries, and an endpoint named by DHCP (or an
// alternate) is whatever a rogue DHCP server says.
var ErrNotHTTPS = errors.New("the verifier's URL is not https://")

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	if !isHTTPS(c.BaseURL) {
		return fmt.Errorf("%w: %q", ErrNotHTTPS, c.BaseURL)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.failover(err)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e wire.Error
		if json.Unmarshal(b, &e) != nil || e.Code == "" {
			e = wire.Error{Code: wire.CodeHTTP, Message: strings.TrimSpace(string(b))}
		}
		return &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Message, RetryAfter: retryAfter(resp.Header)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// failover moves BaseURL to the next endpoint after a transport error, when
// there are alternates.
func (c *Client) failover(cause error) {
	if len(c.Alternates) == 0 {
		return
	}
	if c.endpoints == nil {
		c.endpoints = []string{c.BaseURL}
		for _, a := range c.Alternates {
			if isHTTPS(a) { // nothing else is ever tried
				c.endpoints = append(c.endpoints, a)
			}
		}
	}
	from := c.BaseURL
	c.current = (c.current + 1) % len(c.endpoints)
	c.BaseURL = c.endpoints[c.current]
	if c.Logger != nil {
		c.Logger.Warn("verifier unreachable; the next attempt goes to another replica", "from", from, "to", c.BaseURL, "err", cause)
	}
}

// isHTTPS reports whether u is an absolute https:// URL with a host.
func isHTTPS(u string) bool {
	p, err := url.Parse(u)
	return err == nil && p.Scheme == "https" && p.Host != ""
}

// IdentityClient returns an HTTP client that presents the host identity
// (certificate and chain, private key in the TPM) to servers that roots
// trust.
func IdentityClient(roots *x509.CertPool) func(*wire.Identity, *tpm.Key) *http.Client {
	return func(id *wire.Identity, key *tpm.Key) *http.Client {
		cert := tls.Certificate{Certificate: append([][]byte{id.Cert}, id.Chain...), PrivateKey: key.Signer()}
		return &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		}}
	}
}

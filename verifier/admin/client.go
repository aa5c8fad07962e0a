package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Profile is what an operator needs to reach an appliance's admin API: its
// address, the CA its server certificate chains to, and the operator's
// certificate and key (PEM). `bootgate operator add` writes it, mode 0600.
type Profile struct {
	Admin       string `yaml:"admin"` // https://host:port
	ServerCA    string `yaml:"server_ca"`
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// LoadProfile reads and checks an operator profile.
func LoadProfile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read operator profile: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("operator profile %s: %w", path, err)
	}
	if p.Admin == "" || p.ServerCA == "" || p.Certificate == "" || p.Key == "" {
		return nil, fmt.Errorf("operator profile %s: admin, server_ca, certificate and key are required", path)
	}
	return &p, nil
}

// Client calls an appliance's admin API.
type Client struct {
	base     string
	http     *http.Client
	operator string
}

// NewClient makes a client from a profile: it presents the operator's
// certificate and trusts only the profile's server CA.
func NewClient(p *Profile) (*Client, error) {
	cert, err := tls.X509KeyPair([]byte(p.Certificate), []byte(p.Key))
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(p.ServerCA)) {
		return nil, errors.New("operator profile: no certificate in server_ca")
	}
	u, err := url.Parse(p.Admin)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("operator profile: admin %q is not an https URL", p.Admin)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS13}}
	return &Client{base: u.Scheme + "://" + u.Host, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}, operator: leaf.Subject.CommonName}, nil
}

// APIError is a refusal from the admin API: its body, the appliance's one
// error envelope, with wire.CodeHTTP and the status text when the answer
// was not one.
type APIError struct {
	Status int
	Body   wire.Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("appliance refused (%d %s): %s", e.Status, e.Body.Code, e.Body.Message)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet {
		req.Header.Set("X-Bootgate-Operator", c.operator)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	const maxAnswer = 256 << 20
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if len(b) > maxAnswer {
		return fmt.Errorf("admin API: the answer to %s is larger than %d bytes", path, maxAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		return apiError(resp.StatusCode, b)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API: decode %s: %w", path, err)
	}
	return nil
}

// apiError makes the error of a non-200 answer from its body.
func apiError(status int, body []byte) *APIError {
	ae := &APIError{Status: status}
	if json.Unmarshal(body, &ae.Body) != nil || ae.Body.Code == "" {
		ae.Body = wire.Error{Code: wire.CodeHTTP, Message: http.StatusText(status)}
	} else if ae.Body.Message == "" {
		ae.Body.Message = http.StatusText(status)
	}
	return ae
}

// WhoAmI returns the operator the appliance sees.
func (c *Client) WhoAmI(ctx context.Context) (string, error) {
	var out struct{ Operator string }
	err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, &out)
	return out.Operator, err
}

// Summary returns the fleet counts.
func (c *Client) Summary(ctx context.Context) (*Summary, error) {
	var s Summary
	return &s, c.do(ctx, http.MethodGet, "/api/v1/summary", nil, &s)
}

// Hosts returns one page of hosts.
func (c *Client) Hosts(ctx context.Context, q store.HostQuery) (*HostPage, error) {
	v := url.Values{}
	setNonEmpty(v, "state", q.State)
	setNonEmpty(v, "prefix", q.Prefix)
	setNonEmpty(v, "after", q.After)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var p HostPage
	return &p, c.do(ctx, http.MethodGet, "/api/v1/hosts?"+v.Encode(), nil, &p)
}

// Host returns one host in detail.
func (c *Client) Host(ctx context.Context, id string) (*HostDetail, error) {
	var d HostDetail
	return &d, c.do(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(id), nil, &d)
}

// Quarantine quarantines a host.
func (c *Client) Quarantine(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(id)+"/quarantine", struct{}{}, &store.Host{})
}

// Incidents returns one page of incidents.
func (c *Client) Incidents(ctx context.Context, q store.IncidentQuery) (*IncidentPage, error) {
	v := url.Values{}
	setNonEmpty(v, "state", q.State)
	setNonEmpty(v, "host", q.Host)
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var p IncidentPage
	return &p, c.do(ctx, http.MethodGet, "/api/v1/incidents?"+v.Encode(), nil, &p)
}

// Incident returns one incident with its evidence summary and diff.
func (c *Client) Incident(ctx context.Context, id int64) (*IncidentDetail, error) {
	var d IncidentDetail
	return &d, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/incidents/%d", id), nil, &d)
}

// Bundle returns an incident's evidence bundle as the appliance wrote it
// (JSON).
func (c *Client) Bundle(ctx context.Context, id int64) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/incidents/%d/bundle", id), nil, &b)
}

// MaxBundleBytes bounds an evidence bundle WriteBundle accepts: the
// appliance writes at most MaxBundleAttestations failures, each with an
// event log of at most 1 MiB (base64 in JSON), and the last pass.
const MaxBundleBytes = 256 << 20

// WriteBundle streams an incident's evidence bundle, as the appliance
// writes it (JSON), to w, and returns the bytes written. A transfer the
// appliance broke off, or one over MaxBundleBytes, is an error: what w
// received is then not a whole bundle.
func (c *Client) WriteBundle(ctx context.Context, id int64, w io.Writer) (int64, error) {
	path := fmt.Sprintf("/api/v1/incidents/%d/bundle", id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // an error envelope
		return 0, apiError(resp.StatusCode, b)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, MaxBundleBytes+1))
	if err != nil {
		return n, fmt.Errorf("admin API: %s: %w", path, err)
	}
	if n > MaxBundleBytes {
		return n, fmt.Errorf("admin API: the bundle of incident %d is larger than %d bytes", id, MaxBundleBytes)
	}
	return n, nil
}

// Act applies an operator's action to an incident.
func (c *Client) Act(ctx context.Context, id int64, a Action) error {
	var out json.RawMessage
	return c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/incidents/%d/actions", id), a, &out)
}

// Audit returns one page of the audit log, newest first.
func (c *Client) Audit(ctx context.Context, before int64, limit int) (*AuditPage, error) {
	v := url.Values{}
	if before > 0 {
		v.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var p AuditPage
	return &p, c.do(ctx, http.MethodGet, "/api/v1/audit?"+v.Encode(), nil, &p)
}

func setNonEmpty(v url.Values, k, s string) {
	if s != "" {
		v.Set(k, s)
	}
}

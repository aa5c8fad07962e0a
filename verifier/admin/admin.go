// Package admin is the appliance's operator interface: a JSON API and the
// web dashboard, both served over mTLS to holders of an operator certificate
// (pki.Operators) only. Every operator action goes through the store, which
// writes it to the append-only audit log under the certificate's name.
// docs/admin.md documents the endpoints.
package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

//go:embed web
var webFiles embed.FS

// Lease is a host's current DHCP lease, as the dashboard shows it.
type Lease struct {
	IP      string      `json:"ip"`
	MAC     string      `json:"mac"`
	Pool    string      `json:"pool"`
	Expires time.Time   `json:"expires"`
	Relay   *LeaseRelay `json:"relay,omitempty"` // absent for clients on the boot network itself
}

// LeaseRelay is the DHCP relay agent that carried a lease's REQUEST and its
// option 82 (RFC 3046) circuit and remote IDs, escaped for display (no
// control characters; other bytes as \xNN). They are what the request
// said, unverified: a relay is recognised by its UDP source address, which
// anyone on the path can forge, so the IDs may name any port.
type LeaseRelay struct {
	Addr      string `json:"addr"`
	CircuitID string `json:"circuit_id,omitempty"`
	RemoteID  string `json:"remote_id,omitempty"`
}

// LeaseSource tells the hosts' current leases (the DHCP gate's memory).
type LeaseSource interface {
	HostLeases(hostIDs []string, now time.Time) map[string]Lease
	CountByPool(now time.Time) map[string]int
}

// Options configure the admin API. Store and Operators are required.
type Options struct {
	Store     *store.SQLite
	Operators *pki.Operators
	// Policy is the policy in force: incidents of hosts without a passing
	// attestation are explained against it, or against Reference.
	Policy *policy.Policy
	// Reference is the boot state of the known-good log the policy was
	// learned from (optional); ReferenceName names it.
	Reference     *eventlog.BootState
	ReferenceName string
	Leases        LeaseSource // nil without the DHCP gate
	Logger        *slog.Logger
	// MaxStreams bounds the dashboards connected for live updates at once
	// (default 32).
	MaxStreams int
	// Heartbeat is how often a live stream sends the summary unasked
	// (default 10 s), so that lease counts stay current.
	Heartbeat time.Duration
}

// API serves the admin API and the dashboard.
type API struct {
	opt Options
	// policyInForce is the policy and reference incidents are compared with;
	// SetPolicy replaces them.
	policyInForce atomic.Pointer[inForce]

	streamMu    sync.Mutex
	streams     int            // live streams open
	perOperator map[string]int // live streams open by operator
}

// inForce is the policy in force and the reference it was learned from.
type inForce struct {
	policy        *policy.Policy
	reference     *eventlog.BootState
	referenceName string
}

func (a *API) inForce() inForce { return *a.policyInForce.Load() }

// SetPolicy puts a reloaded policy (nil: none) and its reference (nil:
// none, named name) in force for what the API shows from now on.
func (a *API) SetPolicy(p *policy.Policy, reference *eventlog.BootState, name string) {
	a.policyInForce.Store(&inForce{policy: p, reference: reference, referenceName: name})
}

// New checks the options and makes an API.
func New(opt Options) (*API, error) {
	if opt.Store == nil || opt.Operators == nil {
		return nil, errors.New("admin: store and operators are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.MaxStreams <= 0 {
		opt.MaxStreams = 32
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = 10 * time.Second
	}
	a := &API{opt: opt}
	a.SetPolicy(opt.Policy, opt.Reference, opt.ReferenceName)
	return a, nil
}

// TLSConfig completes a server TLS configuration for the admin listener: the
// client is asked for a certificate, which the handler verifies, so that a
// caller without one gets a readable refusal rather than a failed handshake.
func TLSConfig(serverCert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequestClientCert,
	}
}

// Server returns an HTTP server for the admin API with bounded reads. Writes
// are bounded per request (a minute; each write of a live stream ten
// seconds), because live streams stay open.
func (a *API) Server() *http.Server {
	return &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.opt.Logger.Handler(), slog.LevelDebug),
	}
}

// Serve serves the admin API on ln (a TLS listener) until ctx ends.
func (a *API) Serve(ctx context.Context, ln net.Listener) error {
	hs := a.Server()
	context.AfterFunc(ctx, func() { hs.Close() })
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type operatorKey struct{}

// operator returns the name of the operator the request came from.
func operator(r *http.Request) string {
	name, _ := r.Context().Value(operatorKey{}).(string)
	return name
}

// Handler returns the API's handler: every path needs an operator
// certificate.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"operator": operator(r)})
	})
	mux.HandleFunc("GET /api/v1/summary", a.summary)
	mux.HandleFunc("GET /api/v1/hosts", a.hosts)
	mux.HandleFunc("GET /api/v1/hosts/{id}", a.host)
	mux.HandleFunc("POST /api/v1/hosts/{id}/quarantine", a.quarantine)
	mux.HandleFunc("GET /api/v1/incidents", a.incidents)
	mux.HandleFunc("GET /api/v1/incidents/{id}", a.incident)
	mux.HandleFunc("GET /api/v1/incidents/{id}/bundle", a.bundle)
	mux.HandleFunc("POST /api/v1/incidents/{id}/actions", a.act)
	mux.HandleFunc("GET /api/v1/audit", a.audit)
	mux.HandleFunc("GET /api/v1/events", a.events)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	web, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(web)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, wire.CodeMethod, "the dashboard is read with GET")
			return
		}
		files.ServeHTTP(w, r)
	})
	return a.authenticate(mux)
}

// authenticate admits requests that present an operator certificate of this
// appliance, refuses state changes that a browser could be tricked into
// sending from another site, and sets the pages' security headers.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		if r.TLS == nil {
			writeError(w, http.StatusUnauthorized, wire.CodeNoTLS, "the admin API is served over TLS only")
			return
		}
		name, err := a.opt.Operators.Verify(r.TLS.PeerCertificates, time.Now())
		if err != nil {
			status := http.StatusForbidden
			if len(r.TLS.PeerCertificates) == 0 {
				status = http.StatusUnauthorized
			}
			a.opt.Logger.Warn("admin request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			writeError(w, status, wire.CodeNotAnOperator, err.Error())
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// A cross-site form or fetch cannot set this header without a
			// preflight, which this API never answers.
			if r.Header.Get("X-Bootgate-Operator") != name {
				writeError(w, http.StatusForbidden, wire.CodeCSRF, "state changes need the X-Bootgate-Operator header naming the certificate's operator")
				return
			}
			if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(strings.TrimPrefix(o, "https://"), r.Host) {
				writeError(w, http.StatusForbidden, wire.CodeCSRF, "cross-origin request refused")
				return
			}
		}
		if r.URL.Path != "/api/v1/events" {
			// The server sets no write timeout, for the live streams'
			// sake; every other answer must be written within a minute.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), operatorKey{}, name)))
	})
}

// Error is the body of every refusal: the appliance's one error envelope,
// {"code": "...", "message": "..."}, shared with the attestation API.
type Error = wire.Error

func writeError(w http.ResponseWriter, status int, code wire.Code, msg string) {
	writeJSON(w, status, wire.Error{Code: code, Message: msg})
}

// writeJSON answers v as JSON with every string escaped (textsafe.JSON):
// the dashboard and the CLI show these answers, and much of their text
// came from hosts. Evidence bundles, which must stay as received, are
// written as stored, streamed (writeBundle).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		b, err = textsafe.JSON(b)
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"code":"internal","message":"cannot encode the answer"}` + "\n"))
		return
	}
	var out bytes.Buffer
	_ = json.Indent(&out, b, "", "  ")
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

// storeError maps a store error to a response.
func (a *API) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, wire.CodeNotFound, err.Error())
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusConflict, wire.CodeRefused, err.Error())
	case errors.Is(err, context.Canceled):
	default:
		a.opt.Logger.Error("admin request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "the appliance could not read its store; see its log")
	}
}

// Package server is the verifier's attestation API: it enrolls TPMs, issues
// activation challenges and single-use nonces, verifies quotes and event logs,
// evaluates the policy and records every verdict with its evidence.
// docs/api.md documents the endpoints.
package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootgate/bootgate/internal/textsafe"
	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/attest"
	"github.com/bootgate/bootgate/verifier/connlimit"
	"github.com/bootgate/bootgate/verifier/eventlog"
	"github.com/bootgate/bootgate/verifier/pki"
	"github.com/bootgate/bootgate/verifier/policy"
	"github.com/bootgate/bootgate/verifier/seal"
	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// DefaultPCRs are the SHA-256 PCRs every quote must cover.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// Options configure a Server. Roots, Policy and Store are required.
type Options struct {
	Roots      *attest.Roots
	Policy     *policy.Policy
	Store      Store
	Logs       attest.LogVerifier // default attest.DirectLogs
	Logger     *slog.Logger       // default discards
	Now        func() time.Time   // default time.Now
	Rand       io.Reader          // default crypto/rand
	PCRs       []int              // default DefaultPCRs
	SessionTTL time.Duration      // default 60 s
	// SessionKey seals the enrollment sessions into the tokens agents
	// return with their quotes (SessionKeySize bytes): replicas that share
	// a store and serve the same agents share it, so that any of them can
	// take any quote. Default: a random key, good for this process only.
	SessionKey []byte
	// Boot is the production OS that passing hosts boot; nil for none.
	Boot *BootOS
	// CA issues host identity certificates with passing verdicts; nil for
	// none. With a CA the boot files require mTLS with an identity of an
	// admitted host.
	CA *pki.CA
	// IdentityTTL is the identity certificates' lifetime (default 24h).
	IdentityTTL time.Duration
	// IdentityMaxAge, if set, bounds renewals: an identity is renewed only
	// within this time of the host's last attestation; after it, the host
	// must reboot and attest to get one.
	IdentityMaxAge time.Duration
	// Metrics, if set, counts attestations, refusals and verification time.
	Metrics *Metrics
	// Credentials returns the secrets registered for a host, sealed to it
	// with every pass besides its bootstrap token (default: none).
	Credentials func(hostID string) []Secret
	// Recorded, if set, is told of every recorded verdict and the link it
	// was bound to (the DHCP gate binds that MAC to the host). It is called
	// only for attestations whose link checked out (see Leases).
	Recorded func(ctx context.Context, hostID string, link Link)
	// Leases, if set, is the boot network's lease store (the DHCP gate): a
	// quote is accepted only if the quoted IP is leased to the quoted MAC
	// now, and the quoted MAC is bound to no other host than the one
	// attesting. Without it (no DHCP gate) the link is still checked: the
	// quote must be over it and the connection must come from its IP.
	Leases LinkLeases
	// BehindNAT says that the attestation API is reached through network
	// address translation, so connections do not come from the agents'
	// addresses: the source address check is skipped (the quote's binding
	// to its MAC and IP, and the lease and host-binding checks, remain).
	// Risk: any TPM with a trusted EK may then quote any leased link whose
	// MAC is bound to no other host, with no spoofing; without the DHCP
	// gate nothing ties a quote to the link it arrived on. Off by default.
	BehindNAT bool
	// Refusals, if set, records attestations refused for their link, with
	// both links (default: Store, if it has RecordAction, as store.SQLite
	// does; else they are only logged).
	Refusals RefusalLog
	// Work bounds the requests of the expensive endpoints (enrollment,
	// quote, identity renewal) in progress at once, from the moment the
	// request's body has been read (see BodyTimeout) until it is
	// answered: in all, and per source address (IPv4 address or IPv6 /64,
	// connlimit.Source), so that one source cannot take the slots the
	// others need. A request beyond either cap
	// is answered 429 wire.CodeRetryLater with a Retry-After of
	// RetryAfter, having done nothing. Zero fields take DefaultWork; with
	// BehindNAT every agent shares the translator's address, so a zero
	// PerSource is the total.
	Work connlimit.Limits
	// RetryAfter is the wait a 429 answer asks for, rounded up to whole
	// seconds (default 1 s).
	RetryAfter time.Duration
	// BodyTimeout bounds the wait for the whole body of a request to an
	// expensive endpoint, from the moment its handler starts reading it
	// (default DefaultBodyTimeout). The body is read before the request
	// takes a slot of Work, so a peer that sends headers and then stalls
	// holds no slot: it is answered 408 wire.CodeBodyTimeout when the time
	// is up.
	BodyTimeout time.Duration
}

// DefaultBodyTimeout is the default of Options.BodyTimeout: an agent sends
// at most wire.MaxBodyBytes, which a boot network carries in well under a
// second.
const DefaultBodyTimeout = 5 * time.Second

// DefaultWork is the default of Options.Work: on a small appliance 64
// requests in progress keep its cores busy while a storm's others wait their
// turn at the agents; one source may hold 4 (an agent has one at a time).
var DefaultWork = connlimit.Limits{Total: 64, PerSource: 4}

// Store is what the attestation API needs of the verifier's store (its
// port); store.SQLite implements it.
type Store interface {
	// AdmissionState reads a host's admission state, with the revision
	// Apply re-checks.
	AdmissionState(ctx context.Context, hostID string) (admission.State, error)
	// Apply records attestation a with Decision d in one transaction, if
	// the host's admission state is still basedOn; else it writes nothing
	// and returns an error wrapping admission.ErrConflict. h supplies the
	// host's EK type and issuer. It sets a.ID, a.Verdict and a.Reasons and
	// returns the incident's ID (0 for none).
	Apply(ctx context.Context, d admission.Decision, basedOn admission.Revision, a *store.Attestation, h store.Host) (incidentID int64, err error)
	// Host returns a host, or an error wrapping store.ErrNotFound.
	Host(ctx context.Context, id string) (*store.Host, error)
	// ConsumeSession marks a session's ID used, once across every replica
	// sharing the store: a second call with the same ID returns an error
	// wrapping store.ErrSessionUsed. expires is when the ID's record may go.
	ConsumeSession(ctx context.Context, id []byte, expires time.Time) error
	// RecordIdentity notes an identity issued to an admitted host (else
	// store.ErrNotAdmitted).
	RecordIdentity(ctx context.Context, r store.IdentityRecord) error
	// RevokedIdentities lists the revoked identities not expired at now.
	RevokedIdentities(ctx context.Context, now time.Time) ([]store.IdentityRecord, error)
	// IdentityValid reports whether an identity is known and not revoked.
	IdentityValid(ctx context.Context, serial string) (bool, error)
}

// Link is the network link an attestation is bound to: the IPv4 address the
// agent leased and the MAC of the interface that holds it, as its TPM quoted
// them (wire.QualifyingData).
type Link struct {
	MAC net.HardwareAddr
	IP  netip.Addr
}

// LinkLeases looks up the boot network's leases; dhcpgate.Leases implements
// it.
type LinkLeases interface {
	// BoundTo returns the MAC that ip's live, bound lease belongs to at
	// now, and false when ip has no such lease.
	BoundTo(ctx context.Context, ip net.IP, now time.Time) (net.HardwareAddr, bool)
	// HostOf returns the host ID the MAC is bound to now (the host whose
	// attestation over that MAC was last recorded, until the binding
	// expires), or "" when it is bound to none. An error refuses the
	// attestation (fail closed).
	HostOf(ctx context.Context, mac net.HardwareAddr) (string, error)
}

// RefusalLog records an action of the appliance itself in the audit log;
// store.SQLite implements it.
type RefusalLog interface {
	RecordAction(ctx context.Context, actor, action, target, detail string) error
}

// Audit log fields of a refused attempt: actor ActorAttestationAPI, action
// ActionLinkRefused, target the host ID the enrolled EK names.
const (
	ActorAttestationAPI = "attestation-api"
	ActionLinkRefused   = "attestation.refused." + string(wire.CodeLinkMismatch)
)

// Server serves the attestation API.
type Server struct {
	opt      Options
	policy   atomic.Pointer[policy.Policy] // in force; SetPolicy replaces it
	sessions *sessionSealer
	work     *connlimit.Counter // requests of the expensive endpoints in progress
	boot     *bootFiles
	fresh    []int // quoted PCRs that must be zero: bootgate's boundary

	crlMu   sync.Mutex
	crlDER  []byte
	crlMade time.Time

	renewMu  sync.Mutex
	renewals map[string]time.Time // host → its last renewal
}

// Policy returns the policy in force.
func (s *Server) Policy() *policy.Policy { return s.policy.Load() }

// SetPolicy puts p in force for every attestation decided from now on
// (an operator's reload); p must be a parsed policy (policy.Parse), and
// the caller has checked that the quoted PCRs cover it. A nil p is
// ignored.
func (s *Server) SetPolicy(p *policy.Policy) {
	if p != nil {
		s.policy.Store(p)
	}
}

// renewInterval is the shortest time between two renewals of one host's
// identity: a day-long identity needs one a day, and a host renewing in a
// loop must not fill the store or the CRL.
const renewInterval = time.Minute

// ErrBootWithoutCA refuses boot files without a CA: they are served only
// to hosts presenting an identity the CA issued.
var ErrBootWithoutCA = errors.New("new server: boot files need a CA (they are served only to admitted hosts' identities)")

// New checks the options and makes a Server.
func New(opt Options) (*Server, error) {
	if opt.Roots == nil || opt.Policy == nil || opt.Store == nil {
		return nil, errors.New("new server: roots, policy and store are required")
	}
	if opt.Logs == nil {
		opt.Logs = attest.DirectLogs
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Rand == nil {
		opt.Rand = rand.Reader
	}
	if len(opt.PCRs) == 0 {
		opt.PCRs = DefaultPCRs
	}
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = 60 * time.Second
	}
	if opt.SessionKey == nil {
		opt.SessionKey = make([]byte, SessionKeySize)
		if _, err := io.ReadFull(rand.Reader, opt.SessionKey); err != nil {
			return nil, fmt.Errorf("new server: session key: %w", err)
		}
	}
	sealer, err := newSessionSealer(opt.SessionKey)
	if err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	if opt.IdentityTTL <= 0 {
		opt.IdentityTTL = 24 * time.Hour
	}
	if opt.Credentials == nil {
		opt.Credentials = func(string) []Secret { return nil }
	}
	if opt.Refusals == nil {
		opt.Refusals, _ = opt.Store.(RefusalLog)
	}
	if opt.RetryAfter <= 0 {
		opt.RetryAfter = time.Second
	}
	if opt.BodyTimeout <= 0 {
		opt.BodyTimeout = DefaultBodyTimeout
	}
	work := opt.Work.WithDefaults(DefaultWork)
	if opt.BehindNAT && opt.Work.PerSource == 0 {
		work.PerSource = work.Total
	}
	counter, err := connlimit.NewCounter(work)
	if err != nil {
		return nil, fmt.Errorf("new server: work: %w", err)
	}
	s := &Server{opt: opt, sessions: sealer, work: counter}
	s.policy.Store(opt.Policy)
	if slices.Contains(opt.PCRs, wire.BoundaryPCR) {
		s.fresh = []int{wire.BoundaryPCR}
	} else {
		opt.Logger.Warn("the quoted PCRs leave out bootgate's boundary PCR: quotes taken after a handover are not recognised", "pcr", wire.BoundaryPCR)
	}
	if opt.Boot != nil {
		if opt.CA == nil {
			return nil, ErrBootWithoutCA
		}
		b, err := loadBootFiles(opt.Boot)
		if err != nil {
			return nil, err
		}
		s.boot = b
	}
	return s, nil
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathEnroll, s.counted(s.bounded(s.enroll)))
	mux.HandleFunc("POST "+wire.PathQuote, s.counted(s.bounded(s.quote)))
	// Routes that answer only to an admitted host's identity exist only
	// with a CA (New refuses boot files without one): without it they are
	// 404, never open.
	if s.opt.CA != nil {
		if s.boot != nil {
			mux.HandleFunc("GET "+wire.PathBoot+"{name}", s.requireIdentity(s.boot.serve))
		}
		mux.HandleFunc("GET "+wire.PathIdentity, s.requireIdentity(s.whoami))
		mux.HandleFunc("POST "+wire.PathIdentityRenew, s.counted(s.bounded(s.requireIdentity(s.renewIdentity))))
		mux.HandleFunc("GET "+wire.PathIdentityCRL, s.crl)
	}
	return mux
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollRequest
	if !decode(w, r, &req) {
		return
	}
	// Enroll checks the fields' sizes first (wire.ErrFieldTooLarge, below).
	log := s.opt.Logger.With("remote", r.RemoteAddr)
	now := s.opt.Now()
	enr, err := s.opt.Roots.Enroll(&req, now)
	if err != nil {
		log.Warn("enrollment refused", "err", err)
		switch {
		case errors.Is(err, wire.ErrFieldTooLarge):
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		case errors.Is(err, attest.ErrEKUntrusted), errors.Is(err, attest.ErrBadEK):
			writeError(w, http.StatusForbidden, wire.CodeEKUntrusted, err.Error())
		default:
			writeError(w, http.StatusBadRequest, wire.CodeBadAK, err.Error())
		}
		return
	}
	secret, cred, encSecret, err := enr.Challenge(s.opt.Rand)
	if err != nil {
		log.Error("make challenge", "host", enr.HostID, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot make an activation challenge")
		return
	}
	nonce := make([]byte, 32)
	id := make([]byte, 16)
	if _, err := io.ReadFull(s.opt.Rand, nonce); err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "no randomness")
		return
	}
	if _, err := io.ReadFull(s.opt.Rand, id); err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "no randomness")
		return
	}
	exp := now.Add(s.opt.SessionTTL)
	// The quote covers the bank of the policy in force now; a policy of
	// another bank put in force before the quote fails it by log.pcr_bank.
	bank := s.Policy().Bank()
	bankName := ""
	if bank != crypto.SHA256 {
		bankName = policy.BankName(bank)
	}
	sid, err := s.sessions.seal(s.opt.Rand, &session{
		enrollment: enr,
		expected:   attest.Expected{Secret: secret, Nonce: nonce, PCRs: slices.Clone(s.opt.PCRs), Bank: bank, Unlogged: attest.DefaultUnlogged, Fresh: s.fresh},
		nonce:      nonce,
		expires:    exp,
		id:         id,
	})
	if err != nil {
		log.Error("seal session", "host", enr.HostID, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot make a session")
		return
	}
	log.Info("enrolled", "host", enr.HostID, "ek", enr.EKType)
	writeJSON(w, http.StatusOK, wire.EnrollResponse{
		Session: sid, HostID: enr.HostID, Credential: cred, Secret: encSecret,
		Nonce: nonce, PCRs: slices.Clone(s.opt.PCRs), PCRBank: bankName, ExpiresAt: exp,
	})
}

// bankOf names a PCR bank as sessions and policies hold it: 0 is SHA-256.
func bankOf(h crypto.Hash) crypto.Hash {
	if h == 0 {
		return crypto.SHA256
	}
	return h
}

func (s *Server) quote(w http.ResponseWriter, r *http.Request) {
	var req wire.QuoteRequest
	if !decode(w, r, &req) || !checked(w, req.Check()) {
		return
	}
	now := s.opt.Now()
	// The session is used up before anything is checked: its nonce is used
	// once, whatever the outcome, on whichever replica the quote lands.
	sess, err := s.takeSession(r.Context(), req.Session, now)
	if err != nil {
		code, status := wire.CodeUnknownSession, http.StatusNotFound
		switch {
		case errors.Is(err, errExpired):
			code, status = wire.CodeNonceExpired, http.StatusGone
		case !errors.Is(err, errUnknownSession):
			s.opt.Logger.Error("take session", "remote", r.RemoteAddr, "err", err)
			writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot take the session")
			return
		}
		writeError(w, status, code, err.Error())
		return
	}
	enr := sess.enrollment
	log := s.opt.Logger.With("host", enr.HostID, "remote", r.RemoteAddr)

	// One policy decides this attestation and is recorded with it, even if
	// SetPolicy replaces it meanwhile. A session issued for another bank
	// than this policy's (pcr_bank changed since enrollment) is no verdict
	// on the host: the agent enrolls again and quotes the policy's bank.
	pol := s.Policy()
	if bankOf(pol.Bank()) != bankOf(sess.expected.Bank) {
		log.Info("quote for another PCR bank than the policy's: enroll again", "session_bank", bankOf(sess.expected.Bank), "policy_bank", bankOf(pol.Bank()))
		w.Header().Set(wire.RetryAfterHeader, "1")
		writeError(w, http.StatusConflict, wire.CodeEnrollAgain, fmt.Sprintf("the policy now describes the %v PCR bank, the session the %v bank: enroll again", bankOf(pol.Bank()), bankOf(sess.expected.Bank)))
		return
	}

	start := time.Now()
	verified, err := enr.Verify(sess.expected, &req, s.opt.Logs)
	var evErr *attest.EvidenceError
	switch {
	case err == nil, errors.As(err, &evErr), errors.Is(err, attest.ErrLinkMismatch):
	case errors.Is(err, attest.ErrActivation):
		// Not proven to come from the EK's TPM: nothing is recorded against
		// the host whose EK was presented.
		log.Warn("activation failed")
		writeError(w, http.StatusForbidden, wire.CodeActivationFailed, "the activation secret is wrong: the AK is not in the EK's TPM")
		return
	default:
		log.Error("verify", "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "verification failed unexpectedly")
		return
	}
	// The AK is proven to be in the EK's TPM. Whatever the evidence says, it
	// is the host's only if it came over the link it is bound to; a relayed
	// attestation is no verdict on the host: refused, audited, nothing else.
	link, linkErr := s.checkLink(r, &req, err, enr.HostID, now)
	if linkErr != nil {
		s.refuseLink(w, r, log, enr.HostID, &req, linkErr)
		return
	}
	in := admission.Input{Evidence: admission.Evidence{QuoteVerified: evErr == nil || evErr.Signed}}
	var stateJSON []byte
	var identityKey crypto.PublicKey
	if evErr != nil {
		in.Evidence.Failure = &wire.Reason{Rule: evErr.Check, Detail: textsafe.Clip(evErr.Detail, eventlog.MaxDetailBytes)}
	} else {
		in.Policy = evaluate(pol, enr, verified)
		stateJSON, _ = json.Marshal(verified.State)
		if req.Identity != nil && s.opt.CA != nil {
			in.Identity.Requested = true
			if identityKey, err = enr.VerifyIdentityKey(req.Identity, sess.nonce); err != nil {
				in.Identity.Failure = textsafe.Clip(err.Error(), eventlog.MaxDetailBytes)
			}
		}
	}
	a := &store.Attestation{
		HostID: enr.HostID, Time: now.UTC(),
		PolicyName: pol.Name, PolicyDigest: pol.Digest(),
		Evidence: store.Evidence{
			EKCert: enr.EKCert, EKType: enr.EKType, EKPublic: enr.EKPublic, AK: enr.AK, Nonce: sess.nonce,
			Quote: req.Quote, Signature: req.Signature, PCRs: req.PCRs, EventLog: req.EventLog,
		},
		BootState: stateJSON,
		TPM:       tpmRecord(enr, verified),
	}
	// The record completes even if the agent hangs up meanwhile.
	d, incident, err := s.admit(context.WithoutCancel(r.Context()), in, a, store.Host{ID: enr.HostID, EKType: enr.EKType, EKIssuer: enr.EKIssuer})
	if err != nil {
		// Without a record there is no verdict: the host is not admitted.
		var rerr readError
		if errors.As(err, &rerr) {
			log.Error("read admission state", "err", err)
			writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot decide")
			return
		}
		log.Error("record attestation", "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot record the attestation")
		return
	}
	// The link is the TPM's word only if the quote's signature verified.
	if s.opt.Recorded != nil && d.Effects.BindLink {
		s.opt.Recorded(context.WithoutCancel(r.Context()), enr.HostID, link)
	}
	if s.opt.Metrics != nil {
		s.opt.Metrics.Attestations.WithLabelValues(d.Verdict).Inc()
		s.opt.Metrics.VerifyTime.Observe(time.Since(start).Seconds())
	}
	log.Info("attested", "verdict", d.Verdict, "reasons", len(d.Reasons), "attestation", a.ID, "incident", incident, "verify_ms", time.Since(start).Milliseconds())
	res := wire.Result{
		AttestationID: a.ID, HostID: enr.HostID, Verdict: d.Verdict, Reasons: d.Reasons,
		IncidentID: incident, PolicyDigest: pol.Digest(),
	}
	if d.Effects.BootSpec && s.boot != nil {
		spec := s.boot.spec
		res.Boot = &spec
	}
	// Credentials only with a pass, sealed to the quoted state: every quoted
	// PCR but those that may change after the quote (IMA's PCR 10).
	if d.Effects.SealCredentials {
		creds, err := s.sealCredentials(enr, &req, sess.expected.Bank, attest.VolatilePCRs)
		if err != nil {
			log.Error("seal credentials", "err", err)
		} else {
			res.Credentials = creds
		}
	}
	// Identity only with a pass: it is contingent on attestation.
	if d.Effects.IssueIdentity && identityKey != nil {
		id, err := s.issueIdentity(r.Context(), identityKey, enr.HostID, "")
		if err != nil {
			log.Error("issue identity", "err", err)
		} else {
			res.Identity = id
			log.Info("issued identity", "not_after", id.NotAfter)
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// readError is a failure to read the admission state.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

// errConflictAgain reports that the admission state changed under a
// Decision twice in a row: the attestation is not recorded (fail closed).
var errConflictAgain = errors.New("admission state changed twice while deciding")

// admit reads the host's admission state, decides and applies the
// Decision; when the state changed under it (admission.ErrConflict) it
// reads and decides once more, and a second conflict is an error wrapping
// errConflictAgain. It returns the applied Decision and the incident's ID;
// errors reading the state are readErrors.
func (s *Server) admit(ctx context.Context, in admission.Input, a *store.Attestation, h store.Host) (admission.Decision, int64, error) {
	for attempt := 0; ; attempt++ {
		st, err := s.opt.Store.AdmissionState(ctx, a.HostID)
		if err != nil {
			return admission.Decision{}, 0, readError{err}
		}
		in.State = st
		d := admission.Decide(in)
		incident, err := s.opt.Store.Apply(ctx, d, st.Revision, a, h)
		switch {
		case err == nil:
			return d, incident, nil
		case !errors.Is(err, admission.ErrConflict):
			return admission.Decision{}, 0, err
		case attempt > 0:
			return admission.Decision{}, 0, fmt.Errorf("%w: %w", errConflictAgain, err)
		}
		s.opt.Logger.Warn("admission state changed while deciding; deciding again", "host", a.HostID)
	}
}

// checkLink decides whether a quote request that passed activation is bound
// to the link it came over. verifyErr is Verify's error: an
// attest.ErrLinkMismatch means the TPM did not quote for req's link. Then the
// connection's source address must be req.IP (unless BehindNAT) and, with
// Leases, req.IP must be leased to req.MAC now and req.MAC bound to no host
// but hostID (the host the enrolled EK names): a TPM that quotes the link
// of another host gets no verdict over it, so it cannot move that host's
// MAC (dhcpgate.ErrMACBound). It returns the link, or why the request is
// refused: an error wrapping attest.ErrLinkMismatch.
func (s *Server) checkLink(r *http.Request, req *wire.QuoteRequest, verifyErr error, hostID string, now time.Time) (Link, error) {
	if errors.Is(verifyErr, attest.ErrLinkMismatch) {
		return Link{}, verifyErr
	}
	refuse := func(format string, a ...any) (Link, error) {
		return Link{}, &attest.LinkError{Detail: fmt.Sprintf(format, a...)}
	}
	mac, ip, err := wire.ParseLink(req.MAC, req.IP)
	if err != nil {
		// Verify checks the link before the quote; an EvidenceError may come
		// first only for a link that parsed. Fail closed all the same.
		return refuse("%v", err)
	}
	if !s.opt.BehindNAT {
		src, err := sourceAddr(r)
		if err != nil {
			return refuse("%v", err)
		}
		if src != ip {
			return refuse("the connection comes from %s, not from the quoted address %s", src, ip)
		}
	}
	if s.opt.Leases != nil {
		bound, ok := s.opt.Leases.BoundTo(r.Context(), net.IP(ip.AsSlice()), now)
		if !ok {
			return refuse("the quoted address %s has no lease on the boot network", ip)
		}
		if !bytes.Equal(bound, mac) {
			return refuse("the quoted address %s is leased to %s, not to the quoted MAC %s", ip, bound, mac)
		}
		owner, err := s.opt.Leases.HostOf(r.Context(), mac)
		if err != nil {
			return refuse("the host bound to the quoted MAC %s is unknown: %v", mac, err)
		}
		if owner != "" && owner != hostID {
			return refuse("the quoted MAC %s is bound to another host until its binding expires", mac)
		}
	}
	return Link{MAC: mac, IP: ip}, nil
}

// sourceAddr is the IPv4 (or unmapped IPv6) address the request came from.
func sourceAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("unreadable source address %q: %w", r.RemoteAddr, err)
	}
	return ap.Addr().Unmap(), nil
}

// refuseLink answers a relayed attestation with 403 link_mismatch and
// records the attempt in the audit log with the source address and the
// quoted link: the host's record and incidents are left alone.
func (s *Server) refuseLink(w http.ResponseWriter, r *http.Request, log *slog.Logger, hostID string, req *wire.QuoteRequest, linkErr error) {
	// What the peer sent is bounded before it reaches the log and the store.
	mac, ip, why := textsafe.Clip(req.MAC, 64), textsafe.Clip(req.IP, 64), textsafe.Clip(linkErr.Error(), 512)
	detail := fmt.Sprintf("source %s; quoted mac %q ip %q; %s", r.RemoteAddr, mac, ip, why)
	log.Warn("attestation refused: not bound to its link", "source", r.RemoteAddr, "mac", mac, "ip", ip, "why", why)
	if s.opt.Refusals != nil {
		if err := s.opt.Refusals.RecordAction(context.WithoutCancel(r.Context()), ActorAttestationAPI, ActionLinkRefused, hostID, detail); err != nil {
			log.Error("record refused attempt", "err", err)
		}
	}
	writeError(w, http.StatusForbidden, wire.CodeLinkMismatch, "the attestation is not bound to the link it came from: "+why)
}

// decode reads one JSON value of at most wire.MaxBodyBytes with no unknown
// fields, or answers the error and reports false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, wire.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if _, e := dec.Token(); err == nil && e != io.EOF { // dec.More() misses a trailing ']' or '}'
		err = errors.Join(errors.New("trailing data after the JSON object"), e)
	}
	if err == nil {
		if _, e := io.Copy(io.Discard, body); e != nil {
			err = e
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, fmt.Sprintf("body larger than %d bytes", wire.MaxBodyBytes))
			return false
		}
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

// checked answers a request whose field is over its limit (err from the
// request's Check) with 400 bad_request naming the field, and reports
// whether err was nil.
func checked(w http.ResponseWriter, err error) bool {
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code wire.Code, msg string) {
	if m, ok := w.(interface{ refused(wire.Code) }); ok {
		m.refused(code)
	}
	writeJSON(w, status, wire.Error{Code: code, Message: msg})
}

// counting counts the refusals a handler writes.
type counting struct {
	http.ResponseWriter
	m *Metrics
}

func (c counting) refused(code wire.Code) { c.m.Refusals.WithLabelValues(string(code)).Inc() }

// Unwrap lets http.ResponseController reach the connection (readBody sets
// its read deadline).
func (c counting) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// takeSession opens the session token and marks its ID used in the store:
// a token opens once. errUnknownSession for a token this server's key did
// not seal or one already used; errExpired for one whose time has passed;
// any other error is the store's.
func (s *Server) takeSession(ctx context.Context, token string, now time.Time) (*session, error) {
	sess, err := s.sessions.open(token, now)
	if err != nil {
		return nil, err
	}
	if err := s.opt.Store.ConsumeSession(ctx, sess.id, sess.expires); err != nil {
		if errors.Is(err, store.ErrSessionUsed) {
			return nil, errUnknownSession
		}
		return nil, err
	}
	return sess, nil
}

// ConfigureTLS makes tlsConfig ask clients for identity certificates issued
// by the attestation CA (verified when given; required where a handler says
// so).
func (s *Server) ConfigureTLS(tlsConfig *tls.Config) {
	if s.opt.CA == nil {
		return
	}
	tlsConfig.ClientCAs = s.opt.CA.Pool()
	tlsConfig.ClientAuth = tls.VerifyClientCertIfGiven
}

// requireIdentity lets a request through only with a verified identity
// certificate of a host that is admitted now; unknown, quarantined and
// expired identities, and every request when there is no CA, get 403.
func (s *Server) requireIdentity(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opt.CA == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			writeError(w, http.StatusForbidden, wire.CodeIdentityRequired, "a host identity certificate is required")
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		id := pki.HostID(leaf)
		host, err := s.opt.Store.Host(r.Context(), id)
		if err != nil || host.State != store.HostAdmitted {
			writeError(w, http.StatusForbidden, wire.CodeHostNotAdmitted, "host "+id+" is not admitted")
			return
		}
		// An identity revoked with an earlier quarantine stays revoked,
		// also once the host is admitted again with a new one.
		if valid, err := s.opt.Store.IdentityValid(r.Context(), leaf.SerialNumber.Text(16)); err != nil || !valid {
			writeError(w, http.StatusForbidden, wire.CodeIdentityRevoked, "this identity certificate was revoked")
			return
		}
		h(w, r)
	}
}

// sealCredentials seals this boot's credentials: a fresh bootstrap token
// (which the production OS can present to fleet services) and the
// operator-registered secrets of the host.
func (s *Server) sealCredentials(enr *attest.Enrollment, q *wire.QuoteRequest, bank crypto.Hash, skip []int) ([]wire.Credential, error) {
	bankName := ""
	if bank != crypto.SHA256 {
		bankName = policy.BankName(bank)
	}
	pcrs := map[int][]byte{}
	for _, p := range q.PCRs {
		if !slices.Contains(skip, p.Index) {
			pcrs[p.Index] = p.Digest
		}
	}
	token := make([]byte, 32)
	if _, err := io.ReadFull(s.opt.Rand, token); err != nil {
		return nil, err
	}
	secrets := []struct {
		name  string
		value []byte
	}{{"bootstrap-token", []byte(hex.EncodeToString(token))}}
	for _, c := range s.opt.Credentials(enr.HostID) {
		secrets = append(secrets, struct {
			name  string
			value []byte
		}{c.Name, c.Value})
	}
	ek := enr.EKPublicArea()
	var out []wire.Credential
	for _, sec := range secrets {
		b, err := seal.SealTo(s.opt.Rand, ek, bank, pcrs, sec.value)
		if err != nil {
			return nil, fmt.Errorf("seal %s: %w", sec.name, err)
		}
		out = append(out, wire.Credential{Name: sec.name, Public: b.Public, Duplicate: b.Duplicate, EncryptedSeed: b.EncryptedSeed, PCRs: b.PCRs, PCRBank: bankName})
	}
	return out, nil
}

// Secret is an operator-registered credential for a host.
type Secret struct {
	Name  string
	Value []byte // at most seal.MaxSecretSize bytes
}

// whoami tells a host what the appliance knows of the identity it presented:
// the permission that follows from a passing attestation, in its simplest form.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	cert := r.TLS.VerifiedChains[0][0]
	host, err := s.opt.Store.Host(r.Context(), pki.HostID(cert))
	if err != nil {
		writeError(w, http.StatusForbidden, wire.CodeHostNotAdmitted, "unknown host")
		return
	}
	writeJSON(w, http.StatusOK, wire.WhoAmI{HostID: host.ID, State: host.State, LastAttestationID: host.LastAttestationID, NotAfter: cert.NotAfter})
}

// renewIdentity reissues the presented identity for the same key: the TLS
// handshake proved that the caller holds it (in its TPM), and
// requireIdentity that its host is admitted now.
func (s *Server) renewIdentity(w http.ResponseWriter, r *http.Request) {
	if !decode(w, r, &struct{}{}) {
		return
	}
	cert := r.TLS.VerifiedChains[0][0]
	host, err := s.opt.Store.Host(r.Context(), pki.HostID(cert))
	if err != nil {
		writeError(w, http.StatusForbidden, wire.CodeHostNotAdmitted, "unknown host")
		return
	}
	now := s.opt.Now()
	s.renewMu.Lock()
	last, seen := s.renewals[host.ID]
	if !seen || now.Sub(last) >= renewInterval || now.Before(last) {
		if s.renewals == nil {
			s.renewals = map[string]time.Time{}
		}
		s.renewals[host.ID] = now
		seen = false
	}
	s.renewMu.Unlock()
	if seen {
		writeError(w, http.StatusTooManyRequests, wire.CodeTooSoon, fmt.Sprintf("the identity was renewed at %s; renew at most every %s", last.UTC().Format(time.RFC3339), renewInterval))
		return
	}
	if s.opt.IdentityMaxAge > 0 && now.Sub(host.LastSeen) > s.opt.IdentityMaxAge {
		writeError(w, http.StatusForbidden, wire.CodeAttestAgain,
			fmt.Sprintf("the host last attested at %s, more than %s ago: it gets a new identity by rebooting and attesting", host.LastSeen.UTC().Format(time.RFC3339), s.opt.IdentityMaxAge))
		return
	}
	// The renewal supersedes the identity presented: the host keeps one.
	id, err := s.issueIdentity(r.Context(), cert.PublicKey, host.ID, cert.SerialNumber.Text(16))
	if errors.Is(err, store.ErrNotAdmitted) {
		writeError(w, http.StatusForbidden, wire.CodeHostNotAdmitted, "host "+host.ID+" is not admitted")
		return
	}
	if errors.Is(err, store.ErrSuperseded) {
		writeError(w, http.StatusForbidden, wire.CodeIdentityRequired, "the identity presented was renewed or revoked already")
		return
	}
	if err != nil {
		s.opt.Logger.Error("renew identity", "host", host.ID, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot issue the identity")
		return
	}
	s.opt.Logger.Info("identity renewed", "host", host.ID, "not_after", id.NotAfter)
	writeJSON(w, http.StatusOK, id)
}

// issueIdentity issues an identity certificate and records it, so that it
// is revoked with its host's admission; an identity that could not be
// recorded is not handed out. supersedes is the serial (hex) of the
// identity a renewal replaces, revoked as this one is recorded, or "".
func (s *Server) issueIdentity(ctx context.Context, pub crypto.PublicKey, hostID, supersedes string) (*wire.Identity, error) {
	id, err := s.opt.CA.Issue(pub, hostID, s.opt.IdentityTTL)
	if err != nil {
		return nil, err
	}
	if err := s.opt.Store.RecordIdentity(context.WithoutCancel(ctx), store.IdentityRecord{
		Serial: id.Serial.Text(16), HostID: hostID, Issued: s.opt.Now(), NotAfter: id.NotAfter, Supersedes: supersedes,
	}); err != nil {
		return nil, err
	}
	return &wire.Identity{Cert: id.DER, Chain: id.Chain, NotAfter: id.NotAfter}, nil
}

// crlLifetime is how long a CRL is valid; crlCache how long one is served
// before it is made again.
const (
	crlLifetime = time.Hour
	crlCache    = 5 * time.Second
)

// crl serves the CRL of host identities, made at most every crlCache.
func (s *Server) crl(w http.ResponseWriter, r *http.Request) {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	now := s.opt.Now()
	if s.crlDER == nil || now.Sub(s.crlMade) >= crlCache || now.Before(s.crlMade) {
		revoked, err := s.opt.Store.RevokedIdentities(r.Context(), now)
		if err != nil {
			s.opt.Logger.Error("CRL", "err", err)
			writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot read the revoked identities")
			return
		}
		entries := make([]pki.Revoked, 0, len(revoked))
		for _, id := range revoked {
			n, ok := new(big.Int).SetString(id.Serial, 16)
			if !ok {
				s.opt.Logger.Error("CRL: unreadable serial", "serial", id.Serial)
				continue
			}
			entries = append(entries, pki.Revoked{Serial: n, Time: id.Revoked})
		}
		der, err := s.opt.CA.CRL(entries, big.NewInt(now.UnixNano()), now, now.Add(crlLifetime))
		if err != nil {
			s.opt.Logger.Error("CRL", "err", err)
			writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot make the CRL")
			return
		}
		s.crlDER, s.crlMade = der, now
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", int(crlCache.Seconds())))
	_, _ = w.Write(s.crlDER)
}

// bounded reads the request's body (readBody), and then lets h run, with
// the body in memory, only within Options.Work for the request's source;
// beyond it the answer is 429 wire.CodeRetryLater with a Retry-After, and
// nothing else happens.
//
// The body is read before the slot is taken, so that a peer that sends
// headers and stalls (or trickles its body) holds no slot while the
// agents wait: it holds only its connection, for at most BodyTimeout.
// The memory the bodies being read take is therefore not bounded by Work
// but by the connections the attestation API's listener admits (the
// appliance caps them with a connlimit.Listener: 1024 in all, 16 per
// source, by default) times wire.MaxBodyBytes, and grows only with the
// bytes peers actually send within BodyTimeout.
func (s *Server) bounded(h http.HandlerFunc) http.HandlerFunc {
	retry := strconv.Itoa(int((s.opt.RetryAfter + time.Second - 1) / time.Second))
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		src := connlimit.SourceOf(r.RemoteAddr)
		if !s.work.Acquire(src) {
			s.work.ReportShed(s.opt.Logger, "attestation work over the caps shed", src, "path", r.URL.Path)
			w.Header().Set(wire.RetryAfterHeader, retry)
			writeError(w, http.StatusTooManyRequests, wire.CodeRetryLater, "the appliance is busy; retry after "+retry+" s")
			return
		}
		defer s.work.Release(src)
		read := *r
		read.Body = io.NopCloser(bytes.NewReader(body))
		h(w, &read)
	}
}

// readBody reads r's whole body, at most wire.MaxBodyBytes, within
// Options.BodyTimeout (a read deadline on the connection, where the
// ResponseWriter supports one; else the server's ReadTimeout bounds it),
// or answers the error and reports false: 408 wire.CodeBodyTimeout for a
// body that did not arrive in time, 413 wire.CodeBodyTooLarge for one over
// the bound, 400 wire.CodeBadRequest for one cut short.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opt.BodyTimeout)) // http.ErrNotSupported: ReadTimeout bounds it
	// No buffer sized from Content-Length: memory follows the bytes that
	// arrive, not the bytes a peer announces.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxBodyBytes))
	// The deadline needs no lifting: at the body's end the server stops
	// applying it (HTTP/1 clears it for its background read; HTTP/2's
	// applies only to the stream's body).
	if err == nil {
		return body, true
	}
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, fmt.Sprintf("body larger than %d bytes", wire.MaxBodyBytes))
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, wire.CodeBodyTimeout, fmt.Sprintf("the body did not arrive within %s", s.opt.BodyTimeout))
	default:
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "reading the body: "+err.Error())
	}
	return nil, false
}

// WorkInProgress reports the requests of the expensive endpoints in
// progress, and the sources they come from.
func (s *Server) WorkInProgress() (requests, sources int) { return s.work.Active() }

func (s *Server) counted(h http.HandlerFunc) http.HandlerFunc {
	if s.opt.Metrics == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) { h(counting{w, s.opt.Metrics}, r) }
}

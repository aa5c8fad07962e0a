package wire

import "fmt"

// Error is the body of every non-2xx answer of the appliance's attestation
// API and of its admin API:
//
//	{"code": "unknown_session", "message": "no such session"}
//
// Code is one of the Code constants; Message is for people and may change
// between versions: clients decide by Code, never by Message. docs/api.md
// and docs/admin.md map the codes to HTTP statuses.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error makes a refusal usable as an error: "CODE: MESSAGE".
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Code names one reason a request was refused. The values are part of the
// protocol (clients and scripts match them): a constant's value never
// changes once released.
type Code string

// Refusals of the attestation API (docs/api.md).
const (
	CodeBadRequest       Code = "bad_request"       // malformed JSON or fields
	CodeBodyTooLarge     Code = "body_too_large"    // body over MaxBodyBytes
	CodeBodyTimeout      Code = "body_timeout"      // the body did not arrive in time (HTTP 408)
	CodeEKUntrusted      Code = "ek_untrusted"      // EK certificate does not chain to a manufacturer root, or no certificate and not allowlisted
	CodeBadAK            Code = "bad_ak"            // AK parameters are not those of a TPM-resident restricted signing key
	CodeUnknownSession   Code = "unknown_session"   // no such session, or its nonce was already used
	CodeNonceExpired     Code = "nonce_expired"     // the session's nonce expired before the quote arrived
	CodeActivationFailed Code = "activation_failed" // the activation secret is wrong: AK and EK are not in one TPM
	// CodeLinkMismatch refuses an attestation that is not bound to the link it
	// came from: the quote's qualifying data is not QualifyingData of the
	// session's nonce and the request's MAC and IP, or the connection's
	// source address is not IP, or the appliance's DHCP gate has not leased
	// IP to MAC. It is a relayed (or misconfigured) attestation: no verdict
	// is recorded.
	CodeLinkMismatch Code = "link_mismatch"
	CodeInternal     Code = "internal" // the appliance failed; see its log
	// CodeRetryLater (HTTP 429) refuses a request because the appliance is
	// at its bound of attestation work in progress, overall or for the
	// request's source address. The answer's Retry-After header gives the
	// seconds to wait (RetryAfterHeader); nothing was done or recorded.
	CodeRetryLater Code = "retry_later"
	// CodeEnrollAgain (HTTP 409) refuses a quote whose session was issued
	// for another PCR bank than the policy in force names: the policy's
	// pcr_bank changed between enrollment and quote. The session is used
	// up; no verdict is recorded, no incident opened. The agent enrolls
	// again (after Retry-After, if given) and quotes the new bank.
	CodeEnrollAgain Code = "enroll_again"

	// Host identity endpoints (PathIdentity, PathIdentityRenew).
	CodeIdentityRequired Code = "identity_required" // no host identity certificate was presented
	CodeHostNotAdmitted  Code = "host_not_admitted" // unknown host, or the host is not admitted
	CodeIdentityRevoked  Code = "identity_revoked"  // the presented identity certificate was revoked
	CodeTooSoon          Code = "too_soon"          // the identity was renewed too recently
	CodeAttestAgain      Code = "attest_again"      // renewal refused: the host must attest again
)

// Refusals of the admin API (docs/admin.md); CodeBadRequest and CodeInternal
// are shared with the attestation API.
const (
	CodeNotFound      Code = "not_found"       // no such endpoint, host or incident
	CodeRefused       Code = "refused"         // the action conflicts with the current state
	CodeTooLarge      Code = "too_large"       // request body over the endpoint's limit
	CodeMethod        Code = "method"          // method not allowed
	CodeNoTLS         Code = "no_tls"          // the request did not arrive over TLS
	CodeNotAnOperator Code = "not_an_operator" // no valid operator certificate
	CodeCSRF          Code = "csrf"            // a state change without the operator header, or cross-origin
	CodeBusy          Code = "busy"            // too many live streams
)

// RetryAfterHeader is the header of a CodeRetryLater answer: the whole
// seconds to wait before trying again (RFC 9110, 10.2.3; the appliance
// never sends the HTTP-date form).
const RetryAfterHeader = "Retry-After"

// CodeHTTP is never sent by the appliance: clients use it for a non-2xx
// answer whose body is not an Error (a proxy's page, say).
const CodeHTTP Code = "http"

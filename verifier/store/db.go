package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
)

// DB is a Store on an SQL database: an embedded SQLite file (OpenSQLite)
// or a PostgreSQL database that several appliances may share
// (OpenPostgres). One implementation serves both; what differs between
// them is a dialect (placeholders, column types, how write transactions
// begin and when they are retried). It is safe for concurrent use.
//
// Every write is one transaction. On SQLite, writes go through a pool of
// exactly one connection whose transactions begin IMMEDIATE, so they
// queue in-process instead of failing with SQLITE_BUSY, and reads use a
// separate pool of query-only connections, which the WAL journal lets run
// alongside the writer. On PostgreSQL, write transactions are READ
// COMMITTED, and every one that reads or changes a host's admission state
// (Apply, Record, Quarantine, Act, RecordIdentity) first takes that
// host's lock (lockHost): two Apply calls for one host on two appliances
// run one after the other, and the second's re-check of the admission
// state sees the first's write. Transactions the database rolls back for
// a deadlock run again.
type DB struct {
	d       *dialect
	write   conn // SQLite: one connection, every write transaction
	read    conn // SQLite: query-only connections; PostgreSQL: write's pool
	changes changes
	now     func() time.Time // the clock of session expiry and alert claims
	// replica names this handle in the alert claims it holds (ClaimAlerts):
	// random, one per Open.
	replica string
	// watcher notices other appliances' commits (PostgreSQL; nil on
	// SQLite).
	watcher *watcher
	lim     atomic.Pointer[Limits] // nil: DefaultLimits
}

// SQLite is the name DB had when SQLite was its only database.
//
// Deprecated: use DB.
type SQLite = DB

var _ Store = (*DB)(nil)

// Close closes the database.
func (s *DB) Close() error {
	s.watcher.stop()
	err := s.write.Close()
	if s.read.DB != s.write.DB {
		err = errors.Join(s.read.Close(), err)
	}
	if err != nil {
		return fmt.Errorf("close %s store: %w", s.d.name, err)
	}
	return nil
}

// validateRecord checks Record's input and returns the state the host gets.
func validateRecord(a *Attestation, h Host) (string, error) {
	if a == nil {
		return "", errors.New("nil attestation")
	}
	if a.HostID == "" {
		return "", errors.New("empty host ID")
	}
	if h.ID != "" && h.ID != a.HostID {
		return "", fmt.Errorf("host ID %q does not match attestation host ID %q", h.ID, a.HostID)
	}
	if a.Time.IsZero() {
		return "", errors.New("zero attestation time")
	}
	if y := a.Time.UTC().Year(); y < 1 || y > 9999 {
		return "", fmt.Errorf("attestation time %v out of range", a.Time)
	}
	var want string
	switch a.Verdict {
	case wire.VerdictPass:
		want = HostAdmitted
	case wire.VerdictFail:
		want = HostQuarantined
	default:
		return "", fmt.Errorf("unknown verdict %q", a.Verdict)
	}
	switch h.State {
	case "":
		return want, nil
	case want:
		return h.State, nil
	case HostAdmitted, HostQuarantined:
		return "", fmt.Errorf("host state %q contradicts verdict %q", h.State, a.Verdict)
	default:
		return "", fmt.Errorf("unknown host state %q", h.State)
	}
}

// Record stores a completed attestation atomically with its effect on the
// host and incidents; see Store. h supplies the host's EK type and issuer and
// state (derived from the verdict when empty; it must agree with it); its ID,
// when set, must equal a.HostID, and its other fields are ignored. On
// success it sets a.ID and returns the incident's ID, 0 on a pass. On error
// nothing is stored and a is unchanged.
//
// Record takes the verdict as given: the incident's step follows the
// workflow (admission.Next) from the incident's state at the time of
// writing, and a pass of a host whose incident is not remediated leaves the
// incident alone. The attestation API decides with admission.Decide and
// writes with Apply instead, which re-checks the state it decided on.
//
// Evidence and boot state bytes are stored exactly, nil and empty slices
// kept apart. Reasons and PCRs are stored as JSON, so invalid UTF-8 in a
// reason's text reads back as U+FFFD, as it would over the API.
func (s *DB) Record(ctx context.Context, a *Attestation, h Host) (int64, error) {
	state, err := validateRecord(a, h)
	if err != nil {
		return 0, fmt.Errorf("record attestation: %w", err)
	}
	return s.record(ctx, a, h, state, func(tx *txn) (admission.Transition, error) {
		st, err := admissionState(ctx, tx, a.HostID)
		if err != nil {
			return admission.Transition{}, err
		}
		from, id := admission.IncidentNone, int64(0)
		if st.Incident != nil {
			from, id = st.Incident.State, st.Incident.ID
		}
		ev := admission.EventPass
		if a.Verdict == wire.VerdictFail {
			ev = admission.EventFail
		}
		t, err := admission.Next(from, ev)
		switch {
		case err != nil && ev == admission.EventPass:
			t = admission.Transition{From: from, Event: ev, To: from}
		case err != nil:
			t = admission.Transition{From: from, Event: ev, To: from, Attach: true}
		}
		t.Incident = id
		return t, nil
	})
}

// AdmissionState reads a host's admission state: its state (HostUnknown for
// a host never recorded), its unresolved incident and a Revision that
// changes whenever either does (the host's state; the incident's ID, state,
// failure count or update time). One statement reads them, so they are one
// snapshot.
func (s *DB) AdmissionState(ctx context.Context, hostID string) (admission.State, error) {
	st, err := admissionState(ctx, s.read, hostID)
	if err != nil {
		return admission.State{}, fmt.Errorf("read admission state of %q: %w", hostID, err)
	}
	return st, nil
}

// querier is what conn and *txn (and *sql.DB and *sql.Tx) have in common
// that admissionState and adoptLegacy use: a database or a transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// admissionState reads hostID's admission state through q.
func admissionState(ctx context.Context, q querier, hostID string) (admission.State, error) {
	var (
		host, incState, updated sql.NullString
		incID, failures         sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `
		SELECT h.state, i.id, i.state, i.failures, i.updated
		FROM (SELECT CAST(? AS TEXT) AS id) k
		LEFT JOIN hosts h ON h.id = k.id
		LEFT JOIN incidents i ON i.host_id = k.id AND i.state <> ?`, hostID, IncidentClosed).
		Scan(&host, &incID, &incState, &failures, &updated)
	if err != nil {
		return admission.State{}, err
	}
	st := admission.State{HostID: hostID, Host: host.String}
	if incID.Valid {
		st.Incident = &admission.Incident{ID: incID.Int64, State: incState.String}
	}
	st.Revision = admission.Revision(fmt.Sprintf("host=%s;incident=%d/%s/%d/%s",
		host.String, incID.Int64, incState.String, failures.Int64, updated.String))
	return st, nil
}

// Apply implements the attestation API's store port: in one transaction it
// re-checks that the host's admission state is still basedOn (else it
// returns an error wrapping admission.ErrConflict and writes nothing), then
// records a with d's verdict and reasons, sets the host's state to
// d.HostState, carries out d.Incident and, unless the host is admitted,
// revokes its identities. h supplies the host's EK type and issuer. It sets
// a.ID, a.Verdict and a.Reasons and returns the incident's ID (0 for none).
func (s *DB) Apply(ctx context.Context, d admission.Decision, basedOn admission.Revision, a *Attestation, h Host) (int64, error) {
	if a == nil || d.HostID != a.HostID {
		return 0, errors.New("apply decision: the decision is not on this attestation's host")
	}
	rec := *a
	rec.Verdict, rec.Reasons = d.Verdict, d.Reasons
	h.State = d.HostState
	state, err := validateRecord(&rec, h)
	if err != nil {
		return 0, fmt.Errorf("apply decision: %w", err)
	}
	incident, err := s.record(ctx, &rec, h, state, func(tx *txn) (admission.Transition, error) {
		now, err := admissionState(ctx, tx, a.HostID)
		if err != nil {
			return admission.Transition{}, err
		}
		if now.Revision != basedOn {
			return admission.Transition{}, admission.ErrConflict
		}
		return d.Incident, nil
	})
	if err != nil {
		return 0, err
	}
	*a = rec
	return incident, nil
}

// record writes a and its effects in one transaction: step, called in the
// transaction before anything is written, says what happens to the host's
// incident (or refuses, and nothing is written).
func (s *DB) record(ctx context.Context, a *Attestation, h Host, state string, step func(*txn) (admission.Transition, error)) (int64, error) {
	reasons, err := json.Marshal(a.Reasons)
	if err != nil {
		return 0, fmt.Errorf("record attestation: encode reasons: %w", err)
	}
	pcrs, err := json.Marshal(a.Evidence.PCRs)
	if err != nil {
		return 0, fmt.Errorf("record attestation: encode PCRs: %w", err)
	}
	akJSON, err := json.Marshal(a.Evidence.AK)
	if err != nil {
		return 0, fmt.Errorf("record attestation: encode AK: %w", err)
	}
	tpmJSON, err := json.Marshal(a.TPM)
	if err != nil {
		return 0, fmt.Errorf("record attestation: encode TPM: %w", err)
	}
	at := formatTime(a.Time)
	logRef, certRef, stateRef := blobRef(a.Evidence.EventLog), blobRef(a.Evidence.EKCert), blobRef(a.BootState)
	lim := s.limits()

	var id, incident int64
	err = inTx(ctx, s.write, func(tx *txn) error {
		if err := lockHost(ctx, tx, a.HostID); err != nil {
			return err
		}
		t, err := step(tx)
		if err != nil {
			return err
		}

		// The host row must exist before the attestation that references it;
		// last_attestation_id is filled in once the attestation has an ID.
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO hosts (id, ek_type, ek_issuer, state, first_seen, last_seen, last_verdict)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
				ek_type = excluded.ek_type,
				ek_issuer = excluded.ek_issuer,
				state = excluded.state,
				last_seen = excluded.last_seen,
				last_verdict = excluded.last_verdict`,
			a.HostID, h.EKType, h.EKIssuer, state, at, at, a.Verdict); err != nil {
			return fmt.Errorf("upsert host: %w", err)
		}

		if a.Verdict == wire.VerdictFail && !t.Opens && t.Alert == "" {
			ok, err := underFailureLimit(ctx, tx, a.HostID, t.Incident, a.Time, lim)
			if err != nil {
				return err
			}
			if !ok {
				id = 0
				incident, err = countUnrecorded(ctx, tx, t, at, string(reasons))
				if err != nil {
					return err
				}
				return revokeIdentities(ctx, tx, a.HostID, at)
			}
		}

		ev := a.Evidence
		for _, p := range []struct{ ref, b []byte }{{logRef, ev.EventLog}, {certRef, ev.EKCert}, {stateRef, a.BootState}} {
			if err := putBlob(ctx, tx, p.ref, p.b); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, `
			INSERT INTO attestations (host_id, time, verdict, reasons, policy_name, policy_digest,
				ek_cert_sha256, ek_type, ek_public, ak, nonce, quote, signature, pcrs, event_log_sha256, boot_state_sha256, tpm)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			RETURNING id`,
			a.HostID, at, a.Verdict, string(reasons), a.PolicyName, a.PolicyDigest,
			certRef, ev.EKType, ev.EKPublic, string(akJSON), ev.Nonce, ev.Quote, ev.Signature, string(pcrs), logRef, stateRef, string(tpmJSON)).
			Scan(&id); err != nil {
			return fmt.Errorf("insert attestation: %w", err)
		}

		if _, err := tx.ExecContext(ctx, `UPDATE hosts SET last_attestation_id = ? WHERE id = ?`, id, a.HostID); err != nil {
			return fmt.Errorf("update host: %w", err)
		}

		if incident, err = applyIncident(ctx, tx, t, a.HostID, id, at, string(reasons)); err != nil {
			return err
		}
		if a.Verdict == wire.VerdictFail {
			return revokeIdentities(ctx, tx, a.HostID, at)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("record attestation: %w", err)
	}
	s.changes.notify()
	a.ID = id
	return incident, nil
}

// applyIncident carries out an attestation's incident step t for attestation
// id of hostID: it opens an incident, attaches a failure to one (moving it
// to t.To) or closes one, queues t's alert, and returns the incident's ID (0
// on a pass).
func applyIncident(ctx context.Context, tx *txn, t admission.Transition, hostID string, id int64, at, reasons string) (int64, error) {
	incident := t.Incident
	switch {
	case t.Opens:
		if err := tx.QueryRowContext(ctx, `
			INSERT INTO incidents (host_id, state, opened, updated, failures,
				first_attestation_id, last_attestation_id, reasons)
			VALUES (?, ?, ?, ?, 1, ?, ?, ?)
			RETURNING id`,
			hostID, t.To, at, at, id, id, reasons).Scan(&incident); err != nil {
			return 0, fmt.Errorf("open incident: %w", err)
		}
	case t.Attach:
		if _, err := tx.ExecContext(ctx, `
			UPDATE incidents
			SET failures = failures + 1, updated = ?, last_attestation_id = ?, reasons = ?, state = ?
			WHERE id = ?`,
			at, id, reasons, t.To, incident); err != nil {
			return 0, fmt.Errorf("update incident %d: %w", incident, err)
		}
	case t.Changes():
		if _, err := tx.ExecContext(ctx, `UPDATE incidents SET state = ?, updated = ? WHERE id = ?`, t.To, at, incident); err != nil {
			return 0, fmt.Errorf("move incident %d to %s: %w", incident, t.To, err)
		}
	}
	if t.Alert != "" {
		alertReasons := reasons
		if !t.Attach {
			alertReasons = "[]"
		}
		if err := alert(ctx, tx, at, incident, hostID, t.Alert, t.To, alertReasons); err != nil {
			return 0, err
		}
	}
	if !t.Attach {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO incident_attestations (incident_id, attestation_id) VALUES (?, ?)`, incident, id); err != nil {
		return 0, fmt.Errorf("attach attestation to incident %d: %w", incident, err)
	}
	return incident, nil
}

// countUnrecorded counts a failure whose attestation is not stored (beyond
// the Limits) on the incident t attaches it to: its failures
// and unrecorded counts, its state, update time and latest reasons. t
// neither opens an incident nor queues an alert (such failures are always
// stored). It returns the incident's ID.
func countUnrecorded(ctx context.Context, tx *txn, t admission.Transition, at, reasons string) (int64, error) {
	if !t.Attach || t.Opens || t.Alert != "" || t.Incident == 0 {
		return 0, fmt.Errorf("count unrecorded failure: step %+v is not a failure joining an incident", t)
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE incidents
		SET failures = failures + 1, unrecorded = unrecorded + 1, updated = ?, reasons = ?, state = ?
		WHERE id = ?`,
		at, reasons, t.To, t.Incident); err != nil {
		return 0, fmt.Errorf("update incident %d: %w", t.Incident, err)
	}
	return t.Incident, nil
}

// Attestation returns the attestation with the given ID, or an error
// wrapping ErrNotFound.
func (s *DB) Attestation(ctx context.Context, id int64) (*Attestation, error) {
	// Evidence recorded before schema version 6 is inline, with no hash.
	row := s.read.QueryRowContext(ctx, `
		SELECT a.id, a.host_id, a.time, a.verdict, a.reasons, a.policy_name, a.policy_digest,
			CASE WHEN a.ek_cert_sha256 IS NULL THEN a.ek_cert ELSE c.bytes END,
			a.ek_type, a.ek_public, a.ak, a.nonce, a.quote, a.signature, a.pcrs,
			CASE WHEN a.event_log_sha256 IS NULL THEN a.event_log ELSE l.bytes END,
			CASE WHEN a.boot_state_sha256 IS NULL THEN a.boot_state ELSE b.bytes END,
			a.tpm
		FROM attestations a
		LEFT JOIN evidence_blobs c ON c.sha256 = a.ek_cert_sha256
		LEFT JOIN evidence_blobs l ON l.sha256 = a.event_log_sha256
		LEFT JOIN evidence_blobs b ON b.sha256 = a.boot_state_sha256
		WHERE a.id = ?`, id)
	var (
		a                  Attestation
		at, reasons, pcrs  string
		akJSON, tpmJSON    string
		ekCert, ekPub, non blob
		quote, sig, evLog  blob
		bootState          blob
	)
	err := row.Scan(&a.ID, &a.HostID, &at, &a.Verdict, &reasons, &a.PolicyName, &a.PolicyDigest,
		&ekCert, &a.Evidence.EKType, &ekPub, &akJSON, &non, &quote, &sig, &pcrs, &evLog, &bootState, &tpmJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get attestation %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get attestation %d: %w", id, err)
	}
	if a.Time, err = parseTime(at); err != nil {
		return nil, fmt.Errorf("get attestation %d: %w", id, err)
	}
	if err := json.Unmarshal([]byte(reasons), &a.Reasons); err != nil {
		return nil, fmt.Errorf("get attestation %d: decode reasons: %w", id, err)
	}
	if err := json.Unmarshal([]byte(pcrs), &a.Evidence.PCRs); err != nil {
		return nil, fmt.Errorf("get attestation %d: decode PCRs: %w", id, err)
	}
	a.Evidence.EKCert = ekCert
	a.Evidence.EKPublic = ekPub
	if err := json.Unmarshal([]byte(akJSON), &a.Evidence.AK); err != nil {
		return nil, fmt.Errorf("get attestation %d: decode AK: %w", id, err)
	}
	a.Evidence.Nonce = non
	a.Evidence.Quote = quote
	a.Evidence.Signature = sig
	a.Evidence.EventLog = evLog
	a.BootState = bootState
	if err := json.Unmarshal([]byte(tpmJSON), &a.TPM); err != nil {
		return nil, fmt.Errorf("get attestation %d: decode TPM: %w", id, err)
	}
	return &a, nil
}

// hostColumns is the column list scanHost reads.
const hostColumns = `id, ek_type, ek_issuer, state, first_seen, last_seen, last_verdict, last_attestation_id`

// scanHost reads one row of hostColumns.
func scanHost(row interface{ Scan(...any) error }) (Host, error) {
	var (
		h               Host
		first, last     string
		lastAttestation sql.NullInt64
	)
	if err := row.Scan(&h.ID, &h.EKType, &h.EKIssuer, &h.State, &first, &last, &h.LastVerdict, &lastAttestation); err != nil {
		return Host{}, err
	}
	var err error
	if h.FirstSeen, err = parseTime(first); err != nil {
		return Host{}, err
	}
	if h.LastSeen, err = parseTime(last); err != nil {
		return Host{}, err
	}
	h.LastAttestationID = lastAttestation.Int64
	return h, nil
}

// Host returns the host with the given ID, or an error wrapping ErrNotFound.
func (s *DB) Host(ctx context.Context, id string) (*Host, error) {
	h, err := scanHost(s.read.QueryRowContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get host %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get host %q: %w", id, err)
	}
	return &h, nil
}

// Quarantine implements Store.
func (s *DB) Quarantine(ctx context.Context, id, actor string) error {
	return s.operator(ctx, actor, "quarantine", id, "", func(tx *txn) error {
		if err := lockHost(ctx, tx, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE hosts SET state = ? WHERE id = ?`, HostQuarantined, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return ErrNotFound
		}
		return revokeIdentities(ctx, tx, id, formatTime(time.Now()))
	})
}

// RecordAction writes an action taken on the appliance itself, outside the
// admin API (issuing or revoking an operator certificate), to the audit log.
func (s *DB) RecordAction(ctx context.Context, actor, action, target, detail string) error {
	return s.operator(ctx, actor, action, target, detail, func(*txn) error { return nil })
}

// operator runs an operator's action and its audit entry in one transaction.
func (s *DB) operator(ctx context.Context, actor, action, target, detail string, f func(*txn) error) error {
	if actor == "" {
		return fmt.Errorf("%s %s: %w: no actor", action, target, ErrInvalid)
	}
	err := inTx(ctx, s.write, func(tx *txn) error {
		if err := f(tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit (time, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)`,
			formatTime(s.now()), actor, action, target, detail); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, target, err)
	}
	s.changes.notify()
	return nil
}

// UnresolvedIncident implements Store.
func (s *DB) UnresolvedIncident(ctx context.Context, hostID string) (*Incident, error) {
	var id int64
	err := s.read.QueryRowContext(ctx, `SELECT id FROM incidents WHERE host_id = ? AND state <> ?`, hostID, IncidentClosed).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find unresolved incident: %w", err)
	}
	return s.incidentByID(ctx, id)
}

// Incident returns one incident and its history.
func (s *DB) Incident(ctx context.Context, id int64) (*Incident, []Note, error) {
	in, err := s.incidentByID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT time, author, kind, text FROM incident_notes WHERE incident_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, nil, fmt.Errorf("incident %d notes: %w", id, err)
	}
	defer rows.Close()
	notes := []Note{}
	for rows.Next() {
		var n Note
		var at string
		if err := rows.Scan(&at, &n.Author, &n.Kind, &n.Text); err != nil {
			return nil, nil, err
		}
		if n.Time, err = parseTime(at); err != nil {
			return nil, nil, err
		}
		notes = append(notes, n)
	}
	return in, notes, rows.Err()
}

func (s *DB) incidentByID(ctx context.Context, id int64) (*Incident, error) {
	in, err := scanIncident(s.read.QueryRowContext(ctx, `SELECT `+incidentColumns+` FROM incidents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("incident %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("incident %d: %w", id, err)
	}
	return &in, nil
}

// IncidentAction is an operator's step in the incident workflow.
type IncidentAction struct {
	Kind string // note, assign, investigate, remediate
	Text string // the note, the assignee, or the post-mortem
}

// Act applies an operator's action to an incident, with its audit entry:
// notes and assignments at any time before closing; investigate moves an
// open incident on; remediate needs a post-mortem note and leaves the host
// quarantined until a fresh attestation passes.
func (s *DB) Act(ctx context.Context, id int64, actor string, a IncidentAction) error {
	return s.operator(ctx, actor, "incident-"+a.Kind, fmt.Sprint(id), a.Text, func(tx *txn) error {
		// An incident's host never changes: its state is read again
		// under the host's lock.
		var state, host string
		if err := tx.QueryRowContext(ctx, `SELECT host_id FROM incidents WHERE id = ?`, id).Scan(&host); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if err := lockHost(ctx, tx, host); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT state FROM incidents WHERE id = ?`, id).Scan(&state); err != nil {
			return err
		}
		t, err := admission.Act(state, admission.Action{Kind: admission.Event(a.Kind), Text: a.Text})
		if err != nil {
			return err // wraps admission.ErrRefused, which is ErrInvalid
		}
		now := formatTime(time.Now())
		if t.Event == admission.EventAssign {
			if _, err := tx.ExecContext(ctx, `UPDATE incidents SET assignee = ?, updated = ? WHERE id = ?`, a.Text, now, id); err != nil {
				return err
			}
		}
		if t.Changes() {
			if _, err := tx.ExecContext(ctx, `UPDATE incidents SET state = ?, updated = ? WHERE id = ?`, t.To, now, id); err != nil {
				return err
			}
		}
		if t.Alert != "" {
			if err := alert(ctx, tx, now, id, host, t.Alert, t.To, "[]"); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO incident_notes (incident_id, time, author, kind, text) VALUES (?, ?, ?, ?, ?)`,
			id, now, actor, a.Kind, a.Text)
		return err
	})
}

// IncidentAttestations returns the IDs of the failed attestations attached
// to an incident, in ascending order, or an error wrapping ErrNotFound when
// the incident does not exist.
func (s *DB) IncidentAttestations(ctx context.Context, incidentID int64) ([]int64, error) {
	// One statement, so the existence check and the list see one snapshot.
	rows, err := s.read.QueryContext(ctx, `
		SELECT ia.attestation_id
		FROM incidents i LEFT JOIN incident_attestations ia ON ia.incident_id = i.id
		WHERE i.id = ?
		ORDER BY ia.attestation_id`, incidentID)
	if err != nil {
		return nil, fmt.Errorf("list incident %d attestations: %w", incidentID, err)
	}
	defer rows.Close()
	found := false
	ids := []int64{}
	for rows.Next() {
		found = true
		var id sql.NullInt64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list incident %d attestations: %w", incidentID, err)
		}
		if id.Valid {
			ids = append(ids, id.Int64)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list incident %d attestations: %w", incidentID, err)
	}
	if !found {
		return nil, fmt.Errorf("list incident %d attestations: %w", incidentID, ErrNotFound)
	}
	return ids, nil
}

// formatTime renders t for storage.
func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// parseTime reads a stored time, in UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// blob scans a BLOB column keeping the distinction the driver preserves on
// write: NULL reads as a nil slice, a zero-length blob as an empty non-nil
// one, so byte slices round-trip exactly.
type blob []byte

// Scan implements sql.Scanner.
func (b *blob) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*b = nil
	case []byte:
		*b = append([]byte{}, v...)
	case string:
		*b = []byte(v)
	default:
		return fmt.Errorf("scan %T into blob", src)
	}
	return nil
}

// Alert is one event for the webhook.
type Alert struct {
	ID    int64           `json:"id"`
	Time  time.Time       `json:"time"`
	Event json.RawMessage `json:"event"`
}

// alert queues an incident event in the outbox, in the caller's transaction.
func alert(ctx context.Context, tx *txn, at string, incident int64, hostID, kind, state, reasons string) error {
	ev, err := json.Marshal(map[string]any{
		"type": kind, "incident": incident, "host": hostID, "state": state, "reasons": json.RawMessage(reasons),
	})
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (time, event) VALUES (?, ?)`, at, string(ev)); err != nil {
		return fmt.Errorf("queue alert: %w", err)
	}
	return nil
}

// PendingAlerts returns the undelivered alerts, oldest first.
func (s *DB) PendingAlerts(ctx context.Context, limit int) ([]Alert, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, time, event FROM outbox WHERE delivered = 0 ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("pending alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var at, ev string
		if err := rows.Scan(&a.ID, &at, &ev); err != nil {
			return nil, err
		}
		if a.Time, err = parseTime(at); err != nil {
			return nil, err
		}
		a.Event = json.RawMessage(ev)
		out = append(out, a)
	}
	return out, rows.Err()
}

// AlertDelivered marks an alert delivered.
func (s *DB) AlertDelivered(ctx context.Context, id int64) error {
	_, err := s.write.ExecContext(ctx, `UPDATE outbox SET delivered = 1 WHERE id = ?`, id)
	return err
}

// newReplicaID returns a random name for a store handle's alert claims.
func newReplicaID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// ClaimAlerts claims the outbox's oldest undelivered alerts, at most limit,
// for this store handle until lease from now, and returns them oldest
// first, for the caller to deliver in order and mark (AlertDelivered)
// before the claim ends. It returns none while another handle's claim on
// any of them lasts: of several appliances sharing a database, one at a
// time delivers the head of the outbox, so that each alert is posted once
// and in order. A claim of an appliance that stopped lapses at its end,
// and the next ClaimAlerts of another takes its alerts over. The handle's
// own claims are renewed. Claims are one transaction; on PostgreSQL the
// rows are locked while it runs. Times are this appliance's clock, so the
// appliances' clocks must agree (NTP) to well within lease. limit and
// lease must be positive.
func (s *DB) ClaimAlerts(ctx context.Context, limit int, lease time.Duration) ([]Alert, error) {
	if limit <= 0 || lease <= 0 {
		return nil, errors.New("claim alerts: limit and lease must be positive")
	}
	// An empty outbox, the usual case, costs a read and no write
	// transaction.
	var one int
	switch err := s.read.QueryRowContext(ctx, `SELECT 1 FROM outbox WHERE delivered = 0 LIMIT 1`).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("claim alerts: %w", err)
	}
	now := s.now()
	until := now.Add(lease).UnixNano()
	var out []Alert
	err := inTx(ctx, s.write, func(tx *txn) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `SELECT id, time, event, claimed_by, claimed_until FROM outbox
			WHERE delivered = 0 ORDER BY id LIMIT ?`+s.d.forUpdate, limit)
		if err != nil {
			return err
		}
		var claimed []Alert
		busy := false
		for rows.Next() {
			var a Alert
			var at, ev, by string
			var cu int64
			if err := rows.Scan(&a.ID, &at, &ev, &by, &cu); err != nil {
				rows.Close()
				return err
			}
			if by != "" && by != s.replica && cu > now.UnixNano() {
				busy = true
			}
			if a.Time, err = parseTime(at); err != nil {
				rows.Close()
				return err
			}
			a.Event = json.RawMessage(ev)
			claimed = append(claimed, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if busy {
			return nil // another appliance is delivering them
		}
		for _, a := range claimed {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id = ?`, s.replica, until, a.ID); err != nil {
				return err
			}
		}
		out = claimed
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim alerts: %w", err)
	}
	return out, nil
}

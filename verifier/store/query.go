package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bootgate/bootgate/verifier/wire"
)

// MaxPage is the most rows one List call returns.
const MaxPage = 1000

// HostQuery selects a page of hosts, ordered by ID.
type HostQuery struct {
	State  string // HostAdmitted, HostQuarantined, or "" for all
	Prefix string // only hosts whose ID starts with this
	After  string // only hosts whose ID sorts after this one (the previous page's last)
	Limit  int    // at most this many (0: MaxPage)
}

// IncidentQuery selects a page of incidents, newest first.
type IncidentQuery struct {
	// State is one of the incident states, "unresolved" (any but closed),
	// or "" for all.
	State  string
	Host   string // only this host's incidents
	Before int64  // only incidents with a lower ID (the previous page's last)
	Limit  int    // at most this many (0: MaxPage)
}

// Unresolved selects the incidents that are not closed.
const Unresolved = "unresolved"

func pageLimit(n int) int {
	if n <= 0 || n > MaxPage {
		return MaxPage
	}
	return n
}

// ListHosts returns one page of hosts.
func (s *DB) ListHosts(ctx context.Context, q HostQuery) ([]Host, error) {
	where, args := []string{"id > ?"}, []any{q.After}
	if q.State != "" {
		if q.State != HostAdmitted && q.State != HostQuarantined {
			return nil, fmt.Errorf("list hosts: %w: unknown state %q", ErrInvalid, q.State)
		}
		where, args = append(where, "state = ?"), append(args, q.State)
	}
	if q.Prefix != "" {
		// A range on the primary key, so that the search uses its index.
		where, args = append(where, "id >= ? AND id < ?"), append(args, q.Prefix, q.Prefix+"\U0010FFFF")
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE `+strings.Join(where, " AND ")+
		` ORDER BY id LIMIT ?`, append(args, pageLimit(q.Limit))...)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	hosts := []Host{}
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		hosts = append(hosts, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hosts, nil
}

// Hosts returns every host, ordered by ID, reading page by page.
func (s *DB) Hosts(ctx context.Context) ([]Host, error) {
	all := []Host{}
	q := HostQuery{}
	for {
		page, err := s.ListHosts(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < MaxPage {
			return all, nil
		}
		q.After = page[len(page)-1].ID
	}
}

// incidentColumns is the column list scanIncident reads.
const incidentColumns = `id, host_id, state, opened, updated, failures, first_attestation_id, last_attestation_id, reasons, assignee, unrecorded`

func scanIncident(row interface{ Scan(...any) error }) (Incident, error) {
	var (
		in                       Incident
		opened, updated, reasons string
	)
	if err := row.Scan(&in.ID, &in.HostID, &in.State, &opened, &updated, &in.Failures,
		&in.FirstAttestationID, &in.LastAttestationID, &reasons, &in.Assignee, &in.Unrecorded); err != nil {
		return Incident{}, err
	}
	var err error
	if in.Opened, err = parseTime(opened); err != nil {
		return Incident{}, fmt.Errorf("incident %d: %w", in.ID, err)
	}
	if in.Updated, err = parseTime(updated); err != nil {
		return Incident{}, fmt.Errorf("incident %d: %w", in.ID, err)
	}
	if err := json.Unmarshal([]byte(reasons), &in.Reasons); err != nil {
		return Incident{}, fmt.Errorf("incident %d: decode reasons: %w", in.ID, err)
	}
	return in, nil
}

// ListIncidents returns one page of incidents, newest first.
func (s *DB) ListIncidents(ctx context.Context, q IncidentQuery) ([]Incident, error) {
	var (
		where []string
		args  []any
	)
	switch q.State {
	case "":
	case Unresolved:
		where, args = append(where, "state <> ?"), append(args, IncidentClosed)
	case IncidentOpen, IncidentInvestigating, IncidentRemediated, IncidentClosed:
		where, args = append(where, "state = ?"), append(args, q.State)
	default:
		return nil, fmt.Errorf("list incidents: %w: unknown state %q", ErrInvalid, q.State)
	}
	if q.Host != "" {
		where, args = append(where, "host_id = ?"), append(args, q.Host)
	}
	if q.Before > 0 {
		where, args = append(where, "id < ?"), append(args, q.Before)
	}
	query := `SELECT ` + incidentColumns + ` FROM incidents`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY id DESC LIMIT ?`, append(args, pageLimit(q.Limit))...)
	if err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	defer rows.Close()
	incidents := []Incident{}
	for rows.Next() {
		in, err := scanIncident(rows)
		if err != nil {
			return nil, fmt.Errorf("list incidents: %w", err)
		}
		incidents = append(incidents, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	return incidents, nil
}

// Incidents implements Store: every incident, newest first.
func (s *DB) Incidents(ctx context.Context) ([]Incident, error) {
	all := []Incident{}
	q := IncidentQuery{}
	for {
		page, err := s.ListIncidents(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < MaxPage {
			return all, nil
		}
		q.Before = page[len(page)-1].ID
	}
}

// ListAudit returns up to limit audit entries with IDs below before (0: from
// the newest), newest first.
func (s *DB) ListAudit(ctx context.Context, before int64, limit int) ([]AuditEntry, error) {
	query, args := `SELECT id, time, actor, action, target, detail FROM audit`, []any{}
	if before > 0 {
		query, args = query+` WHERE id < ?`, append(args, before)
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY id DESC LIMIT ?`, append(args, pageLimit(limit))...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var at string
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		if e.Time, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Summary counts the fleet: hosts by state and incidents by state.
type Summary struct {
	Hosts     map[string]int `json:"hosts"`
	Incidents map[string]int `json:"incidents"`
}

// Unresolved is the number of incidents that are not closed.
func (s Summary) Unresolved() int {
	n := 0
	for state, c := range s.Incidents {
		if state != IncidentClosed {
			n += c
		}
	}
	return n
}

// Summarize counts hosts and incidents by state, one grouped query each.
func (s *DB) Summarize(ctx context.Context) (Summary, error) {
	sum := Summary{Hosts: map[string]int{}, Incidents: map[string]int{}}
	for _, c := range []struct {
		table string
		into  map[string]int
	}{{"hosts", sum.Hosts}, {"incidents", sum.Incidents}} {
		rows, err := s.read.QueryContext(ctx, `SELECT state, COUNT(*) FROM `+c.table+` GROUP BY state`)
		if err != nil {
			return Summary{}, fmt.Errorf("count %s: %w", c.table, err)
		}
		for rows.Next() {
			var state string
			var n int
			if err := rows.Scan(&state, &n); err != nil {
				rows.Close()
				return Summary{}, fmt.Errorf("count %s: %w", c.table, err)
			}
			c.into[state] = n
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return Summary{}, fmt.Errorf("count %s: %w", c.table, err)
		}
	}
	return sum, nil
}

// changes tells waiters that a write transaction committed.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Changed returns a channel that is closed when the next attestation,
// incident change or operator action has been committed: at once for this
// handle's own commits, and on PostgreSQL also within about
// ChangePoll of another appliance's (see watcher).
func (s *DB) Changed() <-chan struct{} { return s.changes.wait() }

// AttestationSummary is an attestation without its evidence.
type AttestationSummary struct {
	ID           int64         `json:"id"`
	Time         time.Time     `json:"time"`
	Verdict      string        `json:"verdict"`
	Reasons      []wire.Reason `json:"reasons,omitempty"`
	PolicyName   string        `json:"policy_name"`
	PolicyDigest string        `json:"policy_digest"`
}

// HostAttestations returns the host's latest attestations, newest first,
// without their evidence.
func (s *DB) HostAttestations(ctx context.Context, hostID string, limit int) ([]AttestationSummary, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, time, verdict, reasons, policy_name, policy_digest
		FROM attestations WHERE host_id = ? ORDER BY id DESC LIMIT ?`, hostID, pageLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list attestations of %q: %w", hostID, err)
	}
	defer rows.Close()
	out := []AttestationSummary{}
	for rows.Next() {
		var a AttestationSummary
		var at, reasons string
		if err := rows.Scan(&a.ID, &at, &a.Verdict, &reasons, &a.PolicyName, &a.PolicyDigest); err != nil {
			return nil, fmt.Errorf("list attestations of %q: %w", hostID, err)
		}
		if a.Time, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("list attestations of %q: %w", hostID, err)
		}
		if err := json.Unmarshal([]byte(reasons), &a.Reasons); err != nil {
			return nil, fmt.Errorf("list attestations of %q: attestation %d: %w", hostID, a.ID, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// LastPass returns the host's latest passing attestation with an ID below
// before, or nil when there is none.
func (s *DB) LastPass(ctx context.Context, hostID string, before int64) (*Attestation, error) {
	var id int64
	err := s.read.QueryRowContext(ctx, `SELECT id FROM attestations WHERE host_id = ? AND verdict = 'pass' AND id < ?
		ORDER BY id DESC LIMIT 1`, hostID, before).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last pass of %q: %w", hostID, err)
	}
	return s.Attestation(ctx, id)
}

// AdmittedHosts returns the IDs of the hosts admitted now.
func (s *DB) AdmittedHosts(ctx context.Context) (map[string]bool, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id FROM hosts WHERE state = ?`, HostAdmitted)
	if err != nil {
		return nil, fmt.Errorf("admitted hosts: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("admitted hosts: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

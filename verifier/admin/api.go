package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

// Summary is the fleet at a glance.
type Summary struct {
	store.Summary
	Leases map[string]int `json:"leases,omitempty"` // bound leases by pool
}

func (a *API) readSummary(r *http.Request) (Summary, error) {
	sum, err := a.opt.Store.Summarize(r.Context())
	if err != nil {
		return Summary{}, err
	}
	out := Summary{Summary: sum}
	if a.opt.Leases != nil {
		out.Leases = a.opt.Leases.CountByPool(time.Now())
	}
	return out, nil
}

func (a *API) summary(w http.ResponseWriter, r *http.Request) {
	sum, err := a.readSummary(r)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

// cut trims a list read with one row more than the page: it returns the
// page and, when another page follows, the key of the page's last row.
func cut[T any, K any](list []T, limit int, key func(T) K) ([]T, K) {
	var next K
	if len(list) > limit {
		list = list[:limit]
		next = key(list[limit-1])
	}
	return list, next
}

// HostView is a host with its current lease.
type HostView struct {
	store.Host
	Lease *Lease `json:"lease,omitempty"`
}

// HostPage is one page of hosts; Next, when set, is the after= of the next.
type HostPage struct {
	Hosts []HostView `json:"hosts"`
	Next  string     `json:"next,omitempty"`
}

// MaxLimit is the largest page the API returns. Handlers ask the store for
// one row more than the page, to know whether another page follows.
const MaxLimit = store.MaxPage - 1

// pageParams reads limit= (default 100, at most MaxLimit) and before= (an
// ID, 0 when absent) and answers a bad request when they are malformed.
func pageParams(w http.ResponseWriter, r *http.Request) (limit int, before int64, ok bool) {
	q := r.URL.Query()
	limit = 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxLimit {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("limit: want 1 to %d", MaxLimit))
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "before: want an ID")
			return 0, 0, false
		}
		before = n
	}
	return limit, before, true
}

func (a *API) withLeases(hosts []store.Host) []HostView {
	views := make([]HostView, len(hosts))
	var leases map[string]Lease
	if a.opt.Leases != nil {
		ids := make([]string, len(hosts))
		for i, h := range hosts {
			ids[i] = h.ID
		}
		leases = a.opt.Leases.HostLeases(ids, time.Now())
	}
	for i, h := range hosts {
		views[i] = HostView{Host: h}
		if l, ok := leases[h.ID]; ok {
			views[i].Lease = &l
		}
	}
	return views
}

func (a *API) hosts(w http.ResponseWriter, r *http.Request) {
	limit, _, ok := pageParams(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	hosts, err := a.opt.Store.ListHosts(r.Context(), store.HostQuery{State: q.Get("state"), Prefix: q.Get("prefix"), After: q.Get("after"), Limit: limit + 1})
	if err != nil {
		a.queryError(w, r, err)
		return
	}
	hosts, next := cut(hosts, limit, func(h store.Host) string { return h.ID })
	writeJSON(w, http.StatusOK, HostPage{Hosts: a.withLeases(hosts), Next: next})
}

// HostDetail is one host with its lease, recent attestations and incidents.
type HostDetail struct {
	HostView
	Attestations []store.AttestationSummary `json:"attestations"`
	Incidents    []store.Incident           `json:"incidents"`
}

func (a *API) host(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h, err := a.opt.Store.Host(r.Context(), id)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	d := HostDetail{HostView: a.withLeases([]store.Host{*h})[0]}
	if d.Attestations, err = a.opt.Store.HostAttestations(r.Context(), id, 20); err != nil {
		a.storeError(w, r, err)
		return
	}
	if d.Incidents, err = a.opt.Store.ListIncidents(r.Context(), store.IncidentQuery{Host: id, Limit: 20}); err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (a *API) quarantine(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.opt.Store.Quarantine(r.Context(), id, operator(r)); err != nil {
		a.storeError(w, r, err)
		return
	}
	a.opt.Logger.Info("host quarantined by an operator", "host", id, "operator", operator(r))
	h, err := a.opt.Store.Host(r.Context(), id)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// IncidentPage is one page of incidents, newest first; Next, when set, is
// the before= of the next.
type IncidentPage struct {
	Incidents []store.Incident `json:"incidents"`
	Next      int64            `json:"next,omitempty"`
}

func (a *API) incidents(w http.ResponseWriter, r *http.Request) {
	limit, before, ok := pageParams(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	list, err := a.opt.Store.ListIncidents(r.Context(), store.IncidentQuery{State: q.Get("state"), Host: q.Get("host"), Before: before, Limit: limit + 1})
	if err != nil {
		a.queryError(w, r, err)
		return
	}
	list, next := cut(list, limit, func(in store.Incident) int64 { return in.ID })
	writeJSON(w, http.StatusOK, IncidentPage{Incidents: list, Next: next})
}

func incidentID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("incident ID %q is not a number", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (a *API) incident(w http.ResponseWriter, r *http.Request) {
	id, ok := incidentID(w, r)
	if !ok {
		return
	}
	d, err := a.incidentDetail(r.Context(), id)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (a *API) bundle(w http.ResponseWriter, r *http.Request) {
	id, ok := incidentID(w, r)
	if !ok {
		return
	}
	p, err := a.evidenceBundle(r.Context(), id)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	// Evidence, as received, streamed: each failed attestation is read and
	// written in turn (writeBundle).
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="bootgate-incident-%d.json"`, id))
	w.WriteHeader(http.StatusOK)
	if err := a.writeBundle(r.Context(), w, p); err != nil {
		// The status is sent: abort the response, so that the client
		// sees a broken transfer, not a bundle that looks whole.
		if !errors.Is(err, context.Canceled) {
			a.opt.Logger.Error("write evidence bundle", "incident", id, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// Action is the body of POST /api/v1/incidents/{id}/actions.
type Action struct {
	Kind string `json:"kind"` // note, assign, investigate, remediate
	Text string `json:"text"` // the note, the assignee, or the post-mortem
}

// maxActionBody bounds an action's body: a post-mortem, not evidence.
const maxActionBody = 64 << 10

func (a *API) act(w http.ResponseWriter, r *http.Request) {
	id, ok := incidentID(w, r)
	if !ok {
		return
	}
	var act Action
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxActionBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&act); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("an action is at most %d bytes", maxActionBody))
			return
		}
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "action: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "action: trailing data after the JSON object")
		return
	}
	act.Text = strings.TrimSpace(act.Text)
	if err := a.opt.Store.Act(r.Context(), id, operator(r), store.IncidentAction{Kind: act.Kind, Text: act.Text}); err != nil {
		a.storeError(w, r, err)
		return
	}
	a.opt.Logger.Info("incident action", "incident", id, "action", act.Kind, "operator", operator(r))
	in, notes, err := a.opt.Store.Incident(r.Context(), id)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"incident": in, "history": notes})
}

// AuditPage is one page of the audit log, newest first.
type AuditPage struct {
	Entries []store.AuditEntry `json:"entries"`
	Next    int64              `json:"next,omitempty"`
}

func (a *API) audit(w http.ResponseWriter, r *http.Request) {
	limit, before, ok := pageParams(w, r)
	if !ok {
		return
	}
	list, err := a.opt.Store.ListAudit(r.Context(), before, limit+1)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	list, next := cut(list, limit, func(e store.AuditEntry) int64 { return e.ID })
	writeJSON(w, http.StatusOK, AuditPage{Entries: list, Next: next})
}

// queryError answers a list query the store refused as a bad request.
func (a *API) queryError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrInvalid) {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	a.storeError(w, r, err)
}

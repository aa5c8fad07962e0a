package admission

import (
	"errors"
	"fmt"
	"strings"
)

// Incident states: open → investigating → remediated (a post-mortem note is
// required) → closed, which only a fresh passing attestation does. A failure
// of a remediated host reopens its incident (back to open, with an
// "incident.reopened" alert). IncidentNone is a host without an unresolved
// incident.
const (
	IncidentNone          = ""
	IncidentOpen          = "open"
	IncidentInvestigating = "investigating"
	IncidentRemediated    = "remediated"
	IncidentClosed        = "closed"
)

// Event is what moves an incident: an attestation's verdict or an
// operator's action.
type Event string

// Events of the incident workflow. The operator actions are the kinds of
// the store's IncidentAction.
const (
	EventFail        Event = "fail"        // a failed attestation of the host
	EventPass        Event = "pass"        // a passing attestation of the host
	EventNote        Event = "note"        // an operator's note
	EventAssign      Event = "assign"      // an operator assigns the incident
	EventInvestigate Event = "investigate" // an operator starts investigating
	EventRemediate   Event = "remediate"   // an operator records the post-mortem
)

// Alerts an incident transition queues for the webhook.
const (
	AlertOpened        = "incident.opened"
	AlertReopened      = "incident.reopened"
	AlertInvestigating = "incident." + IncidentInvestigating
	AlertRemediated    = "incident." + IncidentRemediated
	AlertClosed        = "incident." + IncidentClosed
)

// ErrRefused reports an event the incident workflow does not allow in the
// incident's state (an operator action on a closed incident, a pass of a
// host whose incident is not remediated, ...). Errors wrapping it say why.
var ErrRefused = errors.New("refused")

// Transition is one step of the incident workflow: from a state, on an
// event, to a state.
type Transition struct {
	From  string // the incident's state before (IncidentNone: no incident)
	Event Event
	To    string // the incident's state after (IncidentNone: still none)
	// Alert is the webhook event the step queues, "" for none.
	Alert string
	// Attach says the failed attestation joins the incident (its failure
	// count, latest reasons and attestation list).
	Attach bool
	// Opens says the step opens a new incident (From is IncidentNone).
	Opens bool
	// Incident is the incident's ID; 0 when the step opens one or there is
	// none.
	Incident int64
}

// Changes reports whether the step changes the incident's state.
func (t Transition) Changes() bool { return t.From != t.To }

type step struct {
	from  string
	event Event
}

type outcome struct {
	to     string
	alert  string
	attach bool
	why    string // non-empty: the step is refused, for this reason
}

// workflow is the incident state table. A (state, event) pair not in it is
// refused with the default reason of its event (see refusal).
var workflow = map[step]outcome{
	// Attestations.
	{IncidentNone, EventFail}:          {to: IncidentOpen, alert: AlertOpened, attach: true},
	{IncidentOpen, EventFail}:          {to: IncidentOpen, attach: true},
	{IncidentInvestigating, EventFail}: {to: IncidentInvestigating, attach: true},
	{IncidentRemediated, EventFail}:    {to: IncidentOpen, alert: AlertReopened, attach: true},
	{IncidentNone, EventPass}:          {to: IncidentNone},
	{IncidentRemediated, EventPass}:    {to: IncidentClosed, alert: AlertClosed},
	{IncidentOpen, EventPass}:          {why: "the host rejoins after an operator remediates it and a fresh attestation passes"},
	{IncidentInvestigating, EventPass}: {why: "the host rejoins after an operator remediates it and a fresh attestation passes"},

	// Operators' actions.
	{IncidentOpen, EventNote}:                 {to: IncidentOpen},
	{IncidentInvestigating, EventNote}:        {to: IncidentInvestigating},
	{IncidentRemediated, EventNote}:           {to: IncidentRemediated},
	{IncidentOpen, EventAssign}:               {to: IncidentOpen},
	{IncidentInvestigating, EventAssign}:      {to: IncidentInvestigating},
	{IncidentRemediated, EventAssign}:         {to: IncidentRemediated},
	{IncidentOpen, EventInvestigate}:          {to: IncidentInvestigating, alert: AlertInvestigating},
	{IncidentInvestigating, EventInvestigate}: {why: "the incident is investigating, not open"},
	{IncidentRemediated, EventInvestigate}:    {why: "the incident is remediated, not open"},
	{IncidentOpen, EventRemediate}:            {to: IncidentRemediated, alert: AlertRemediated},
	{IncidentInvestigating, EventRemediate}:   {to: IncidentRemediated, alert: AlertRemediated},
	{IncidentRemediated, EventRemediate}:      {why: "already remediated"},
}

// Next looks up the incident workflow: the step from state from on event
// ev, or an error wrapping ErrRefused that says why the workflow refuses it
// (every operator action on a closed incident or on no incident, a pass of
// a host whose incident is open or investigating, an unknown event or
// state).
func Next(from string, ev Event) (Transition, error) {
	o, ok := workflow[step{from, ev}]
	if !ok {
		return Transition{}, fmt.Errorf("%w: %s", ErrRefused, refusal(from, ev))
	}
	if o.why != "" {
		return Transition{}, fmt.Errorf("%w: %s", ErrRefused, o.why)
	}
	return Transition{From: from, Event: ev, To: o.to, Alert: o.alert, Attach: o.attach, Opens: from == IncidentNone && o.to != IncidentNone}, nil
}

// refusal is why a step that is not in the table is refused.
func refusal(from string, ev Event) string {
	switch {
	case from == IncidentClosed:
		return "the incident is closed"
	case from == IncidentNone:
		return "there is no incident"
	case !knownEvent(ev):
		return fmt.Sprintf("unknown action %q", string(ev))
	default:
		return fmt.Sprintf("unknown incident state %q", from)
	}
}

func knownEvent(ev Event) bool {
	switch ev {
	case EventFail, EventPass, EventNote, EventAssign, EventInvestigate, EventRemediate:
		return true
	}
	return false
}

// Action is an operator's step in the incident workflow: the event and its
// text (the note, the assignee, or the post-mortem).
type Action struct {
	Kind Event
	Text string
}

// MinPostMortem is the shortest post-mortem note a remediation takes, in
// bytes after trimming spaces.
const MinPostMortem = 10

// Act checks an operator's action against an incident in state from and
// returns its step: notes and assignments need text, a remediation a
// post-mortem of at least MinPostMortem bytes, and the step must be in the
// workflow. Errors wrap ErrRefused.
func Act(from string, a Action) (Transition, error) {
	if from == IncidentClosed {
		return Transition{}, fmt.Errorf("%w: the incident is closed", ErrRefused)
	}
	switch a.Kind {
	case EventNote:
		if strings.TrimSpace(a.Text) == "" {
			return Transition{}, fmt.Errorf("%w: empty note", ErrRefused)
		}
	case EventAssign:
		if strings.TrimSpace(a.Text) == "" {
			return Transition{}, fmt.Errorf("%w: assign to whom?", ErrRefused)
		}
	case EventInvestigate:
	case EventRemediate:
		if len(strings.TrimSpace(a.Text)) < MinPostMortem {
			return Transition{}, fmt.Errorf("%w: remediation needs a post-mortem note", ErrRefused)
		}
	default:
		return Transition{}, fmt.Errorf("%w: unknown action %q", ErrRefused, string(a.Kind))
	}
	return Next(from, a.Kind)
}

package admission_test

import (
	"errors"
	"testing"

	"github.com/bootgate/bootgate/verifier/admission"
	"github.com/bootgate/bootgate/verifier/wire"
	"github.com/google/go-cmp/cmp"
)

// TestNext covers every (state, event) pair of the incident workflow.
func TestNext(t *testing.T) {
	states := []string{admission.IncidentNone, admission.IncidentOpen, admission.IncidentInvestigating,
		admission.IncidentRemediated, admission.IncidentClosed, "bogus"}
	events := []admission.Event{admission.EventFail, admission.EventPass, admission.EventNote, admission.EventAssign,
		admission.EventInvestigate, admission.EventRemediate, "bogus"}
	type want struct {
		to     string
		alert  string
		attach bool
		opens  bool
	}
	allowed := map[string]map[admission.Event]want{
		admission.IncidentNone: {
			admission.EventFail: {to: admission.IncidentOpen, alert: admission.AlertOpened, attach: true, opens: true},
			admission.EventPass: {to: admission.IncidentNone},
		},
		admission.IncidentOpen: {
			admission.EventFail:        {to: admission.IncidentOpen, attach: true},
			admission.EventNote:        {to: admission.IncidentOpen},
			admission.EventAssign:      {to: admission.IncidentOpen},
			admission.EventInvestigate: {to: admission.IncidentInvestigating, alert: "incident.investigating"},
			admission.EventRemediate:   {to: admission.IncidentRemediated, alert: "incident.remediated"},
		},
		admission.IncidentInvestigating: {
			admission.EventFail:      {to: admission.IncidentInvestigating, attach: true},
			admission.EventNote:      {to: admission.IncidentInvestigating},
			admission.EventAssign:    {to: admission.IncidentInvestigating},
			admission.EventRemediate: {to: admission.IncidentRemediated, alert: "incident.remediated"},
		},
		admission.IncidentRemediated: {
			admission.EventFail:   {to: admission.IncidentOpen, alert: "incident.reopened", attach: true},
			admission.EventPass:   {to: admission.IncidentClosed, alert: "incident.closed"},
			admission.EventNote:   {to: admission.IncidentRemediated},
			admission.EventAssign: {to: admission.IncidentRemediated},
		},
	}
	for _, from := range states {
		for _, ev := range events {
			t.Run(from+"/"+string(ev), func(t *testing.T) {
				got, err := admission.Next(from, ev)
				w, ok := allowed[from][ev]
				if !ok {
					if !errors.Is(err, admission.ErrRefused) {
						t.Fatalf("Next(%q, %q) = %+v, %v; want refused", from, ev, got, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Next(%q, %q): %v", from, ev, err)
				}
				want := admission.Transition{From: from, Event: ev, To: w.to, Alert: w.alert, Attach: w.attach, Opens: w.opens}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Next(%q, %q) (-want +got):\n%s", from, ev, diff)
				}
			})
		}
	}
}

// TestAct covers the operators' checks that come before the table.
func TestAct(t *testing.T) {
	const postMortem = "the agent sent a stale log; log collection fixed"
	for _, tt := range []struct {
		name   string
		from   string
		action admission.Action
		to     string // "" with refused
		why    string // the refusal's text
	}{
		{"note", admission.IncidentOpen, admission.Action{Kind: admission.EventNote, Text: "looking"}, admission.IncidentOpen, ""},
		{"empty note", admission.IncidentOpen, admission.Action{Kind: admission.EventNote, Text: "  "}, "", "refused: empty note"},
		{"assign", admission.IncidentInvestigating, admission.Action{Kind: admission.EventAssign, Text: "bob"}, admission.IncidentInvestigating, ""},
		{"assign nobody", admission.IncidentOpen, admission.Action{Kind: admission.EventAssign}, "", "refused: assign to whom?"},
		{"investigate", admission.IncidentOpen, admission.Action{Kind: admission.EventInvestigate}, admission.IncidentInvestigating, ""},
		{"investigate twice", admission.IncidentInvestigating, admission.Action{Kind: admission.EventInvestigate}, "", "refused: the incident is investigating, not open"},
		{"remediate", admission.IncidentInvestigating, admission.Action{Kind: admission.EventRemediate, Text: postMortem}, admission.IncidentRemediated, ""},
		{"remediate open", admission.IncidentOpen, admission.Action{Kind: admission.EventRemediate, Text: postMortem}, admission.IncidentRemediated, ""},
		{"remediate without post-mortem", admission.IncidentOpen, admission.Action{Kind: admission.EventRemediate, Text: "fixed"}, "", "refused: remediation needs a post-mortem note"},
		{"remediate twice", admission.IncidentRemediated, admission.Action{Kind: admission.EventRemediate, Text: postMortem}, "", "refused: already remediated"},
		{"closed", admission.IncidentClosed, admission.Action{Kind: admission.EventNote, Text: "late"}, "", "refused: the incident is closed"},
		{"unknown action", admission.IncidentOpen, admission.Action{Kind: "delete"}, "", `refused: unknown action "delete"`},
		{"a verdict is no action", admission.IncidentOpen, admission.Action{Kind: admission.EventPass}, "", `refused: unknown action "pass"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := admission.Act(tt.from, tt.action)
			if tt.why != "" {
				if !errors.Is(err, admission.ErrRefused) || err.Error() != tt.why {
					t.Fatalf("Act = %+v, %v; want refused %q", got, err, tt.why)
				}
				return
			}
			if err != nil || got.To != tt.to || got.From != tt.from || got.Event != tt.action.Kind {
				t.Fatalf("Act = %+v, %v; want %s → %s", got, err, tt.from, tt.to)
			}
		})
	}
}

// TestDecide covers the decider's inputs: evidence, policy, identity and
// every incident state.
func TestDecide(t *testing.T) {
	evFail := &wire.Reason{Rule: "evidence.quote", Detail: "bad signature"}
	polFail := []wire.Reason{{Rule: "secureboot.enabled", Event: 3, Detail: "off"}}
	incident := func(state string) admission.State {
		return admission.State{HostID: "h", Host: admission.HostQuarantined, Incident: &admission.Incident{ID: 7, State: state}, Revision: "r"}
	}
	clean := admission.State{HostID: "h", Revision: "r"}
	pass := admission.Effects{SealCredentials: true, BootSpec: true, Lease: admission.LeaseProduction, BindLink: true}
	passID := pass
	passID.IssueIdentity = true
	quarantine := admission.Effects{Lease: admission.LeaseQuarantine, BindLink: true}
	unresolved := func(state string) []wire.Reason {
		return []wire.Reason{{Rule: admission.RuleIncidentUnresolved,
			Detail: "incident 7 is " + state + ": the host rejoins after an operator remediates it and a fresh attestation passes"}}
	}
	for _, tt := range []struct {
		name string
		in   admission.Input
		want admission.Decision
	}{
		{"clean pass", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: clean},
			admission.Decision{HostID: "h", Verdict: wire.VerdictPass, HostState: admission.HostAdmitted,
				Incident: admission.Transition{Event: admission.EventPass}, Effects: pass}},
		{"pass with identity", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Identity: admission.Identity{Requested: true}, State: clean},
			admission.Decision{HostID: "h", Verdict: wire.VerdictPass, HostState: admission.HostAdmitted,
				Incident: admission.Transition{Event: admission.EventPass}, Effects: passID}},
		{"pass closes a remediated incident", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: incident(admission.IncidentRemediated)},
			admission.Decision{HostID: "h", Verdict: wire.VerdictPass, HostState: admission.HostAdmitted,
				Incident: admission.Transition{From: admission.IncidentRemediated, Event: admission.EventPass, To: admission.IncidentClosed, Alert: admission.AlertClosed, Incident: 7}, Effects: pass}},
		{"clean but open", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Identity: admission.Identity{Requested: true}, State: incident(admission.IncidentOpen)},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: unresolved(admission.IncidentOpen),
				Incident: admission.Transition{From: admission.IncidentOpen, Event: admission.EventFail, To: admission.IncidentOpen, Attach: true, Incident: 7}, Effects: quarantine}},
		{"clean but investigating", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: incident(admission.IncidentInvestigating)},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: unresolved(admission.IncidentInvestigating),
				Incident: admission.Transition{From: admission.IncidentInvestigating, Event: admission.EventFail, To: admission.IncidentInvestigating, Attach: true, Incident: 7}, Effects: quarantine}},
		{"clean, unknown incident state", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, State: incident("bogus")},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: unresolved("bogus"),
				Incident: admission.Transition{From: "bogus", Event: admission.EventFail, To: "bogus", Attach: true, Incident: 7}, Effects: quarantine}},
		{"policy failure opens an incident", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Policy: polFail, State: clean},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: polFail,
				Incident: admission.Transition{Event: admission.EventFail, To: admission.IncidentOpen, Alert: admission.AlertOpened, Attach: true, Opens: true}, Effects: quarantine}},
		{"policy failure reopens", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Policy: polFail, State: incident(admission.IncidentRemediated)},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: polFail,
				Incident: admission.Transition{From: admission.IncidentRemediated, Event: admission.EventFail, To: admission.IncidentOpen, Alert: admission.AlertReopened, Attach: true, Incident: 7}, Effects: quarantine}},
		{"identity failure after the policy's", admission.Input{Evidence: admission.Evidence{QuoteVerified: true}, Policy: polFail, Identity: admission.Identity{Requested: true, Failure: "not certified"}, State: clean},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined,
				Reasons:  append(append([]wire.Reason{}, polFail...), wire.Reason{Rule: admission.RuleIdentity, Detail: "not certified"}),
				Incident: admission.Transition{Event: admission.EventFail, To: admission.IncidentOpen, Alert: admission.AlertOpened, Attach: true, Opens: true}, Effects: quarantine}},
		{"evidence failure alone, link unproven", admission.Input{Evidence: admission.Evidence{Failure: evFail}, Policy: polFail, State: clean},
			admission.Decision{HostID: "h", Verdict: wire.VerdictFail, HostState: admission.HostQuarantined, Reasons: []wire.Reason{*evFail},
				Incident: admission.Transition{Event: admission.EventFail, To: admission.IncidentOpen, Alert: admission.AlertOpened, Attach: true, Opens: true},
				Effects:  admission.Effects{Lease: admission.LeaseQuarantine}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := admission.Decide(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if got.Admitted() != (got.Verdict == wire.VerdictPass) || got.Admitted() != (len(got.Reasons) == 0) {
				t.Errorf("Decide = %+v: verdict and reasons disagree", got)
			}
		})
	}
}

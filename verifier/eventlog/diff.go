package eventlog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Diff explains in readable lines how the boot state b departs from a: Secure
// Boot, the key databases, boot applications, signers, debug actions, command
// lines, firmware and the PCR values. An empty result means no difference
// bootgate looks at. States replayed in different PCR banks differ in that
// alone: none of their digests can be compared.
func Diff(a, b *BootState) []string {
	if a.Hash != b.Hash {
		return []string{fmt.Sprintf("PCR bank: %v → %v: the logs' digests cannot be compared", a.Hash, b.Hash)}
	}
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if sa, sb := sbState(a.SecureBoot), sbState(b.SecureBoot); sa != sb {
		add("Secure Boot: %s → %s%s", sa, sb, at(b.SecureBoot.Event != 0, b.SecureBoot.Event))
	}
	for _, v := range []struct {
		name string
		a, b Variable
	}{{"PK", a.PK, b.PK}, {"KEK", a.KEK, b.KEK}, {"db", a.DB, b.DB}, {"dbx", a.DBX, b.DBX}} {
		if v.a.SHA256 == v.b.SHA256 {
			continue
		}
		added, removed := setDiff(certIDs(v.a.Certs), certIDs(v.b.Certs))
		ha, hr := setDiff(v.a.Hashes, v.b.Hashes)
		what := "changed"
		switch {
		case v.b.Unverified:
			what = "unverifiable" // its event's digest does not cover it
		case v.b.Event == 0 && !v.b.Present:
			what = "not measured" // no event to name: the log shows none
		}
		add("%s %s%s: %d certificates added %s, %d removed %s; %d hashes added, %d removed",
			v.name, what, at(v.b.Event != 0, v.b.Event), len(added), bracketed(added), len(removed), bracketed(removed), len(ha), len(hr))
	}
	apps := func(s *BootState) []string {
		var o []string
		for _, i := range s.BootApps {
			path := i.Path
			if path == "" {
				path = "(no path)"
			}
			o = append(o, i.SHA256[:16]+" "+path)
		}
		return o
	}
	if added, removed := setDiff(apps(a), apps(b)); len(added)+len(removed) > 0 {
		add("boot applications: added %s, removed %s", bracketed(added), bracketed(removed))
	}
	signers := func(s *BootState) []string {
		var o []string
		for _, x := range s.Authorities {
			o = append(o, x.Cert.SHA256[:16]+" "+x.Cert.Subject)
		}
		return o
	}
	if added, removed := setDiff(signers(a), signers(b)); len(added)+len(removed) > 0 {
		add("signers of boot applications: added %s, removed %s", bracketed(added), bracketed(removed))
	}
	actions := func(s *BootState) []string {
		var o []string
		for _, x := range s.Actions {
			o = append(o, x.Text)
		}
		return o
	}
	if added, removed := setDiff(actions(a), actions(b)); len(added)+len(removed) > 0 {
		add("firmware actions: added %q, removed %q", added, removed)
	}
	cmds := func(s *BootState) []string {
		var o []string
		for _, x := range s.Cmdlines {
			o = append(o, x.Text)
		}
		return o
	}
	if added, removed := setDiff(cmds(a), cmds(b)); len(added)+len(removed) > 0 {
		add("kernel command lines: added %q, removed %q", added, removed)
	}
	if a.SCRTMVersion != b.SCRTMVersion {
		add("firmware version (S-CRTM): %s → %s", showVersion(a.SCRTMVersion), showVersion(b.SCRTMVersion))
	}
	// PCRs are compared where a log has events for them. A quoted PCR that
	// no event extends (zero, or IMA's PCR 10) says nothing about the boot
	// the logs describe, and a log replayed offline has no value for it.
	logged := func(st *BootState, i int) string {
		if st.eventPCRs[i] {
			return st.PCRs[i]
		}
		return ""
	}
	var pcrs []int
	for i := range a.eventPCRs {
		pcrs = append(pcrs, i)
	}
	for i := range b.eventPCRs {
		if !a.eventPCRs[i] {
			pcrs = append(pcrs, i)
		}
	}
	slices.Sort(pcrs)
	for _, i := range pcrs {
		if va, vb := logged(a, i), logged(b, i); va != vb {
			add("PCR %d: %s → %s", i, short(va), short(vb))
		}
	}
	quirks := func(s *BootState) []string {
		var o []string
		for _, q := range s.Quirks {
			if !slices.Contains(o, q.Quirk) {
				o = append(o, q.Quirk)
			}
		}
		return o
	}
	if added, removed := setDiff(quirks(a), quirks(b)); len(added)+len(removed) > 0 {
		add("firmware quirks: added %v, removed %v", added, removed)
	}
	if len(b.Anomalies) > 0 {
		add("%d structural anomalies, e.g. event %d: %s", len(b.Anomalies), b.Anomalies[0].Event, b.Anomalies[0].Detail)
	}
	return out
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// sbState names the Secure Boot state a log shows.
func sbState(s SecureBoot) string {
	switch {
	case s.Unverified:
		return "unverifiable (its event's digest does not cover it)"
	case !s.Measured:
		return "not measured"
	}
	return onOff(s.Enabled)
}

// at names the event a finding comes from, and nothing when no event was
// measured: an event number is never given for what the log does not show.
func at(measured bool, event int) string {
	if !measured {
		return ""
	}
	return fmt.Sprintf(" (event %d)", event)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	if h == "" {
		return "(no events)"
	}
	return h
}

// showVersion quotes an S-CRTM version that is text; a GUID or hex form
// (scrtmVersion) shows as it is.
func showVersion(v string) string {
	if strings.HasPrefix(v, "GUID ") || strings.HasPrefix(v, "0x") {
		return v
	}
	return strconv.Quote(v)
}

// certIDs names certificates by the first 16 hex digits of their SHA-256
// and their subject: two certificates of one subject are told apart.
func certIDs(cs []Cert) []string {
	o := make([]string, len(cs))
	for i, c := range cs {
		o[i] = c.SHA256[:min(16, len(c.SHA256))] + " " + strings.TrimSpace(c.Subject)
	}
	return o
}

// bracketed shows items, which may hold spaces and commas (certificate names,
// paths), one after another between brackets, separated by "; ".
func bracketed(items []string) string {
	return "[" + strings.Join(items, "; ") + "]"
}

// setDiff returns what b has that a lacks, and what a has that b lacks.
func setDiff(a, b []string) (added, removed []string) {
	for _, x := range b {
		if !slices.Contains(a, x) {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			removed = append(removed, x)
		}
	}
	return added, removed
}

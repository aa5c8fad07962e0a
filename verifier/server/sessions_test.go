package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/attest"
)

func TestSessionsPerHostBound(t *testing.T) {
	now := time.Now()
	tab := newSessions(100)
	mk := func(host string) *session {
		return &session{enrollment: &attest.Enrollment{HostID: host}, expires: now.Add(time.Minute)}
	}
	for i := range 10 {
		if !tab.add(fmt.Sprintf("a%d", i), mk("host-a"), now) {
			t.Fatal("table full")
		}
	}
	if !tab.add("b0", mk("host-b"), now) {
		t.Fatal("table full")
	}
	if len(tab.m) != perHost+1 || len(tab.byHost["host-a"]) != perHost {
		t.Fatalf("%d sessions, %d for host-a", len(tab.m), len(tab.byHost["host-a"]))
	}
	// The oldest of host-a's sessions were evicted, the newest remain.
	if _, err := tab.take("a0", now); err == nil {
		t.Error("evicted session a0 still usable")
	}
	if _, err := tab.take("a9", now); err != nil {
		t.Errorf("newest session: %v", err)
	}
	if _, err := tab.take("a9", now); err == nil {
		t.Error("a session was usable twice")
	}
	if _, err := tab.take("b0", now.Add(2*time.Minute)); err != errExpired {
		t.Errorf("expired session: %v", err)
	}
	tab.sweep(now.Add(2 * time.Minute))
	if len(tab.m) != 0 || len(tab.byHost) != 0 {
		t.Errorf("after sweep: %d sessions, %d hosts", len(tab.m), len(tab.byHost))
	}
}

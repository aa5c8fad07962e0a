package admin

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootgate/bootgate/verifier/policy"
)

// An evidence bundle is written against one policy: its comparison
// (diff.policy_digest) and its policy section must name the same policy,
// even when a reload (SetPolicy) lands while the bundle is being written.
// evidenceBundle reads the policy in force twice (once in compare, once
// for the policy section), so a reload between the two reads yields a
// bundle whose diff was computed against one policy and whose policy
// section carries another.
func TestBundlePolicyIsOneSnapshot(t *testing.T) {
	f := newFixture(t)
	bad := loadEvidence(t, badLog, f.pol)
	_, inc := record(t, f.st, "new-host", time.Now(), bad, f.pol)
	other, err := policy.Parse([]byte(strings.Replace(string(f.pol.Source()), "name: "+f.pol.Name, "name: "+f.pol.Name+"-v2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if other.Digest() == f.pol.Digest() {
		t.Fatal("the second policy is the first")
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			p := f.pol
			if i%2 == 1 {
				p = other
			}
			f.api.SetPolicy(p, nil, "")
		}
	}()
	defer func() { stop.Store(true); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		p, err := f.api.evidenceBundle(context.Background(), inc)
		if err != nil {
			t.Fatal(err)
		}
		b := p.head
		if b.Policy == nil || b.Diff.PolicyDigest == "" {
			t.Fatalf("bundle without a policy comparison: %+v", b.Diff)
		}
		if b.Diff.PolicyDigest != b.Policy.Digest {
			t.Fatalf("bundle %d: diff computed against policy %s (%s), bundle policy section is %s (%s)",
				n, b.Diff.PolicyName, b.Diff.PolicyDigest, b.Policy.Name, b.Policy.Digest)
		}
	}
}

package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestBundleStreamed: the bundle the appliance streams is the incident's
// evidence as stored, attestation by attestation, with the head
// (incident, history, omitted, last pass, policy, diff) read before it.
func TestBundleStreamed(t *testing.T) {
	f := newFixture(t)
	good := loadEvidence(t, goodLog, f.pol)
	bad := loadEvidence(t, badLog, f.pol)
	record(t, f.st, "h", time.Now(), good, f.pol)
	var inc int64
	for range 3 {
		_, inc = record(t, f.st, "h", time.Now(), bad, f.pol)
	}
	var buf bytes.Buffer
	n, err := f.client.WriteBundle(context.Background(), inc, &buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteBundle = %d, %v (%d bytes received)", n, err, buf.Len())
	}
	var got Bundle
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("the streamed bundle is not JSON: %v", err)
	}
	plan, err := f.api.evidenceBundle(context.Background(), inc)
	if err != nil {
		t.Fatal(err)
	}
	want := *plan.head
	for _, id := range plan.ids {
		a, err := f.st.Attestation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want.Attestations = append(want.Attestations, a)
	}
	// Through JSON, as the operator reads it.
	wb, _ := json.Marshal(want)
	var wantJSON Bundle
	if err := json.Unmarshal(wb, &wantJSON); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantJSON, got); diff != "" {
		t.Errorf("streamed bundle differs (-built in memory +streamed):\n%s", diff)
	}
	if len(got.Attestations) != 3 || got.LastPass == nil || !bytes.Equal(got.Attestations[2].Evidence.EventLog, bad.log) {
		t.Errorf("bundle of %d attestations, last pass %v", len(got.Attestations), got.LastPass != nil)
	}
}

// TestBundleBrokenOffIsNotWhole: a bundle whose writing fails midway (an
// attestation that cannot be read) ends as invalid JSON, never as a
// document that decodes as a whole bundle.
func TestBundleBrokenOffIsNotWhole(t *testing.T) {
	f := newFixture(t)
	bad := loadEvidence(t, badLog, f.pol)
	_, inc := record(t, f.st, "h", time.Now(), bad, f.pol)
	plan, err := f.api.evidenceBundle(context.Background(), inc)
	if err != nil {
		t.Fatal(err)
	}
	plan.ids = append([]int64{999999}, plan.ids...)
	var buf bytes.Buffer
	if err := f.api.writeBundle(context.Background(), &buf, plan); err == nil {
		t.Fatal("a bundle with an unreadable attestation was written")
	}
	var b Bundle
	if err := json.Unmarshal(buf.Bytes(), &b); err == nil {
		t.Fatalf("the broken-off bundle decodes: %d bytes", buf.Len())
	}
}

package appliance

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bootgate/bootgate/verifier/store"
	"github.com/bootgate/bootgate/verifier/wire"
)

func TestStateCollector(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := &store.Attestation{HostID: "h1", Time: time.Now(), Verdict: wire.VerdictFail, PolicyName: "p", PolicyDigest: "d"}
	if _, err := st.Record(context.Background(), a, store.Host{}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP bootgate_hosts Hosts by state.
# TYPE bootgate_hosts gauge
bootgate_hosts{state="admitted"} 0
bootgate_hosts{state="quarantined"} 1
# HELP bootgate_incidents_unresolved Incidents that are not closed.
# TYPE bootgate_incidents_unresolved gauge
bootgate_incidents_unresolved 1
`
	if err := testutil.CollectAndCompare(newStateCollector(st, nil), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

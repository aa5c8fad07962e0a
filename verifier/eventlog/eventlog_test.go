package eventlog

import (
	"os"
	"path/filepath"
	"testing"
)

// realLogs returns every recorded firmware log in the repository's testdata.
func realLogs(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("../../testdata/eventlogs/*.bin")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no event logs in testdata: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

func TestRealLogsDump(t *testing.T) {
	for name, raw := range realLogs(t) {
		bank, err := Replay(raw)
		if err != nil {
			t.Errorf("%s: replay: %v", name, err)
			continue
		}
		st, err := Verify(raw, bank)
		if err != nil {
			t.Errorf("%s: verify: %v", name, err)
			continue
		}
		t.Logf("%s: events=%d sb=%+v pk=%v/%d kek=%d db=%d dbx=%d/%d auth=%d apps=%d actions=%v cmd=%d anomalies=%v", name, st.Events, st.SecureBoot, st.PK.Present, len(st.PK.Certs), len(st.KEK.Certs), len(st.DB.Certs), len(st.DBX.Hashes), len(st.DBX.Certs), len(st.Authorities), len(st.BootApps), st.Actions, len(st.Cmdlines), st.Anomalies)
	}
}

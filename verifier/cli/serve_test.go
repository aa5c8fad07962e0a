package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesUncoveredPCRs: an appliance whose quoted PCRs leave out
// one its policy reads (PCR 4, boot applications) does not start.
func TestServeRefusesUncoveredPCRs(t *testing.T) {
	dir := t.TempDir()
	pol := learn(t, "rhel8-uefi.bin")
	cfg := filepath.Join(dir, "appliance.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: "127.0.0.1:0"
tls: {cert: server.pem, key: server-key.pem}
policy: %q
store: bootgate.db
ek: {roots: roots}
pcrs: [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
`, pol)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "serve", "--config", cfg)
	if code != ExitBadInput || !strings.Contains(errOut, "PCR 4") {
		t.Fatalf("serve with pcrs leaving out 4: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "bootgate.db")); err == nil {
		t.Errorf("the refused appliance created its store")
	}
}

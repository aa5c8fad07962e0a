package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootgate/bootgate/qemu/swtpm"
)

// TestDemo runs the demo as `make demo` does: the real bootgate and
// bootgate-agent binaries, a real appliance process over TLS, and three
// swtpm-backed hosts, on the demo's default store (a throwaway PostgreSQL
// cluster, or SQLite when no server is installed). It fails if any host
// ends otherwise than expected.
func TestDemo(t *testing.T) {
	if err := swtpm.Available(); err != nil {
		t.Skipf("swtpm is needed: %v", err)
	}
	bin := t.TempDir()
	for _, pkg := range []string{"../../../verifier/cmd/bootgate", "../../../agent/cmd/bootgate-agent"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	err := run(ctx, []string{"--mode", "process", "--work", filepath.Join(t.TempDir(), "demo"), "--bin", bin,
		"--listen", freeAddr(t), "--logs", "../../../testdata/eventlogs"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"good-host         pass      ADMITTED",
		"secureboot-off    fail      QUARANTINED",
		"secure_boot.enabled: event 3: Secure Boot is disabled",
		"foreign-firmware  fail      QUARANTINED",
		"demo: every host ended as expected",
		"The appliance's store: ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

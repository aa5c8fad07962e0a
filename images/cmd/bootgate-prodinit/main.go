// Command bootgate-prodinit is the init of the production-OS test image: it
// shows that the machine reached the production OS after a passing
// attestation, prints what the agent handed over, and powers off.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootgate/bootgate/verifier/wire"
)

// Marker is what tests and people look for on the console.
const Marker = "bootgate-production-os"

func main() {
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	var handover wire.Handover
	b, err := os.ReadFile("/" + wire.HandoverPath)
	if err == nil {
		err = json.Unmarshal(b, &handover)
	}
	ev := map[string]any{"event": wire.EventOSRunning, "marker": Marker, "handover": handover}
	if err != nil {
		ev["handover_error"] = err.Error()
	}
	if cmdline, err := os.ReadFile("/proc/cmdline"); err == nil {
		ev["cmdline"] = string(cmdline)
	}
	// What the agent handed over: credentials (names and sizes only: they are
	// secrets) and the identity certificate.
	creds := map[string]int{}
	credDir := "/" + wire.HandoverCredentialsDir + "/"
	if entries, err := os.ReadDir(credDir); err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(credDir + e.Name()); err == nil {
				creds[e.Name()] = len(b)
			}
		}
	}
	ev["credentials"] = creds
	if b, err := os.ReadFile("/" + wire.HandoverIdentityPath); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				ev["identity"] = map[string]any{"subject": c.Subject.String(), "issuer": c.Issuer.String(), "not_after": c.NotAfter}
			}
		}
	}
	if handover.Verifier != "" {
		if r, err := callAppliance(context.Background(), handover.Verifier); err != nil {
			ev["appliance_call_error"] = err.Error()
		} else {
			ev["appliance_call"] = r
		}
	}
	line, _ := json.Marshal(ev)
	fmt.Printf("\n*** %s: this machine booted the production OS after attestation %d ***\n", Marker, handover.AttestationID)
	fmt.Printf("\n%s %s\n", wire.EventMarker, line)
	unix.Sync()
	time.Sleep(500 * time.Millisecond)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("power off:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

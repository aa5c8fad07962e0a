// Command bootgate-prodinit is the init of the production-OS test image: it
// shows that the machine reached the production OS after a passing
// attestation, prints what the agent handed over, and powers off.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Marker is what tests and people look for on the console.
const Marker = "bootgate-production-os"

func main() {
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	handover := map[string]any{}
	b, err := os.ReadFile("/bootgate/attestation.json")
	if err == nil {
		err = json.Unmarshal(b, &handover)
	}
	ev := map[string]any{"event": "os_running", "marker": Marker, "handover": handover}
	if err != nil {
		ev["handover_error"] = err.Error()
	}
	if cmdline, err := os.ReadFile("/proc/cmdline"); err == nil {
		ev["cmdline"] = string(cmdline)
	}
	line, _ := json.Marshal(ev)
	fmt.Printf("\n*** %s: this machine booted the production OS after attestation %v ***\n", Marker, handover["attestation_id"])
	fmt.Printf("\nBOOTGATE-EVENT %s\n", line)
	unix.Sync()
	time.Sleep(500 * time.Millisecond)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("power off:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

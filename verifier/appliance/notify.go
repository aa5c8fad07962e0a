package appliance

import (
	"fmt"
	"net"
	"os"
)

// notify sends state (e.g. "READY=1") to the service manager over the
// datagram socket NOTIFY_SOCKET names (sd_notify(3); a leading '@' names
// an abstract socket). Without NOTIFY_SOCKET it does nothing.
func notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	return nil
}

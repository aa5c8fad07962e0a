package wire

// EventMarker starts every typed event line on a guest's console, with the
// event as one JSON object after it:
//
//	BOOTGATE-EVENT {"event":"attested","verdict":"pass",...}
//
// The agent and the production-OS test image print these lines; test
// harnesses (qemu) parse them. Every object has an "event" field naming one
// of the Event constants.
const EventMarker = "BOOTGATE-EVENT"

// Event names a console event: the value of the "event" field.
type Event string

// Console events of the agent and of the production-OS test image.
const (
	EventAgentStart        Event = "agent_start"
	EventConfigError       Event = "config_error"
	EventModulesLoaded     Event = "modules_loaded"
	EventModulesError      Event = "modules_error"
	EventNetworkUp         Event = "network_up"
	EventNetworkError      Event = "network_error"
	EventNetworkProduction Event = "network_production"
	EventVerifier          Event = "verifier"
	EventAttestError       Event = "attest_error"
	EventAttested          Event = "attested"
	EventCredentials       Event = "credentials"
	EventIdentity          Event = "identity"
	EventOSVerified        Event = "os_verified"
	EventOSLoaded          Event = "os_loaded"
	EventKexec             Event = "kexec"
	EventBootError         Event = "boot_error"
	EventRebootRequired    Event = "reboot_required"
	EventRetry             Event = "retry"
	EventQuarantined       Event = "quarantined"
	// EventOSRunning is printed by the production-OS test image: the
	// machine reached the production OS.
	EventOSRunning Event = "os_running"
)

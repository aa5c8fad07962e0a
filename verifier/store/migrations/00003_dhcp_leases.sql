-- The DHCP gate's leases (verifier/dhcpgate): bound leases and declined
-- addresses, and which host each MAC belongs to until when. Times are Unix
-- nanoseconds, IPv4 addresses integers in network order. A database whose
-- lease tables were made before migrations were files gets the columns it
-- lacks before this runs (see adoptLegacy); then these statements change
-- nothing.

-- +goose Up
CREATE TABLE IF NOT EXISTS dhcp_leases (
	ip         {{int}} PRIMARY KEY,
	mac        TEXT NOT NULL,
	pool       TEXT NOT NULL,
	bound      {{int}} NOT NULL,
	expires    {{int}} NOT NULL,
	relay      TEXT NOT NULL DEFAULT '',
	circuit_id {{blob}},
	remote_id  {{blob}}
);

CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases (mac);

-- A binding from before bindings expired has expires 0: it is expired, so
-- the host attests again before it is admitted (fail closed).
CREATE TABLE IF NOT EXISTS dhcp_host_macs (
	mac     TEXT PRIMARY KEY,
	host_id TEXT NOT NULL,
	updated {{int}} NOT NULL,
	expires {{int}} NOT NULL DEFAULT 0
);

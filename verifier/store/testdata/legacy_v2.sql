-- A database as bootgate made it before migrations were files: the
-- store's schema (verifier/store/sqlite.go: schemaStatements, then the
-- migrations to schema_version 2) and the DHCP gate's lease tables
-- (verifier/dhcpgate/leases.go: migrate), statement for statement, with a
-- few rows. The store's TestMigrateLegacy and the DHCP gate's
-- TestLeasesMigrateLegacy open it with today's code.

CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL CHECK (version > 0));
INSERT INTO schema_version (version) VALUES (2);
CREATE TABLE IF NOT EXISTS hosts (
	id                  TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
	ek_type             TEXT NOT NULL,
	ek_issuer           TEXT NOT NULL,
	state               TEXT NOT NULL CHECK (state IN ('admitted', 'quarantined')),
	first_seen          TEXT NOT NULL,
	last_seen           TEXT NOT NULL,
	last_verdict        TEXT NOT NULL CHECK (last_verdict IN ('pass', 'fail')),
	last_attestation_id INTEGER REFERENCES attestations (id)
);
CREATE TABLE IF NOT EXISTS attestations (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	host_id       TEXT NOT NULL REFERENCES hosts (id),
	time          TEXT NOT NULL,
	verdict       TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
	reasons       TEXT NOT NULL CHECK (json_valid(reasons)),
	policy_name   TEXT NOT NULL,
	policy_digest TEXT NOT NULL,
	ek_cert       BLOB,
	ek_type       TEXT NOT NULL,
	ek_public     BLOB,
	ak            TEXT NOT NULL CHECK (json_valid(ak)),
	nonce         BLOB,
	quote         BLOB,
	signature     BLOB,
	pcrs          TEXT NOT NULL CHECK (json_valid(pcrs)),
	event_log     BLOB,
	boot_state    BLOB
);
CREATE INDEX IF NOT EXISTS attestations_host ON attestations (host_id);
CREATE TABLE IF NOT EXISTS incidents (
	id                   INTEGER PRIMARY KEY AUTOINCREMENT,
	host_id              TEXT NOT NULL REFERENCES hosts (id),
	state                TEXT NOT NULL,
	opened               TEXT NOT NULL,
	updated              TEXT NOT NULL,
	failures             INTEGER NOT NULL CHECK (failures > 0),
	first_attestation_id INTEGER NOT NULL REFERENCES attestations (id),
	last_attestation_id  INTEGER NOT NULL REFERENCES attestations (id),
	reasons              TEXT NOT NULL CHECK (json_valid(reasons)),
	assignee             TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS incident_notes (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	incident_id INTEGER NOT NULL REFERENCES incidents (id),
	time        TEXT NOT NULL,
	author      TEXT NOT NULL,
	kind        TEXT NOT NULL,
	text        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	time      TEXT NOT NULL,
	event     TEXT NOT NULL CHECK (json_valid(event)),
	delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	time   TEXT NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS incidents_host_state ON incidents (host_id, state);
CREATE INDEX IF NOT EXISTS hosts_state ON hosts (state, id);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state, id);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (host_id) WHERE state <> 'closed';
CREATE TABLE IF NOT EXISTS identities (
	serial    TEXT PRIMARY KEY NOT NULL,
	host_id   TEXT NOT NULL REFERENCES hosts (id),
	issued    TEXT NOT NULL,
	not_after TEXT NOT NULL,
	revoked   TEXT
);
CREATE INDEX IF NOT EXISTS identities_host ON identities (host_id) WHERE revoked IS NULL;
CREATE INDEX IF NOT EXISTS identities_revoked ON identities (not_after) WHERE revoked IS NOT NULL;
CREATE INDEX IF NOT EXISTS identities_expiry ON identities (not_after);
CREATE TABLE IF NOT EXISTS incident_attestations (
	incident_id    INTEGER NOT NULL REFERENCES incidents (id),
	attestation_id INTEGER NOT NULL REFERENCES attestations (id),
	PRIMARY KEY (incident_id, attestation_id)
) WITHOUT ROWID;
ALTER TABLE attestations ADD COLUMN tpm TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(tpm));
CREATE TABLE IF NOT EXISTS dhcp_leases (
	ip      INTEGER PRIMARY KEY,
	mac     TEXT NOT NULL,
	pool    TEXT NOT NULL,
	bound   INTEGER NOT NULL,
	expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases (mac);
CREATE TABLE IF NOT EXISTS dhcp_host_macs (
	mac     TEXT PRIMARY KEY,
	host_id TEXT NOT NULL,
	updated INTEGER NOT NULL
);
ALTER TABLE dhcp_leases ADD COLUMN relay TEXT NOT NULL DEFAULT '';
ALTER TABLE dhcp_leases ADD COLUMN circuit_id BLOB;
ALTER TABLE dhcp_leases ADD COLUMN remote_id BLOB;
ALTER TABLE dhcp_host_macs ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;
INSERT INTO hosts (id, ek_type, ek_issuer, state, first_seen, last_seen, last_verdict) VALUES ('old', 'rsa2048', '', 'admitted', '2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z', 'pass');
INSERT INTO attestations (host_id, time, verdict, reasons, policy_name, policy_digest, ek_type, ak, pcrs) VALUES ('old', '2026-01-01T00:00:00.000000000Z', 'pass', '[]', 'p', 'd', 'rsa2048', '{}', '[]');
UPDATE hosts SET last_attestation_id = 1 WHERE id = 'old';
INSERT INTO audit (time, actor, action, target, detail) VALUES ('2026-01-01T00:00:00.000000000Z', 'local:root', 'operator.add', 'alice', '');
INSERT INTO dhcp_leases (ip, mac, pool, bound, expires, relay, circuit_id, remote_id) VALUES (169345034, '52:54:00:12:34:56', 'production', 1, 4102444800000000000, '10.24.9.1', X'7377703737', X'6c6561662d33');
INSERT INTO dhcp_host_macs (mac, host_id, updated, expires) VALUES ('52:54:00:12:34:56', 'old', 1767225600000000000, 4102444800000000000);

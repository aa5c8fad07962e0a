-- The appliance's store: hosts, their attestations and incidents, the
-- outbox of alerts, the audit log, host identities. This is schema version
-- 1 of the store before migrations were files; every statement is
-- idempotent, so a database made by that code passes through unchanged.
-- There are no down migrations: a database is never downgraded.

-- +goose Up
CREATE TABLE IF NOT EXISTS hosts (
	id                  TEXT{{collateC}} PRIMARY KEY NOT NULL CHECK (id <> ''),
	ek_type             TEXT NOT NULL,
	ek_issuer           TEXT NOT NULL,
	state               TEXT NOT NULL CHECK (state IN ('admitted', 'quarantined')),
	first_seen          TEXT NOT NULL,
	last_seen           TEXT NOT NULL,
	last_verdict        TEXT NOT NULL CHECK (last_verdict IN ('pass', 'fail')),
	last_attestation_id {{int}}{{if sqlite}} REFERENCES attestations (id){{end}}
);

CREATE TABLE IF NOT EXISTS attestations (
	id            {{id}},
	host_id       TEXT NOT NULL REFERENCES hosts (id),
	time          TEXT NOT NULL,
	verdict       TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
	reasons       TEXT NOT NULL CHECK ({{json "reasons"}}),
	policy_name   TEXT NOT NULL,
	policy_digest TEXT NOT NULL,
	ek_cert       {{blob}},
	ek_type       TEXT NOT NULL,
	ek_public     {{blob}},
	ak            TEXT NOT NULL CHECK ({{json "ak"}}),
	nonce         {{blob}},
	quote         {{blob}},
	signature     {{blob}},
	pcrs          TEXT NOT NULL CHECK ({{json "pcrs"}}),
	event_log     {{blob}},
	boot_state    {{blob}}
);

CREATE INDEX IF NOT EXISTS attestations_host ON attestations (host_id);

CREATE TABLE IF NOT EXISTS incidents (
	id                   {{id}},
	host_id              TEXT NOT NULL REFERENCES hosts (id),
	state                TEXT NOT NULL,
	opened               TEXT NOT NULL,
	updated              TEXT NOT NULL,
	failures             {{int}} NOT NULL CHECK (failures > 0),
	first_attestation_id {{int}} NOT NULL REFERENCES attestations (id),
	last_attestation_id  {{int}} NOT NULL REFERENCES attestations (id),
	reasons              TEXT NOT NULL CHECK ({{json "reasons"}}),
	assignee             TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS incident_notes (
	id          {{id}},
	incident_id {{int}} NOT NULL REFERENCES incidents (id),
	time        TEXT NOT NULL,
	author      TEXT NOT NULL,
	kind        TEXT NOT NULL,
	text        TEXT NOT NULL
);

-- Alerts waiting for delivery, in the order they happened: written in the
-- transaction that made the change they report.
CREATE TABLE IF NOT EXISTS outbox (
	id        {{id}},
	time      TEXT NOT NULL,
	event     TEXT NOT NULL CHECK ({{json "event"}}),
	delivered {{int}} NOT NULL DEFAULT 0
);

-- Append-only: no statement of the store updates or deletes it.
CREATE TABLE IF NOT EXISTS audit (
	id     {{id}},
	time   TEXT NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);

{{if sqlite -}}
-- +goose StatementBegin
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd
{{- else -}}
-- +goose StatementBegin
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'the audit log is append-only';
END $$;
-- +goose StatementEnd

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The cycle between hosts and attestations: PostgreSQL checks a
-- reference when it is declared, so this one comes once both exist.
ALTER TABLE hosts ADD CONSTRAINT hosts_last_attestation
	FOREIGN KEY (last_attestation_id) REFERENCES attestations (id);
{{- end}}

CREATE INDEX IF NOT EXISTS incidents_host_state ON incidents (host_id, state);
CREATE INDEX IF NOT EXISTS hosts_state ON hosts (state, id);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state, id);

-- A host has at most one unresolved incident.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (host_id) WHERE state <> 'closed';

-- Host identity certificates issued, and revoked when their host stopped
-- being admitted (a failed attestation, an operator's quarantine): the
-- appliance's CRL lists the revoked ones until they expire.
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
	incident_id    {{int}} NOT NULL REFERENCES incidents (id),
	attestation_id {{int}} NOT NULL REFERENCES attestations (id),
	PRIMARY KEY (incident_id, attestation_id)
){{rowid}};

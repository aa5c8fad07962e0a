-- Evidence stored once by its hash (evidence_blobs): an attestation's
-- event log, EK certificate and boot state are kept there, content
-- addressed by SHA-256, and the attestation references them by hash, so a
-- fleet booting one firmware stores its event log once. Attestations
-- recorded before this migration keep their evidence in the inline columns
-- (event_log, ek_cert, boot_state), which the store goes on reading where
-- the hash is NULL; nothing is moved, and retention (DB.Prune) deletes
-- them in time like any other.
--
-- A blob is deleted when no attestation references it: the references
-- are foreign keys, so that a blob cannot go while an attestation still
-- names it, and indexed, so that retention finds its last reference
-- quickly.
--
-- incidents.unrecorded counts the failures counted on an incident whose
-- attestation was not stored (the per-host limit on stored failures).
--
-- The indexes serve the limit on stored failures (a host's failures by
-- time) and retention (attestations by time, and everything that keeps
-- one: a host's last attestation, an incident's first and last and its
-- attached attestations).

-- +goose Up
CREATE TABLE evidence_blobs (
	sha256 {{blob}} PRIMARY KEY NOT NULL CHECK (length(sha256) = 32),
	bytes  {{blob}} NOT NULL
);

ALTER TABLE attestations ADD COLUMN event_log_sha256 {{blob}} REFERENCES evidence_blobs (sha256);
ALTER TABLE attestations ADD COLUMN ek_cert_sha256 {{blob}} REFERENCES evidence_blobs (sha256);
ALTER TABLE attestations ADD COLUMN boot_state_sha256 {{blob}} REFERENCES evidence_blobs (sha256);

CREATE INDEX attestations_event_log_sha256 ON attestations (event_log_sha256) WHERE event_log_sha256 IS NOT NULL;
CREATE INDEX attestations_ek_cert_sha256 ON attestations (ek_cert_sha256) WHERE ek_cert_sha256 IS NOT NULL;
CREATE INDEX attestations_boot_state_sha256 ON attestations (boot_state_sha256) WHERE boot_state_sha256 IS NOT NULL;

CREATE INDEX attestations_host_failures ON attestations (host_id, time) WHERE verdict = 'fail';
CREATE INDEX attestations_time ON attestations (time);
CREATE INDEX attestations_host_passes ON attestations (host_id, id) WHERE verdict = 'pass';
CREATE INDEX hosts_last_attestation ON hosts (last_attestation_id);
CREATE INDEX incidents_first_attestation ON incidents (first_attestation_id);
CREATE INDEX incidents_last_attestation ON incidents (last_attestation_id);
CREATE INDEX incident_attestations_attestation ON incident_attestations (attestation_id);

ALTER TABLE incidents ADD COLUMN unrecorded {{int}} NOT NULL DEFAULT 0 CHECK (unrecorded >= 0);

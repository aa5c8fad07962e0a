-- Attestations as a bootgate at schema version 5 recorded them, evidence
-- inline in the row (before evidence_blobs): run after legacy_v2.sql
-- (whose host 'old' they belong to). TestMigrateInlineEvidence opens the
-- result with today's code, which reads these columns where the
-- attestation has no blob hash. Attestation 2 has nil and empty parts.

INSERT INTO attestations (id, host_id, time, verdict, reasons, policy_name, policy_digest,
	ek_cert, ek_type, ek_public, ak, nonce, quote, signature, pcrs, event_log, boot_state)
VALUES (2, 'old', '2026-01-02T00:00:00.000000000Z', 'pass', '[]', 'p', 'd',
	X'308201', 'rsa2048', X'0001', '{"public":"AAE="}', X'6e6f6e6365', X'ff544347', X'0014',
	'[{"index":0,"digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]',
	X'0000000003000000ff00000000', X'7b227365637572655f626f6f74223a747275657d');
INSERT INTO attestations (id, host_id, time, verdict, reasons, policy_name, policy_digest,
	ek_cert, ek_type, ek_public, ak, nonce, quote, signature, pcrs, event_log, boot_state)
VALUES (3, 'old', '2026-01-03T00:00:00.000000000Z', 'pass', '[]', 'p', 'd',
	NULL, 'rsa2048', NULL, '{}', NULL, NULL, NULL, '[]', X'', NULL);
UPDATE hosts SET last_attestation_id = 3 WHERE id = 'old';

-- What each attestation's TPM said of itself (store.TPM, JSON). This was
-- the store's schema version 2.

-- +goose Up
ALTER TABLE attestations ADD COLUMN tpm TEXT NOT NULL DEFAULT '{}' CHECK ({{json "tpm"}});

-- Before migrations were files, the store kept its version in
-- schema_version (1 or 2) and refused to open a database with a higher
-- one. Migrate keeps it at the newest version applied (this is 4), so that
-- such an older bootgate refuses this database instead of writing to a
-- schema it does not know, and a database fenced by a newer bootgate is
-- refused by this one.

-- +goose Up
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL CHECK (version > 0));
DELETE FROM schema_version;
INSERT INTO schema_version (version) VALUES (4);

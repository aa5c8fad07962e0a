-- Enrollment sessions already used (ConsumeSession): a session token is
-- accepted once, by whichever appliance sees it first. A row is kept until
-- its session expires, after which the token is refused for its age, and
-- is then deleted.

-- +goose Up
CREATE TABLE used_sessions (
	id      {{blob}} PRIMARY KEY NOT NULL,
	expires TEXT NOT NULL
);

CREATE INDEX used_sessions_expires ON used_sessions (expires);

-- Enrollment sessions live in sealed tokens, not in any appliance's memory;
-- this table makes each token usable once across every replica sharing the
-- store. A row may go once its token has expired (ConsumeSession deletes
-- them as it goes).

-- +goose Up
CREATE TABLE consumed_sessions (
  id      BLOB PRIMARY KEY,
  expires TEXT NOT NULL
);
CREATE INDEX consumed_sessions_expires ON consumed_sessions (expires);

-- +goose Down
DROP TABLE consumed_sessions;

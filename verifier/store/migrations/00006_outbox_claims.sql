-- Alert delivery claims (ClaimAlerts): the appliance delivering the head of
-- the outbox claims its rows until a time (Unix nanoseconds), so that of
-- several appliances sharing the database one delivers each alert, in
-- order. A claim of an appliance that stopped ends at its time, and
-- another appliance takes the rows over.

-- +goose Up
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN claimed_until {{int}} NOT NULL DEFAULT 0;
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered = 0;

-- Rows the broker refuses for good (too large, invalid topic, not authorised) are parked instead
-- of being retried forever in front of everything recorded after them. Only the later rows of
-- the same key wait behind a parked row; an operator retries or drops it (`outbox::admin`).

-- Set when the relay parked the row; cleared when an operator retries it.
ALTER TABLE outbox ADD COLUMN parked_at TIMESTAMPTZ;
-- Set when an operator dropped a parked row: it is never published and stays, for the record,
-- until retention deletes it.
ALTER TABLE outbox ADD COLUMN dropped_at TIMESTAMPTZ;

-- The relay's scan in id order reads only rows it may publish: neither parked nor dropped.
DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL AND dropped_at IS NULL;

-- The rows that hold back the later rows of their key: parked ones, and pending ones whose last
-- publish failed (`attempts > 0` on a pending row). Few at any time, so the relay's check "is an
-- earlier row of this key holding it back?" is one probe of this small index per pending row.
CREATE INDEX outbox_blocking_idx ON outbox (topic, key, id)
    WHERE key IS NOT NULL AND published_at IS NULL AND dropped_at IS NULL
      AND (parked_at IS NOT NULL OR attempts > 0);

-- The admin listing and the parked-rows gauge, in id order.
CREATE INDEX outbox_parked_idx ON outbox (id) WHERE parked_at IS NOT NULL;

-- Retention deletes dropped rows by the time they were dropped.
CREATE INDEX outbox_dropped_at_idx ON outbox (dropped_at) WHERE dropped_at IS NOT NULL;

-- The transactional outbox: one row per message, inserted in the same transaction as the entity
-- change it announces, published to Kafka by the relay after commit.

CREATE TABLE outbox (
    -- Insertion order. The relay publishes in this order, which is what keeps the order of the
    -- messages of one key.
    id           BIGSERIAL   PRIMARY KEY,
    -- The `message_id` header; consumers deduplicate by it. Unique, so recording the same message
    -- twice fails (and rolls back) the second transaction.
    message_id   UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    -- The Kafka key; NULL lets the producer's partitioner choose (no order).
    key          TEXT,
    -- The `message_type` header, e.g. `OrderPlaced`.
    message_type TEXT        NOT NULL,
    -- The encoded payload; NULL is a tombstone.
    payload      BYTEA,
    -- {"traceparent": "...", "correlation_id": "...", "extra": [["name", "value"], ...]}:
    -- the trace context and correlation id of the recording span, and the caller's own headers.
    headers      JSONB       NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL while pending. Set once the broker acknowledged the message.
    published_at TIMESTAMPTZ,
    -- Publish attempts that reached a result, and the last failure (kept after a later success).
    attempts     INT         NOT NULL DEFAULT 0,
    last_error   TEXT
);

-- The relay's query, `WHERE published_at IS NULL ORDER BY id LIMIT n`, reads only this small
-- index however many published rows the table still holds.
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;

-- Retention deletes by publication time.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

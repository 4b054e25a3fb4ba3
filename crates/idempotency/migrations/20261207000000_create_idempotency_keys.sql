-- The `Idempotency-Key`s of a service's POST routes (IETF draft "The Idempotency-Key HTTP Header
-- Field"): a client that retries a request whose answer it did not get, with the same key, gets
-- the resource the first request created instead of a second one.
CREATE TABLE idempotency_keys (
    -- The operation the key belongs to (`POST /orders`): the same key sent to two routes is two
    -- keys, as a client generating keys per request would expect.
    scope        TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    -- md5 of the request as the service parsed it: the same key with another request is refused.
    request_hash TEXT        NOT NULL,
    -- The resource the first request created, in the same transaction as this row.
    resource_id  UUID        NOT NULL,
    -- A key older than the service's TTL is forgotten: it may be used again, and retention
    -- deletes it.
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Retention deletes by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

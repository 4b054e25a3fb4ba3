-- The `Idempotency-Key`s of `POST /orders` (IETF draft "The Idempotency-Key HTTP Header Field"):
-- a client that retries a request whose answer it did not get, with the same key, gets the order
-- the first request placed instead of a second one.
CREATE TABLE idempotency_keys (
    key          TEXT        PRIMARY KEY,
    -- md5 of the request as the service parsed it: the same key with another request is refused.
    request_hash TEXT        NOT NULL,
    -- The order the first request placed, in the same transaction as this row.
    order_id     UUID        NOT NULL,
    -- A key older than IDEMPOTENCY_KEY_TTL is forgotten: it may be used again.
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Messages a consumer could not handle (undecodable, of an unknown type, refused by its handler
-- for good), set aside so that the partition moves on. Listed, replayed and dropped through the
-- owning service's admin routes.

CREATE TABLE consumer_dead_letters (
    -- UUID v7: the listing order and the cursor of its pages.
    id                UUID        PRIMARY KEY,
    -- Which consumer set it aside (e.g. `orders.catalog_products`); a replay runs that
    -- consumer's handler again.
    consumer          TEXT        NOT NULL,
    -- Where it was consumed.
    topic             TEXT        NOT NULL,
    kafka_partition   INT         NOT NULL,
    kafka_offset      BIGINT      NOT NULL,
    -- The message as it arrived, byte for byte (a key or payload may be anything; NULL payload
    -- is a tombstone). Header names are strings in Kafka, values bytes.
    key               BYTEA,
    payload           BYTEA,
    header_names      TEXT[]      NOT NULL DEFAULT '{}',
    header_values     BYTEA[]     NOT NULL DEFAULT '{}',
    message_timestamp TIMESTAMPTZ,
    -- md5 of key and payload: a redelivery of the same message is recognised, while a different
    -- message at the same coordinates (a broker that lost its log and started offsets anew) is
    -- set aside on its own.
    fingerprint       TEXT        NOT NULL,
    -- Why it was set aside, or why the last replay failed.
    error             TEXT        NOT NULL,
    attempts          INT         NOT NULL,
    replays           INT         NOT NULL DEFAULT 0,
    state             TEXT        NOT NULL DEFAULT 'dead'
                      CHECK (state IN ('dead', 'replayed', 'dropped')),
    set_aside_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    state_changed_at  TIMESTAMPTZ,
    UNIQUE (consumer, topic, kafka_partition, kafka_offset, fingerprint)
);

-- The admin list: the dead ones, oldest first, by page.
CREATE INDEX consumer_dead_letters_dead_idx ON consumer_dead_letters (id) WHERE state = 'dead';

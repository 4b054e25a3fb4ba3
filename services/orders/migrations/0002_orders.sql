-- The orders this service owns. Placing one inserts the order, its items and its `OrderPlaced`
-- event (into the outbox) in one transaction.
CREATE TABLE orders (
    order_id       UUID        PRIMARY KEY,
    customer_id    TEXT        NOT NULL,
    customer_email TEXT        NOT NULL,
    -- pending_payment, for now; paid and cancelled come with the task scheduler.
    status         TEXT        NOT NULL,
    total_cents    BIGINT      NOT NULL CHECK (total_cents >= 0),
    currency       TEXT        NOT NULL,
    -- +1 with every change; the revision of the order's latest event.
    revision       BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The lines of an order, priced when it was placed: a later price change does not touch them.
CREATE TABLE order_items (
    order_id         UUID   NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    -- 1, 2, … in the order the client listed the items.
    line             INT    NOT NULL CHECK (line >= 1),
    product_id       TEXT   NOT NULL,
    quantity         INT    NOT NULL CHECK (quantity >= 1),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line)
);

-- The product catalog this service owns. Every change here is announced on
-- catalog-cache.products.v1 through the outbox, in the same transaction.

CREATE TABLE products (
    -- Chosen by the client (PUT /products/{product_id}): 1 to 64 of [A-Za-z0-9._-].
    product_id  TEXT        PRIMARY KEY,
    sku         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL CHECK (price_cents >= 0),
    -- An ISO 4217 code such as EUR.
    currency    TEXT        NOT NULL,
    stock       BIGINT      NOT NULL CHECK (stock >= 0),
    active      BOOLEAN     NOT NULL,
    -- +1 with every change; the revision of the product's latest event.
    revision    BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The revision of the `deleted` event of each product that was deleted and not created again.
--
-- Consumers remember the revision of a delete and ignore any event of that product with a lower
-- or equal revision. A product created again under the same id therefore continues the sequence
-- (its `created` event has this revision + 1) instead of starting over at 1, which every
-- consumer would skip.
CREATE TABLE deleted_products (
    product_id TEXT        PRIMARY KEY,
    revision   BIGINT      NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

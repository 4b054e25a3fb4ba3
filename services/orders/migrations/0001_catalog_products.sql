-- The products of catalog-cache as orders needs them: a read model projected from the events on
-- catalog-cache.products.v1, so that placing an order never calls catalog-cache. Only the fields
-- orders reads are kept (stock, for one, is not).
--
-- Written only by the projector; a row is as fresh as the last event applied to it.
CREATE TABLE catalog_products (
    product_id  TEXT        PRIMARY KEY,
    sku         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    -- An ISO 4217 code such as EUR, as catalog-cache validated it.
    currency    TEXT        NOT NULL,
    -- An inactive product cannot be ordered.
    active      BOOLEAN     NOT NULL,
    -- The revision of the product's event this row holds.
    revision    BIGINT      NOT NULL,
    -- When that event was applied here.
    synced_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

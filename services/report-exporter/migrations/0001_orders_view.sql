-- The orders of the orders service as report-exporter needs them: a read model projected from the
-- events on orders.orders.v1, so that an export reads its own database and never calls orders.
-- Only the fields the exports read are kept: of the items, only how many units the order has.
--
-- Written only by the projector; a row is as fresh as the last event applied to it. Orders are
-- never deleted upstream, so rows leave only when the read model is rebuilt.
CREATE TABLE orders_view (
    order_id       UUID        PRIMARY KEY,
    -- pending_payment, paid or cancelled today; kept as text so that a status orders adds later
    -- is stored rather than refused.
    status         TEXT        NOT NULL,
    customer_id    TEXT        NOT NULL,
    customer_email TEXT        NOT NULL,
    total_cents    BIGINT      NOT NULL,
    -- An ISO 4217 code such as EUR; total_cents is in its minor unit.
    currency       TEXT        NOT NULL,
    -- The sum of the items' quantities.
    item_count     INT         NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    -- NULL for an order whose event predates the field (it was added to the contract later).
    payment_due_at TIMESTAMPTZ,
    -- The revision of the order's event this row holds.
    revision       BIGINT      NOT NULL,
    -- When that event was applied here.
    synced_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Exports walk a created_at range in keyset order, a chunk at a time:
--   WHERE created_at >= $from AND created_at < $to AND (created_at, order_id) > ($cursor_at, $cursor_id)
--   ORDER BY created_at, order_id LIMIT $chunk
-- The row comparison and the ORDER BY match this index, so each chunk starts where the cursor
-- points and reads only the rows it returns; order_id breaks ties between orders placed in the
-- same microsecond.
CREATE INDEX orders_view_created_at_order_id ON orders_view (created_at, order_id);

-- The same walk with `AND status = $status`: with the status first, the scan reads only the
-- orders in that status, instead of reading every order of the range and dropping the others.
CREATE INDEX orders_view_status_created_at_order_id ON orders_view (status, created_at, order_id);

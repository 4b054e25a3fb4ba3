-- Paying for an order, and cancelling it when it is not paid in time: `payment_due_at` is when
-- the order's `CancelUnpaidOrder` schedule fires (created_at + PAYMENT_TIMEOUT), and the status
-- moves from pending_payment to paid (POST /orders/{order_id}/pay) or to cancelled (by that
-- schedule), never back.
ALTER TABLE orders ADD COLUMN payment_due_at TIMESTAMPTZ;
-- Orders placed before this migration have no schedule: they get the default deadline for the
-- record, and stay pending until paid.
UPDATE orders SET payment_due_at = created_at + INTERVAL '15 minutes';
ALTER TABLE orders ALTER COLUMN payment_due_at SET NOT NULL;
ALTER TABLE orders
    ADD CONSTRAINT orders_status CHECK (status IN ('pending_payment', 'paid', 'cancelled'));

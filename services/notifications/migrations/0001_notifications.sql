-- Every notification this service delivered: one row per task, written in the transaction in
-- which the task-queue worker records the task as done (`task_executions`), so a delivery and
-- its record commit together, and a task redelivered by Kafka finds itself already done.
CREATE TABLE notifications (
    -- The task's id (`message_id` of the task message), also the webhook's Idempotency-Key.
    task_id      UUID        PRIMARY KEY,
    kind         TEXT        NOT NULL CHECK (kind IN (
                     'order_confirmation', 'order_cancelled', 'payment_reminder',
                     'export_ready', 'daily_digest')),
    -- The order or the export the notification is about; at most one is set (none for a
    -- daily digest).
    order_id     UUID,
    export_id    UUID,
    -- An e-mail address: personal data, kept as long as the delivery record.
    recipient    TEXT        NOT NULL,
    -- The attempt that delivered it: 1 when the provider took it at once, more after retries.
    attempts     INT         NOT NULL CHECK (attempts >= 1),
    delivered_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CHECK (order_id IS NULL OR export_id IS NULL)
);

-- GET /notifications?order_id=…
CREATE INDEX notifications_order_id ON notifications (order_id) WHERE order_id IS NOT NULL;
-- GET /notifications, newest first.
CREATE INDEX notifications_delivered_at ON notifications (delivered_at DESC, task_id);

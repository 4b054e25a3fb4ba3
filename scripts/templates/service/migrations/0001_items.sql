-- The items this service owns. Every change is announced on {{service}}.items.v1 through the
-- outbox, in the same transaction.
CREATE TABLE items (
    -- Chosen by the client (PUT /items/{item_id}): 1 to 64 of [A-Za-z0-9._-].
    item_id    TEXT        PRIMARY KEY,
    name       TEXT        NOT NULL,
    quantity   BIGINT      NOT NULL CHECK (quantity >= 0),
    -- A deleted item stays as a row, so that an item created again under the same id continues
    -- its revisions: consumers skip any event whose revision is not above the last one they saw.
    deleted    BOOLEAN     NOT NULL DEFAULT false,
    -- +1 with every change; the revision of the item's latest event.
    revision   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per SummarizeItems task run (the summarize-items schedule), written in the transaction
-- that marks the task done: a task redelivered by Kafka finds its row and adds none.
CREATE TABLE item_summaries (
    task_id       UUID        PRIMARY KEY,
    item_count    BIGINT      NOT NULL,
    summarized_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

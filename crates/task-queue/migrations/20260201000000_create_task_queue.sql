-- The task queue's tables: which tasks ran (for idempotency) and which failed for good.

-- One row per task that succeeded, written in the same transaction as the task's effect. A
-- failed run rolls back and leaves no row, so the next run of the task goes ahead; a duplicate
-- delivery finds the row and is acknowledged without running.
CREATE TABLE task_executions (
    task_id      UUID        PRIMARY KEY,
    -- The `message_type`, e.g. `SendOrderConfirmation`. Ids are unique across task types: a
    -- task whose id is recorded for another type is dead-lettered, not skipped.
    task_name    TEXT        NOT NULL,
    -- Runs it took, across blocking attempts and retry levels (1 = succeeded at once).
    attempts     INT         NOT NULL,
    -- Set just before the commit; never NULL in a committed row.
    completed_at TIMESTAMPTZ
);

-- For retention: `task_queue::purge_executions` deletes by completion time.
CREATE INDEX task_executions_completed_at_idx ON task_executions (completed_at);

-- The dead-letter topic of each queue, indexed by the worker's dead-letter consumer so that
-- dead letters can be listed, replayed and dropped without reading Kafka.
CREATE TABLE dead_letters (
    -- The queue's main topic: one table serves every queue of a service.
    queue              TEXT        NOT NULL,
    task_id            UUID        NOT NULL,
    -- The `message_type`; empty when the message had none.
    task_name          TEXT        NOT NULL,
    -- The Kafka key, kept so that a replay lands on the same partition as the original.
    key                TEXT,
    -- The payload as JSON, for reading and querying; NULL when it is not JSON.
    payload            JSONB,
    -- The payload exactly as it arrived; what a replay publishes. NULL when there was none.
    raw_payload        BYTEA,
    -- Every header of the dead letter, in order: [["name", "value"], ...].
    headers            JSONB       NOT NULL,
    -- Runs of the handler; 0 when it never ran (unknown task type, no task id).
    attempts           INT         NOT NULL,
    first_error        TEXT        NOT NULL,
    last_error         TEXT        NOT NULL,
    -- Where the message that failed for good was consumed (a retry topic after retries).
    original_topic     TEXT        NOT NULL,
    original_partition INT         NOT NULL,
    original_offset    BIGINT      NOT NULL,
    first_failed_at    TIMESTAMPTZ NOT NULL,
    dead_lettered_at   TIMESTAMPTZ NOT NULL,
    -- dead: listed, waiting for a decision; replayed: enqueued again; dropped: given up on.
    state              TEXT        NOT NULL DEFAULT 'dead'
                                   CHECK (state IN ('dead', 'replayed', 'dropped')),
    -- When it was replayed or dropped.
    state_changed_at   TIMESTAMPTZ,
    indexed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, task_id)
);

-- The listing: a queue's dead letters waiting for a decision, oldest first.
CREATE INDEX dead_letters_listed_idx ON dead_letters (queue, dead_lettered_at) WHERE state = 'dead';

-- The task scheduler: recurring schedules, and one row per time a task is due to fire.

-- A recurring schedule, by name. The scheduler keeps exactly one pending row of it in
-- `scheduled_tasks`: its next occurrence, inserted when the previous one fires.
CREATE TABLE recurring_schedules (
    name           TEXT        PRIMARY KEY,
    -- A cron expression (croner syntax; a leading seconds field is optional) ...
    cron           TEXT        NOT NULL,
    -- ... read in this IANA time zone, e.g. `Europe/Berlin`.
    timezone       TEXT        NOT NULL,
    -- The `TaskTemplate` every occurrence fires.
    task           JSONB       NOT NULL,
    misfire_policy TEXT        NOT NULL CHECK (misfire_policy IN ('fire_now', 'fire_once', 'skip')),
    overlap_policy TEXT        NOT NULL CHECK (overlap_policy IN ('allow', 'skip')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE scheduled_tasks (
    id         UUID        PRIMARY KEY,
    -- Scheduling the same key twice returns the first row: a retried request schedules once.
    -- Occurrences of a recurring schedule use `<name>@<RFC 3339 due time>`.
    dedup_key  TEXT        NOT NULL UNIQUE,
    -- The `TaskTemplate`: topic, task name, payload, ordering key.
    task       JSONB       NOT NULL,
    due_at     TIMESTAMPTZ NOT NULL,
    state      TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fired', 'cancelled')),
    -- The recurring schedule this row is an occurrence of; NULL for a one-off.
    recurring  TEXT        REFERENCES recurring_schedules (name) ON DELETE CASCADE,
    -- Firing transactions that failed on this row (it stays pending and is tried again).
    attempts   INT         NOT NULL DEFAULT 0,
    last_error TEXT,
    -- Set when the row fired: the id of the task it enqueued, and when (the database's clock).
    task_id    UUID,
    fired_at   TIMESTAMPTZ,
    -- Why a row was cancelled by the scheduler rather than by a caller, e.g. a skipped misfire.
    note       TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The firing loop's only questions, "which pending rows are due" and "when is the next one",
-- read this small index however many fired rows the table keeps.
CREATE INDEX scheduled_tasks_pending_due_idx ON scheduled_tasks (due_at) WHERE state = 'pending';

-- The previous fire of a recurring schedule (overlap policy), and its pending occurrence.
CREATE INDEX scheduled_tasks_recurring_idx ON scheduled_tasks (recurring, due_at) WHERE recurring IS NOT NULL;

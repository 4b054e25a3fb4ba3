-- The iterator: long-running jobs run as chains of chunks. Lives in the service's database, next
-- to the data the jobs write, so that a chunk's output and its cursor commit together.

CREATE TABLE jobs (
    job_id           UUID        PRIMARY KEY,
    -- The `Job::KIND` that runs it; a runner only handles the kinds registered with it.
    kind             TEXT        NOT NULL,
    params           JSONB       NOT NULL,
    state            TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    chunk_size       INT         NOT NULL CHECK (chunk_size > 0),
    -- The throttle, for the whole job (shared evenly by its shards); NULL: as fast as it goes.
    max_rows_per_sec INT         CHECK (max_rows_per_sec > 0),
    shards           INT         NOT NULL DEFAULT 1 CHECK (shards > 0),
    processed        BIGINT      NOT NULL DEFAULT 0,
    -- What `Job::total` estimated at start, for progress and ETA; NULL when it cannot tell.
    total_estimate   BIGINT,
    -- Failed attempts at the current chunk, and the last error. Reset by a chunk that succeeds.
    attempts         INT         NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX jobs_by_state ON jobs (state, created_at);

-- One row per shard (one for an unsharded job): where it stands. `next_step` and `cursor` move
-- together, in the transaction that writes the chunk's output.
CREATE TABLE job_shards (
    job_id          UUID        NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    shard           INT         NOT NULL,
    -- The position after the last processed item; NULL before the first chunk.
    cursor          JSONB,
    -- The step the shard waits for. A step message with another number is a redelivery or a
    -- leftover from before a pause, and is ignored.
    next_step       BIGINT      NOT NULL DEFAULT 0,
    processed       BIGINT      NOT NULL DEFAULT 0,
    done            BOOLEAN     NOT NULL DEFAULT false,
    -- Where the throttle's budget starts counting: the start, or the last resume.
    throttle_origin TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, shard)
);

-- Every processed step, recorded in the transaction of its output: the proof that its effect
-- happened once, and what the rate and the tests read.
CREATE TABLE job_steps (
    job_id       UUID        NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    shard        INT         NOT NULL,
    step         BIGINT      NOT NULL,
    rows         INT         NOT NULL,
    cursor       JSONB,
    -- The runner that processed it (`JobRunner::instance`), to see how replicas share work.
    processed_by TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, shard, step)
);

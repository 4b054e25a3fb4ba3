-- Exports of orders_view to CSV. Each export is an iterator job with the same id (the `jobs`
-- table of crates/iterator holds its state and progress); this table holds what is particular
-- to an export: its filter, who to tell, and how much of its file is committed.
CREATE TABLE exports (
    export_id     UUID        PRIMARY KEY,
    -- Orders with range_from <= created_at < range_to, and status = status_filter if set.
    range_from    TIMESTAMPTZ NOT NULL,
    range_to      TIMESTAMPTZ NOT NULL CHECK (range_to > range_from),
    status_filter TEXT,
    -- Who gets the SendExportReady notification.
    recipient     TEXT        NOT NULL,
    -- `api` or the name of the recurring schedule that started it.
    requested_by  TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The file of each shard of an export (one, unless the export was started with shards), and
-- the length that committed chunks wrote to it. A chunk truncates the file back to that length
-- before appending, so bytes from a chunk whose transaction did not commit vanish.
CREATE TABLE export_files (
    export_id UUID   NOT NULL REFERENCES exports (export_id) ON DELETE CASCADE,
    shard     INT    NOT NULL,
    bytes     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (export_id, shard)
);

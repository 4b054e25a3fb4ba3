-- The highest revision each projection applied per entity. Kept apart from the read-model
-- tables so that a delete can remove the row and still refuse an older event that arrives late.
CREATE TABLE projection_revisions (
    projection TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT false,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, entity_id)
);

-- Which consumer group a projection reads with; a rebuild moves to the next generation, which
-- starts from the beginning of the topic.
CREATE TABLE projections (
    projection TEXT PRIMARY KEY,
    generation INT NOT NULL DEFAULT 1
);

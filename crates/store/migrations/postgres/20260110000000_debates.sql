-- Debates: the full record is kept as JSON (so explanations can be recomputed from it exactly),
-- with the columns lists filter and sort on. Ids are unique per workspace: imported debates keep
-- the caller's id.
CREATE TABLE debates (
    workspace           TEXT NOT NULL,
    id                  TEXT NOT NULL,
    task                TEXT NOT NULL,
    status              TEXT NOT NULL,
    consensus_mode      TEXT NOT NULL,
    winner              TEXT,
    consensus_reached   BIGINT NOT NULL DEFAULT 0,
    confidence          DOUBLE PRECISION NOT NULL DEFAULT 0,
    consensus_strength  DOUBLE PRECISION NOT NULL DEFAULT 0,
    rounds_used         BIGINT NOT NULL DEFAULT 0,
    record              TEXT NOT NULL,
    -- 'run' (started through the API, run by the debates worker) or 'import'.
    origin              TEXT NOT NULL DEFAULT 'run',
    -- The queue job that runs it; a pending/running debate whose job is gone or dead is failed
    -- by the recovery sweep, so no debate hangs in 'running'.
    job_id              TEXT,
    -- Run facts the record has no field for: token usage per agent (JSON), agent calls made,
    -- why a run failed.
    usage               TEXT,
    calls               BIGINT,
    failure             TEXT,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    started_at          BIGINT,
    completed_at        BIGINT,
    PRIMARY KEY (workspace, id)
);
CREATE INDEX debates_by_created ON debates (workspace, created_at, id);
CREATE INDEX debates_by_status ON debates (workspace, status, created_at, id);
CREATE INDEX debates_unfinished ON debates (status) WHERE status IN ('pending', 'running');

-- The event feed reads a workspace's events in commit order. Ids and sequences are assigned
-- before commit, so concurrent transactions can commit out of id order; the feed therefore
-- orders by the writing transaction's id and only shows transactions older than every one still
-- in progress (see store::events::list).
ALTER TABLE events ADD COLUMN txid BIGINT NOT NULL
    DEFAULT CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT);
CREATE INDEX events_feed ON events (workspace, txid, id);
CREATE INDEX events_feed_type ON events (workspace, event_type, txid, id);

-- Knowledge Mound: searchable items, one per (workspace, source_type, source_key), so ingesting
-- the same source again updates the item instead of duplicating it.
CREATE TABLE knowledge_items (
    id           TEXT PRIMARY KEY,
    workspace    TEXT NOT NULL,
    source_type  TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    content      TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    confidence   DOUBLE PRECISION NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    -- English stemming and stop words; kept in step with the content by PostgreSQL itself.
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    UNIQUE (workspace, source_type, source_key)
);
CREATE INDEX knowledge_items_recent ON knowledge_items (workspace, created_at, id);
CREATE INDEX knowledge_items_tsv ON knowledge_items USING GIN (tsv);

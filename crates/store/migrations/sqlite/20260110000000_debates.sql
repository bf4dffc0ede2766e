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
    consensus_reached   INTEGER NOT NULL DEFAULT 0,
    confidence          REAL NOT NULL DEFAULT 0,
    consensus_strength  REAL NOT NULL DEFAULT 0,
    rounds_used         INTEGER NOT NULL DEFAULT 0,
    record              TEXT NOT NULL,
    -- 'run' (started through the API, run by the debates worker) or 'import'.
    origin              TEXT NOT NULL DEFAULT 'run',
    -- The queue job that runs it; a pending/running debate whose job is gone or dead is failed
    -- by the recovery sweep, so no debate hangs in 'running'.
    job_id              TEXT,
    -- Run facts the record has no field for: token usage per agent (JSON), agent calls made,
    -- why a run failed.
    usage               TEXT,
    calls               INTEGER,
    failure             TEXT,
    created_by          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    started_at          INTEGER,
    completed_at        INTEGER,
    PRIMARY KEY (workspace, id)
);
CREATE INDEX debates_by_created ON debates (workspace, created_at, id);
CREATE INDEX debates_by_status ON debates (workspace, status, created_at, id);
CREATE INDEX debates_unfinished ON debates (status) WHERE status IN ('pending', 'running');

-- The event feed reads a workspace's events in commit order. With SQLite's single writer the
-- rowid is assigned in commit order, and these indexes end in the rowid implicitly.
CREATE INDEX events_feed ON events (workspace);
CREATE INDEX events_feed_type ON events (workspace, event_type);

-- Knowledge Mound: searchable items, one per (workspace, source_type, source_key), so ingesting
-- the same source again updates the item instead of duplicating it.
CREATE TABLE knowledge_items (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    workspace    TEXT NOT NULL,
    source_type  TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    content      TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    confidence   REAL NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (workspace, source_type, source_key)
);
CREATE INDEX knowledge_items_recent ON knowledge_items (workspace, created_at, id);

-- Full-text index over the content (external content: the text is stored once, in
-- knowledge_items). Porter stemming so "limiters" finds "limiter".
CREATE VIRTUAL TABLE knowledge_fts USING fts5(
    content,
    content = 'knowledge_items',
    content_rowid = 'seq',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER knowledge_items_ai AFTER INSERT ON knowledge_items BEGIN
    INSERT INTO knowledge_fts (rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER knowledge_items_ad AFTER DELETE ON knowledge_items BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER knowledge_items_au AFTER UPDATE OF content ON knowledge_items
WHEN old.content IS NOT new.content BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO knowledge_fts (rowid, content) VALUES (new.seq, new.content);
END;

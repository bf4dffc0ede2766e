-- Debates: the full record is kept as JSON (so explanations can be recomputed from it exactly),
-- with the columns lists filter and sort on. Ids are unique per workspace: imported debates keep
-- the caller's id.
CREATE TABLE debates (
    workspace          TEXT NOT NULL,
    id                 TEXT NOT NULL,
    task               TEXT NOT NULL,
    status             TEXT NOT NULL,
    consensus_mode     TEXT NOT NULL,
    winner             TEXT,
    consensus_reached  INTEGER NOT NULL DEFAULT 0,
    confidence         REAL NOT NULL DEFAULT 0,
    record             TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (workspace, id)
);
CREATE INDEX debates_by_created ON debates (workspace, created_at, id);
CREATE INDEX debates_by_status ON debates (workspace, status, created_at, id);

-- The guide's six tables (marketplace, webhooks, batch explainability) and their companions.

CREATE TABLE marketplace_templates (
    id              TEXT PRIMARY KEY,
    workspace       TEXT NOT NULL,
    owner           TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL,
    visibility      TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    latest_version  TEXT NOT NULL,
    downloads       INTEGER NOT NULL DEFAULT 0,
    rating_sum      INTEGER NOT NULL DEFAULT 0,
    rating_count    INTEGER NOT NULL DEFAULT 0,
    unlisted        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX marketplace_templates_category ON marketplace_templates (category, id);
CREATE INDEX marketplace_templates_created ON marketplace_templates (created_at, id);

CREATE TABLE marketplace_template_versions (
    template_id    TEXT NOT NULL,
    version        TEXT NOT NULL,
    changelog      TEXT NOT NULL DEFAULT '',
    template_data  TEXT NOT NULL,
    checksum       TEXT NOT NULL,
    yanked         INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (template_id, version)
);

CREATE TABLE marketplace_reviews (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    rating       INTEGER NOT NULL,
    title        TEXT,
    content      TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (template_id, user_name)
);

CREATE TABLE webhook_registrations (
    id                   TEXT PRIMARY KEY,
    workspace            TEXT NOT NULL,
    url                  TEXT NOT NULL,
    secret               TEXT NOT NULL,
    previous_secret      TEXT,
    previous_secret_until INTEGER,
    event_types          TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    enabled              INTEGER NOT NULL DEFAULT 1,
    disabled_reason      TEXT,
    breaker              TEXT NOT NULL DEFAULT '{}',
    created_by           TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX webhook_registrations_workspace ON webhook_registrations (workspace, id);

CREATE TABLE webhook_delivery_receipts (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    trigger          TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_code      INTEGER,
    error_class      TEXT,
    error_message    TEXT,
    dialled_addr     TEXT,
    duration_ms      INTEGER,
    response_headers TEXT,
    response_body    TEXT,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER
);
CREATE INDEX webhook_delivery_receipts_webhook ON webhook_delivery_receipts (webhook_id, id);

-- Batch explainability (issue 5). A batch is one row plus one queue job; each debate's result
-- is a row keyed by (batch_id, position), inserted with ON CONFLICT DO NOTHING, so a worker that
-- resumes after a crash never writes a second result for a position. The counters are recomputed
-- from the result rows in the same transaction that inserts them.
CREATE TABLE batch_explainability_jobs (
    id               TEXT PRIMARY KEY,
    workspace        TEXT NOT NULL,
    status           TEXT NOT NULL,
    total            INTEGER NOT NULL,
    processed        INTEGER NOT NULL DEFAULT 0,
    succeeded        INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    not_found        INTEGER NOT NULL DEFAULT 0,
    debate_ids       TEXT NOT NULL,
    options          TEXT NOT NULL,
    idempotency_key  TEXT,
    runs             INTEGER NOT NULL DEFAULT 0,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX batch_explainability_jobs_workspace ON batch_explainability_jobs (workspace, created_at, id);
CREATE INDEX batch_explainability_jobs_status ON batch_explainability_jobs (status);

CREATE TABLE batch_explainability_results (
    batch_id            TEXT NOT NULL,
    position            INTEGER NOT NULL,
    debate_id           TEXT NOT NULL,
    status              TEXT NOT NULL,
    explanation         TEXT,
    error               TEXT,
    processing_time_ms  REAL NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 1,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (batch_id, position)
);
CREATE INDEX batch_explainability_results_status ON batch_explainability_results (batch_id, status, position);

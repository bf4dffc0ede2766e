-- The guide's six tables (marketplace, webhooks, batch explainability) and their companions.

-- Marketplace. A template's searchable texts (search_*) are its lowercase tokens joined by spaces
-- (computed by aragora-marketplace, identical on both databases); rating_score is the Bayesian
-- average in micro-stars; unlisted templates are kept but never served.
-- SQLite: `seq` is the rowid (so FTS5 hits join by rowid, one B-tree lookup) and the rowid of the
-- template's FTS5 rows; `id` is the public key.
CREATE TABLE marketplace_templates (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    workspace       TEXT NOT NULL,
    owner           TEXT NOT NULL,
    name            TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL,
    visibility      TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    latest_version  TEXT NOT NULL,
    downloads       INTEGER NOT NULL DEFAULT 0,
    rating_sum      INTEGER NOT NULL DEFAULT 0,
    rating_count    INTEGER NOT NULL DEFAULT 0,
    rating_score    INTEGER NOT NULL DEFAULT 3000000,
    unlisted        INTEGER NOT NULL DEFAULT 0,
    search_name     TEXT NOT NULL DEFAULT ' ',
    search_tags     TEXT NOT NULL DEFAULT ' ',
    search_desc     TEXT NOT NULL DEFAULT ' ',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- One index per sort, each ending in the id tiebreaker, over listed templates only.
CREATE INDEX marketplace_templates_downloads ON marketplace_templates (downloads DESC, id) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_rating ON marketplace_templates (rating_score DESC, id) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_created ON marketplace_templates (created_at DESC, id DESC) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_updated ON marketplace_templates (updated_at DESC, id DESC) WHERE unlisted = 0;
-- The same four orders within one category (the common filter).
CREATE INDEX marketplace_templates_cat_downloads ON marketplace_templates (category, downloads DESC, id) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_cat_rating ON marketplace_templates (category, rating_score DESC, id) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_cat_created ON marketplace_templates (category, created_at DESC, id DESC) WHERE unlisted = 0;
CREATE INDEX marketplace_templates_cat_updated ON marketplace_templates (category, updated_at DESC, id DESC) WHERE unlisted = 0;
-- Templates only some callers may see: counted per request (public ones come from
-- marketplace_category_counts).
CREATE INDEX marketplace_templates_nonpublic ON marketplace_templates (workspace, visibility, owner, category)
    WHERE unlisted = 0 AND visibility <> 'public';

CREATE TABLE marketplace_template_versions (
    template_id    TEXT NOT NULL,
    version        TEXT NOT NULL,
    changelog      TEXT NOT NULL DEFAULT '',
    template_data  TEXT NOT NULL,
    checksum       TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    downloads      INTEGER NOT NULL DEFAULT 0,
    yanked         INTEGER NOT NULL DEFAULT 0,
    published_by   TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    yanked_at      INTEGER,
    PRIMARY KEY (template_id, version)
);

-- One row per user and template: the user's rating, and their review when title/content are
-- set (reviewed_at). The rating of a review IS the user's rating, so nothing is counted twice.
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
    reviewed_at  INTEGER,
    UNIQUE (template_id, workspace, user_name)
);
CREATE INDEX marketplace_reviews_listed ON marketplace_reviews (template_id, reviewed_at DESC, id DESC)
    WHERE reviewed_at IS NOT NULL;

-- Webhooks. Secrets are stored as given (HMAC needs the key itself); rotated-out secrets stay
-- in `previous_secrets` (JSON [{"secret","until"}]) until their grace period ends.
CREATE TABLE webhook_registrations (
    id                TEXT PRIMARY KEY,
    workspace         TEXT NOT NULL,
    url               TEXT NOT NULL,
    secret            TEXT NOT NULL,
    previous_secrets  TEXT NOT NULL DEFAULT '[]',
    event_types       TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    enabled           INTEGER NOT NULL DEFAULT 1,
    disabled_reason   TEXT,
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX webhook_registrations_workspace ON webhook_registrations (workspace, id);

-- One row per delivery attempt. The attempt that is scheduled but not yet made is a `pending`
-- row (its job is in `jobs`); making it turns the row into `succeeded` or `failed` and, when a
-- retry follows, adds the next `pending` row. `delivery_id` is the `webhook-id` header, the same
-- on every attempt; `latest` marks the newest row of each delivery.
CREATE TABLE webhook_delivery_receipts (
    id                TEXT PRIMARY KEY,
    webhook_id        TEXT NOT NULL,
    workspace         TEXT NOT NULL,
    delivery_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    trigger           TEXT NOT NULL,
    status            TEXT NOT NULL,
    latest            INTEGER NOT NULL DEFAULT 1,
    status_code       INTEGER,
    error_class       TEXT,
    error_message     TEXT,
    dialled_addr      TEXT,
    duration_ms       INTEGER,
    response_headers  TEXT,
    response_body     TEXT,
    created_at        INTEGER NOT NULL,
    attempted_at      INTEGER,
    next_attempt_at   INTEGER
);
CREATE INDEX webhook_delivery_receipts_webhook ON webhook_delivery_receipts (webhook_id, id);
CREATE INDEX webhook_delivery_receipts_status ON webhook_delivery_receipts (webhook_id, status, id);
CREATE INDEX webhook_delivery_receipts_delivery ON webhook_delivery_receipts (delivery_id);

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

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
    downloads       BIGINT NOT NULL DEFAULT 0,
    rating_sum      BIGINT NOT NULL DEFAULT 0,
    rating_count    BIGINT NOT NULL DEFAULT 0,
    unlisted        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX marketplace_templates_category ON marketplace_templates (category, id);
CREATE INDEX marketplace_templates_created ON marketplace_templates (created_at, id);

CREATE TABLE marketplace_template_versions (
    template_id    TEXT NOT NULL,
    version        TEXT NOT NULL,
    changelog      TEXT NOT NULL DEFAULT '',
    template_data  TEXT NOT NULL,
    checksum       TEXT NOT NULL,
    yanked         BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);

CREATE TABLE marketplace_reviews (
    id           TEXT PRIMARY KEY,
    template_id  TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    rating       BIGINT NOT NULL,
    title        TEXT,
    content      TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (template_id, user_name)
);

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
    enabled           BIGINT NOT NULL DEFAULT 1,
    disabled_reason   TEXT,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
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
    attempt           BIGINT NOT NULL,
    trigger           TEXT NOT NULL,
    status            TEXT NOT NULL,
    latest            BIGINT NOT NULL DEFAULT 1,
    status_code       BIGINT,
    error_class       TEXT,
    error_message     TEXT,
    dialled_addr      TEXT,
    duration_ms       BIGINT,
    response_headers  TEXT,
    response_body     TEXT,
    created_at        BIGINT NOT NULL,
    attempted_at      BIGINT,
    next_attempt_at   BIGINT
);
CREATE INDEX webhook_delivery_receipts_webhook ON webhook_delivery_receipts (webhook_id, id);
CREATE INDEX webhook_delivery_receipts_status ON webhook_delivery_receipts (webhook_id, status, id);
CREATE INDEX webhook_delivery_receipts_delivery ON webhook_delivery_receipts (delivery_id);

CREATE TABLE batch_explainability_jobs (
    id               TEXT PRIMARY KEY,
    workspace        TEXT NOT NULL,
    status           TEXT NOT NULL,
    total            BIGINT NOT NULL,
    processed        BIGINT NOT NULL DEFAULT 0,
    succeeded        BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    debate_ids       TEXT NOT NULL,
    options          TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE batch_explainability_results (
    batch_id            TEXT NOT NULL,
    position            BIGINT NOT NULL,
    debate_id           TEXT NOT NULL,
    status              TEXT NOT NULL,
    explanation         TEXT,
    error               TEXT,
    processing_time_ms  DOUBLE PRECISION NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (batch_id, position)
);

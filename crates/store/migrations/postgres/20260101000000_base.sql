-- Base tables: workspaces, API tokens, the durable job queue, workers, idempotency keys, rate limits.
-- Times are UTC milliseconds since the Unix epoch.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    token_prefix  TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    role          TEXT,
    permissions   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    queue         TEXT NOT NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    run_at        BIGINT NOT NULL,
    lease_until   BIGINT,
    worker_id     TEXT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (queue, run_at, id) WHERE status = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_by_status ON jobs (queue, status);

CREATE TABLE workers (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    node            TEXT NOT NULL,
    state           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    last_heartbeat  BIGINT NOT NULL,
    in_flight       BIGINT NOT NULL DEFAULT 0,
    processed       BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE idempotency_keys (
    workspace     TEXT NOT NULL,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   BIGINT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace, scope, key)
);

CREATE TABLE rate_limits (
    bucket      TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- The event log and outbox: every event the system emits (and every custom event published
-- through the API) is a row written in the same transaction as the change that caused it.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    workspace   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_by_workspace ON events (workspace, id);
CREATE INDEX events_by_type ON events (workspace, event_type, id);

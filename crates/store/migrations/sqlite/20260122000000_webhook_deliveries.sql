-- Per-endpoint circuit breakers, shared by every worker on every node. `state` is the JSON of
-- aragora_webhooks::BreakerState; every change is a compare-and-swap on `version`.
CREATE TABLE webhook_breakers (
    webhook_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

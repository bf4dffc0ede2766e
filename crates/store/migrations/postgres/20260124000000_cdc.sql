-- CDC connectors run by the server: their settings, checkpoints (written only by the lease
-- holder, fenced by its token), leases (exactly one node runs each connector) and a ring of the
-- most recent acknowledged events per connector.

CREATE TABLE connectors (
    id             TEXT PRIMARY KEY,
    workspace      TEXT NOT NULL,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    config         TEXT NOT NULL,
    credentials    TEXT NOT NULL,
    handlers       TEXT NOT NULL,
    -- running | stopped | deleting (source objects are being removed; then the row goes)
    desired_state  TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX connectors_name ON connectors (workspace, name) WHERE desired_state <> 'deleting';
CREATE INDEX connectors_by_workspace ON connectors (workspace, id);

CREATE TABLE connector_checkpoints (
    connector_id     TEXT PRIMARY KEY,
    resume_token     TEXT NOT NULL,
    sequence_number  BIGINT NOT NULL,
    snapshot_done    BIGINT NOT NULL,
    fencing_token    BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- The row outlives releases so fencing tokens only ever grow.
CREATE TABLE connector_leases (
    connector_id   TEXT PRIMARY KEY,
    holder         TEXT NOT NULL,
    fencing_token  BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    acquired_at    BIGINT NOT NULL,
    -- health of the running connector as its holder last reported it (JSON)
    status         TEXT NOT NULL DEFAULT '{}',
    status_at      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE connector_events (
    connector_id     TEXT NOT NULL,
    sequence_number  BIGINT NOT NULL,
    event            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (connector_id, sequence_number)
);

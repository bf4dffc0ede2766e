-- Stored explanations (issue 5): the latest JSON explanation of each decision, written by
-- `GET /api/v1/debates/{id}/explanation` and by the batch worker, read by
-- `GET /api/v1/explanations/{decision_id}`. decision_id is derived from the debate id, so it is
-- unique only within a workspace.
CREATE TABLE explanations (
    workspace          TEXT NOT NULL,
    decision_id        TEXT NOT NULL,
    debate_id          TEXT NOT NULL,
    options            TEXT NOT NULL,
    algorithm_version  TEXT NOT NULL,
    explanation        TEXT NOT NULL,
    source             TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (workspace, decision_id)
);

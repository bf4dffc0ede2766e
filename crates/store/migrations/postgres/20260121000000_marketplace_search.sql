-- Marketplace search, tags, download de-duplication and public counts (PostgreSQL).

CREATE TABLE marketplace_template_tags (
    template_id  TEXT NOT NULL,
    tag          TEXT NOT NULL,
    PRIMARY KEY (template_id, tag)
);
CREATE INDEX marketplace_template_tags_by_tag ON marketplace_template_tags (tag, template_id);

CREATE TABLE marketplace_downloads (
    template_id  TEXT NOT NULL,
    version      TEXT NOT NULL,
    user_key     TEXT NOT NULL,
    day          BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (template_id, version, user_key, day)
);

CREATE TABLE marketplace_category_counts (
    category          TEXT PRIMARY KEY,
    public_templates  BIGINT NOT NULL DEFAULT 0
);

-- Field weights live in the vector: A = name, B = tags, C = description. The texts are already
-- tokenised by aragora-marketplace, so the 'simple' configuration (no stemming) indexes exactly
-- the tokens SQLite's FTS5 indexes.
ALTER TABLE marketplace_templates ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', search_name), 'A') ||
    setweight(to_tsvector('simple', search_tags), 'B') ||
    setweight(to_tsvector('simple', search_desc), 'C')
) STORED;
CREATE INDEX marketplace_templates_search ON marketplace_templates USING gin (search_vector)
    WHERE unlisted = 0;

-- pg_trgm accelerates the name-substring fallback. It ships with PostgreSQL's contrib package;
-- where it is missing (or the role may not create it) the fallback still works by scanning, and
-- this migration says so instead of failing.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_trgm is unavailable (%): name-substring search will scan instead of using a trigram index', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX marketplace_templates_name_trgm ON marketplace_templates '
             || 'USING gin (name_key gin_trgm_ops) WHERE unlisted = 0';
    END IF;
END
$$;

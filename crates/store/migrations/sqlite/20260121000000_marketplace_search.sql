-- Marketplace search, tags, download de-duplication and public counts (SQLite).

-- Tags, one row each, for the `tags=` filter (the template row keeps them as JSON for display).
CREATE TABLE marketplace_template_tags (
    template_id  TEXT NOT NULL,
    tag          TEXT NOT NULL,
    PRIMARY KEY (template_id, tag)
);
CREATE INDEX marketplace_template_tags_by_tag ON marketplace_template_tags (tag, template_id);

-- A download counts once per user, version and UTC day.
CREATE TABLE marketplace_downloads (
    template_id  TEXT NOT NULL,
    version      TEXT NOT NULL,
    user_key     TEXT NOT NULL,
    day          INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (template_id, version, user_key, day)
);

-- Listed public templates per category, maintained in the same transaction as every change, so
-- list totals and category counts need not count 100k rows per request.
CREATE TABLE marketplace_category_counts (
    category          TEXT PRIMARY KEY,
    public_templates  INTEGER NOT NULL DEFAULT 0
);

-- Full-text index over the tokenised name, tags and description (rowid = marketplace_templates.seq).
-- Contentless: the texts live in marketplace_templates.search_*.
CREATE VIRTUAL TABLE marketplace_templates_fts USING fts5(
    name, tags, description,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

-- Trigram index over name_key for the name-substring fallback (rowid = seq).
CREATE VIRTUAL TABLE marketplace_templates_trgm USING fts5(name_key, tokenize = 'trigram');

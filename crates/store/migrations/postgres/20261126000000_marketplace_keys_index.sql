-- Intentionally empty on PostgreSQL (see the SQLite migration of the same version): its planner
-- already resolves tag-filtered pages from the tag index and the primary key. Kept so both
-- dialects share one version list.
SELECT 1;

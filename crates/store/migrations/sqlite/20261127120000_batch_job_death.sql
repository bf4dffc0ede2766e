-- A batch whose queue job dies (its attempts used up, or a permanent failure) ends instead of
-- staying `processing` forever: `error` says why it stopped before every debate id was handled,
-- and `job_id` names the batch's current queue job (the submission's, or the one a graceful
-- shutdown handed the rest of the batch to), so a sweep can find batches whose job is dead.
ALTER TABLE batch_explainability_jobs ADD COLUMN error TEXT;
ALTER TABLE batch_explainability_jobs ADD COLUMN job_id TEXT;

-- Unfinished batches submitted before this migration: their newest queue job (a live one
-- first). Batches already stuck behind a dead job are then ended by the next sweep.
UPDATE batch_explainability_jobs SET job_id = (
    SELECT j.id FROM jobs j
    WHERE j.queue = 'explainability_batch'
      AND j.payload LIKE ('%"' || batch_explainability_jobs.id || '"%')
    ORDER BY CASE WHEN j.status IN ('ready', 'running') THEN 0 ELSE 1 END, j.created_at DESC, j.id DESC
    LIMIT 1)
WHERE status IN ('pending', 'processing');

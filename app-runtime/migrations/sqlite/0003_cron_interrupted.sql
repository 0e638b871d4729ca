-- A cron tick cut off by a shutdown (or left running by an instance that died) is `interrupted`:
-- the leader claims it again and runs it, once (the row stays the tick's one claim). SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt with the new state allowed.
CREATE TABLE kumiko_cron_runs_new (
    job              TEXT NOT NULL,
    scheduled_for_ms BIGINT NOT NULL,
    instance_id      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'interrupted')),
    started_at_ms    BIGINT NOT NULL,
    finished_at_ms   BIGINT,
    error            TEXT,
    PRIMARY KEY (job, scheduled_for_ms)
);
INSERT INTO kumiko_cron_runs_new
    SELECT job, scheduled_for_ms, instance_id, state, started_at_ms, finished_at_ms, error
    FROM kumiko_cron_runs;
DROP TABLE kumiko_cron_runs;
ALTER TABLE kumiko_cron_runs_new RENAME TO kumiko_cron_runs;
CREATE INDEX kumiko_cron_runs_interrupted ON kumiko_cron_runs (job, scheduled_for_ms)
    WHERE state = 'interrupted';

-- The jobs worker: cron runs keyed by (job, scheduled_for) and the queue of manual jobs.

-- A cron tick runs at most once across the cluster: the primary key is the claim.
CREATE TABLE kumiko_cron_runs (
    job              TEXT NOT NULL,
    scheduled_for_ms BIGINT NOT NULL,
    instance_id      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    started_at_ms    BIGINT NOT NULL,
    finished_at_ms   BIGINT,
    error            TEXT,
    PRIMARY KEY (job, scheduled_for_ms)
);

CREATE TABLE kumiko_jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    run_after_ms   BIGINT NOT NULL,
    locked_by      TEXT,
    locked_at_ms   BIGINT,
    last_error     TEXT,
    created_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT
);
CREATE INDEX kumiko_jobs_claimable ON kumiko_jobs (state, run_after_ms, id);

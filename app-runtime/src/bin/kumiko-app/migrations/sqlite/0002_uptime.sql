-- The uptime roll-up: status samples, the rolled-up uptime and the audit trail of its runs.
-- Times are milliseconds since the Unix epoch (INTEGER), the same in the Postgres set.

-- One sample of a component's status per roll-up tick.
CREATE TABLE component_samples (
    component_id  BIGINT NOT NULL REFERENCES components (id) ON DELETE CASCADE,
    sampled_at_ms BIGINT NOT NULL,
    status        TEXT NOT NULL,
    PRIMARY KEY (component_id, sampled_at_ms)
);

-- The rolled-up uptime of each component over the trailing window.
CREATE TABLE component_uptime (
    component_id   BIGINT PRIMARY KEY REFERENCES components (id) ON DELETE CASCADE,
    window_ms      BIGINT NOT NULL,
    samples_total  BIGINT NOT NULL,
    samples_up     BIGINT NOT NULL,
    computed_at_ms BIGINT NOT NULL
);

-- Every execution of the roll-up, one row per run: the audit trail that shows a tick ran once.
CREATE TABLE uptime_rollups (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    scheduled_for_ms BIGINT NOT NULL,
    instance_id      TEXT NOT NULL,
    components       BIGINT NOT NULL,
    finished_at_ms   BIGINT NOT NULL
);

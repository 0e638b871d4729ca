-- The status page: components, incidents, status samples and the uptime roll-up.
-- Times are milliseconds since the Unix epoch (BIGINT), the same in the SQLite set.

CREATE TABLE components (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'operational'
                  CHECK (status IN ('operational', 'degraded', 'partial_outage', 'major_outage')),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE incidents (
    id             BIGSERIAL PRIMARY KEY,
    component_id   BIGINT REFERENCES components (id) ON DELETE SET NULL,
    title          TEXT NOT NULL,
    message        TEXT NOT NULL DEFAULT '',
    impact         TEXT NOT NULL CHECK (impact IN ('minor', 'major', 'critical')),
    state          TEXT NOT NULL DEFAULT 'investigating'
                   CHECK (state IN ('investigating', 'identified', 'monitoring', 'resolved')),
    started_at_ms  BIGINT NOT NULL,
    resolved_at_ms BIGINT
);
CREATE INDEX incidents_open ON incidents (resolved_at_ms, started_at_ms);

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
    id               BIGSERIAL PRIMARY KEY,
    scheduled_for_ms BIGINT NOT NULL,
    instance_id      TEXT NOT NULL,
    components       BIGINT NOT NULL,
    finished_at_ms   BIGINT NOT NULL
);

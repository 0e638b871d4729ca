-- The status page: components and incidents.
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

-- The jobs workers that are alive: each beats here while its queue loop runs. Work left
-- `running` by an instance that stopped beating is recovered at the next worker's boot.
CREATE TABLE kumiko_workers (
    instance_id  TEXT PRIMARY KEY,
    last_seen_ms BIGINT NOT NULL
);

-- The minimal example's one table: greetings written by its queued job, ticks by its cron job.
CREATE TABLE greetings (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    written_by TEXT NOT NULL
);

-- The minimal example's one table: greetings written by its queued job, ticks by its cron job.
CREATE TABLE greetings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    written_by TEXT NOT NULL
);

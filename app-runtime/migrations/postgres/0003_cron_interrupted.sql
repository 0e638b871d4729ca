-- A cron tick cut off by a shutdown (or left running by an instance that died) is `interrupted`:
-- the leader claims it again and runs it, once (the row stays the tick's one claim).
ALTER TABLE kumiko_cron_runs DROP CONSTRAINT kumiko_cron_runs_state_check;
ALTER TABLE kumiko_cron_runs ADD CONSTRAINT kumiko_cron_runs_state_check
    CHECK (state IN ('running', 'succeeded', 'failed', 'interrupted'));
CREATE INDEX kumiko_cron_runs_interrupted ON kumiko_cron_runs (job, scheduled_for_ms)
    WHERE state = 'interrupted';

-- The second release (`kumiko-app-v2`): a component's incidents, newest first, without a scan.
-- Additive, so the first release keeps running against a database that has it.

CREATE INDEX incidents_by_component ON incidents (component_id, started_at_ms DESC);

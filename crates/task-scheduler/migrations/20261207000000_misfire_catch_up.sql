-- Misfire policy `catch_up`: after a downtime, each missed occurrence fires once (the latest
-- `catch_up_limit` of them), in due order, so that work about a period (a nightly export of
-- "the day the schedule was due for") is done for every missed period.
ALTER TABLE recurring_schedules
    DROP CONSTRAINT recurring_schedules_misfire_policy_check,
    ADD CONSTRAINT recurring_schedules_misfire_policy_check
        CHECK (misfire_policy IN ('fire_now', 'fire_once', 'skip', 'catch_up')),
    ADD COLUMN catch_up_limit INT CHECK (catch_up_limit > 0),
    ADD CONSTRAINT recurring_schedules_catch_up_limit_set
        CHECK ((misfire_policy = 'catch_up') = (catch_up_limit IS NOT NULL));

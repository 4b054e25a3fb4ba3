-- The Idempotency-Keys moved to the shared `idempotency` crate, whose migration creates its own
-- `idempotency_keys` table (with a scope per route) right after this service's migrations.
-- Keys remembered in the old table are forgotten: at worst a retry within a day of the upgrade
-- places a second order, which is why an upgrade like this belongs in a quiet hour.
DROP TABLE idempotency_keys;

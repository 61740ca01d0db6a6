-- Undo V1: remove the members table and the shared updated_at trigger function.
-- Runs last of all downs, so no later table still uses set_updated_at().

DROP TABLE members;  -- also drops its indexes and the members_set_updated_at trigger
DROP FUNCTION set_updated_at();

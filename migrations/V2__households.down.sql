-- Undo V2: drop the directory view, detach members from households, drop households.

DROP VIEW household_directory;
-- dropping the columns also drops members_household_id_idx and the FK; data is lost, by design
ALTER TABLE members
    DROP COLUMN household_role,
    DROP COLUMN household_id;
DROP TABLE households;  -- takes households_set_updated_at with it

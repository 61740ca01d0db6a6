-- Undo V3: drop the member-count function, then memberships, then the groups themselves.

DROP FUNCTION group_member_count(bigint);
DROP TABLE group_memberships;
DROP TABLE small_groups;  -- comment and trigger go with the table

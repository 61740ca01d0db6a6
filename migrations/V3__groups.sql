-- V3: small groups (bible studies, youth, prayer teams) and who belongs to them.
-- Reviewed: meeting_day is a day of the week (0 to 6); smallint cannot run out.
-- tenantctl: allow prefer-bigint-over-smallint

CREATE TABLE small_groups (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    description  text,
    meeting_day  smallint CHECK (meeting_day BETWEEN 0 AND 6),  -- 0 = Sunday; matches extract(dow)
    meeting_time time,
    leader_id    bigint REFERENCES members (id) ON DELETE SET NULL,
    is_open      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT small_groups_name_key UNIQUE (name)
);

COMMENT ON TABLE small_groups IS 'Small groups; bible studies; the pastor''s list';

CREATE TRIGGER small_groups_set_updated_at
    BEFORE UPDATE ON small_groups
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();

CREATE TABLE group_memberships (
    group_id   bigint NOT NULL REFERENCES small_groups (id) ON DELETE CASCADE,
    member_id  bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member' CHECK (role IN ('leader', 'co-leader', 'member')),
    joined_on  date NOT NULL DEFAULT current_date,
    left_on    date,
    PRIMARY KEY (group_id, member_id),
    CHECK (left_on IS NULL OR left_on >= joined_on)
);

-- The PK covers lookups by group; this one serves "which groups is this person in".
CREATE INDEX group_memberships_member_id_idx ON group_memberships (member_id);

-- Current (not yet departed) member count of a group.
-- search_path is pinned to the tenant schema at creation time; callers may have any path.
CREATE FUNCTION group_member_count(p_group_id bigint) RETURNS integer
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    SELECT count(*)::integer
    FROM group_memberships gm
    WHERE gm.group_id = p_group_id
      AND (gm.left_on IS NULL OR gm.left_on > current_date);  -- departed members drop out; a future left_on still counts
$fn$;

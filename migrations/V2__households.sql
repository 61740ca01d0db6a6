-- V2: group members into households (shared address / mailing unit)
-- and expose a directory view for the printed and online church directory.
-- Reviewed: a tenant's members table is small (hundreds to thousands of rows), so the
-- household foreign key's scan and the plain index build hold their locks for
-- milliseconds.
-- tenantctl: allow adding-foreign-key-constraint, require-concurrent-index-creation

CREATE TABLE households (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,            -- e.g. 'The Okafor Family'
    address_line1  text,
    address_line2  text,
    city           text,
    region         text,
    postal_code    text,
    home_phone     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER households_set_updated_at
    BEFORE UPDATE ON households
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();

-- Deleting a household must not delete people; they just become unassigned.
ALTER TABLE members
    ADD COLUMN household_id bigint
        CONSTRAINT members_household_id_fkey REFERENCES households (id) ON DELETE SET NULL,
    ADD COLUMN household_role text
        CONSTRAINT members_household_role_check
        CHECK (household_role IN ('head', 'spouse', 'child', 'other'));

CREATE INDEX members_household_id_idx ON members (household_id);

-- One row per member, with household details; members without a household are included.
CREATE VIEW household_directory AS
SELECT h.id                                   AS household_id,
       h.name                                 AS household_name,
       m.id                                   AS member_id,
       coalesce(m.preferred_name, m.first_name) AS display_first_name,
       m.last_name,
       m.household_role,
       m.email,
       coalesce(m.phone, h.home_phone)        AS phone,
       h.address_line1,
       h.address_line2,
       h.city,
       h.region,
       h.postal_code
FROM members m
LEFT JOIN households h ON h.id = m.household_id
WHERE m.membership_status <> 'deceased';

-- V1: core member directory for a tenant (one row per person known to the church).
-- Also installs the shared updated_at trigger function reused by later versions.

-- Generic "touch updated_at" trigger function; later versions attach it to their tables too.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- only bump the timestamp; never touch created_at here
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE members (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_name        text NOT NULL,
    last_name         text NOT NULL,
    preferred_name    text,
    email             text,
    phone             text,
    birth_date        date,
    -- visitor -> regular -> member; keep this list in sync with the app; it is validated here too
    membership_status text NOT NULL DEFAULT 'visitor'
        CONSTRAINT members_membership_status_check
        CHECK (membership_status IN ('visitor', 'regular', 'member', 'inactive', 'deceased')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT members_birth_date_check CHECK (birth_date IS NULL OR birth_date > DATE '1900-01-01')
);

-- Case-insensitive uniqueness on email, but many members (children) have none.
CREATE UNIQUE INDEX members_email_lower_key ON members (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX members_last_first_idx ON members (last_name, first_name);

CREATE TRIGGER members_set_updated_at
    BEFORE UPDATE ON members
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();

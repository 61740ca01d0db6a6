-- V4: services/classes/outreach events, per-member check-in attendance,
-- and a weekly attendance rollup for the dashboard.
-- Reviewed: the materialized view weekly_attendance is created in this same
-- transaction (squawk cannot tell): nothing else can use it while its index is built.
-- tenantctl: allow require-concurrent-index-creation

-- Some early tenants had event_kind created by hand before migrations existed;
-- only create it if this tenant's schema does not have it yet.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_type t
        JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'event_kind'
          AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE event_kind AS ENUM ('worship', 'class', 'small_group', 'outreach', 'meeting', 'other');
    END IF;
END
$$;

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text NOT NULL,
    kind        event_kind NOT NULL DEFAULT 'worship',
    group_id    bigint REFERENCES small_groups (id) ON DELETE SET NULL,
    location    text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_time_range_check CHECK (ends_at IS NULL OR ends_at > starts_at)
);

CREATE INDEX events_starts_at_idx ON events (starts_at);

CREATE TRIGGER events_set_updated_at
    BEFORE UPDATE ON events
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();

CREATE TABLE attendance (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    member_id      bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    checked_in_at  timestamptz NOT NULL DEFAULT now(),
    checked_in_by  text,  -- kiosk id or volunteer name; free text on purpose
    -- a person is counted once per event; re-scans at the kiosk hit this constraint
    CONSTRAINT attendance_event_member_key UNIQUE (event_id, member_id)
);

CREATE INDEX attendance_member_id_idx ON attendance (member_id);

-- Weekly rollup; refreshed by the app after check-in closes.
-- Weeks are computed in the session time zone; set it per tenant before refreshing.
CREATE MATERIALIZED VIEW weekly_attendance AS
SELECT date_trunc('week', e.starts_at)::date AS week_start,
       e.kind                                AS kind,
       count(DISTINCT e.id)                  AS event_count,
       count(a.id)                           AS check_ins,
       count(DISTINCT a.member_id)           AS distinct_people
FROM events e
LEFT JOIN attendance a ON a.event_id = e.id
GROUP BY 1, 2
WITH DATA;

-- unique, so the app can use REFRESH MATERIALIZED VIEW CONCURRENTLY later
CREATE UNIQUE INDEX weekly_attendance_week_kind_key ON weekly_attendance (week_start, kind);

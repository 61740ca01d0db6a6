-- Undo V4: drop the rollup, attendance, events, and the event_kind enum.

DROP MATERIALIZED VIEW weekly_attendance;  -- its unique index goes with it
DROP TABLE attendance;
DROP TABLE events;
-- IF EXISTS: V4 only created the type when it was missing; drop it either way; nothing else uses it
DROP TYPE IF EXISTS event_kind;

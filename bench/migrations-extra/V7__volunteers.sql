-- Volunteer rotas: who serves where and when.
CREATE TABLE volunteer_roles (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text
);

CREATE TABLE volunteer_shifts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role_id    bigint NOT NULL REFERENCES volunteer_roles (id) ON DELETE CASCADE,
    member_id  bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    event_id   bigint REFERENCES events (id) ON DELETE SET NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX volunteer_shifts_member_idx ON volunteer_shifts (member_id, starts_at);

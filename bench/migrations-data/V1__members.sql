-- The tenant-data benchmark's schema: a congregation's members ...
CREATE TABLE members (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    notes text
);
CREATE UNIQUE INDEX members_email_key ON members (lower(email));

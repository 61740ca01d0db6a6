-- ... and their donations, most of the rows.
CREATE TABLE donations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id bigint NOT NULL REFERENCES members (id),
    amount numeric(10, 2) NOT NULL CHECK (amount > 0),
    at timestamptz NOT NULL,
    memo text
);
CREATE INDEX donations_member_id_idx ON donations (member_id);
CREATE INDEX donations_at_idx ON donations (at);

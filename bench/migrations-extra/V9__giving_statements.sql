-- Yearly giving statements per member, computed by a function.
CREATE TABLE giving_statements (
    member_id  bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    year       integer NOT NULL,
    total      numeric(14,2) NOT NULL DEFAULT 0,
    issued_at  timestamptz,
    PRIMARY KEY (member_id, year)
);

CREATE FUNCTION giving_total(p_member bigint, p_year integer) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(amount), 0)
    FROM donations
    WHERE member_id = p_member
      AND refunded_at IS NULL
      AND extract(year FROM received_on) = p_year;
$$;

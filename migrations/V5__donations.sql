-- V5: giving. Funds (general, missions, building) and individual donations,
-- with a trigger-maintained running total per fund.

CREATE TABLE funds (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CONSTRAINT funds_name_key UNIQUE,
    description     text,
    is_active       boolean NOT NULL DEFAULT true,
    -- maintained by donations_maintain_fund_total(); do not write from the app
    total_received  numeric(14,2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER funds_set_updated_at
    BEFORE UPDATE ON funds
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();

CREATE TABLE donations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fund_id       bigint NOT NULL REFERENCES funds (id) ON DELETE RESTRICT,
    member_id     bigint REFERENCES members (id) ON DELETE SET NULL,  -- NULL = anonymous / loose offering
    amount        numeric(12,2) NOT NULL CONSTRAINT donations_amount_check CHECK (amount > 0),
    method        text NOT NULL DEFAULT 'card'
        CHECK (method IN ('cash', 'check', 'card', 'ach', 'other')),
    received_on   date NOT NULL DEFAULT current_date,
    refunded_at   timestamptz,
    memo          text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Giving statements only look at non-refunded gifts; keep the index small.
CREATE INDEX donations_member_received_active_idx
    ON donations (member_id, received_on)
    WHERE refunded_at IS NULL;
CREATE INDEX donations_fund_id_idx ON donations (fund_id);

-- Keeps funds.total_received equal to the sum of non-refunded donations.
-- Handles insert, delete, amount/fund changes and refunds (refunded rows count as 0).
CREATE FUNCTION donations_maintain_fund_total() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.refunded_at IS NULL THEN
        UPDATE funds SET total_received = total_received - OLD.amount WHERE id = OLD.fund_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.refunded_at IS NULL THEN
        UPDATE funds SET total_received = total_received + NEW.amount WHERE id = NEW.fund_id;
    END IF;
    RETURN NULL;  -- AFTER trigger; return value ignored
END;
$$;

CREATE TRIGGER donations_maintain_fund_total
    AFTER INSERT OR DELETE OR UPDATE OF amount, fund_id, refunded_at ON donations
    FOR EACH ROW
    EXECUTE FUNCTION donations_maintain_fund_total();

-- Two things a tenant's row in other tables may now say.
--
-- The run ledger records refusals: an operation refused before it changed anything
-- (drift, a missing down script, a target on the other side of the tenant's revision)
-- is a 'refused' entry with its reason, and the tenant's status is left as it was.
-- Runs with search_path set to the registry schema.
DO $$
DECLARE
    c text;
BEGIN
    FOR c IN
        SELECT conname FROM pg_catalog.pg_constraint
        WHERE conrelid = 'tenant_events'::regclass AND contype = 'c'
          AND pg_catalog.pg_get_constraintdef(oid) LIKE '%status%'
    LOOP
        EXECUTE format('ALTER TABLE tenant_events DROP CONSTRAINT %I', c);
    END LOOP;
END $$;

ALTER TABLE tenant_events
    ADD CONSTRAINT tenant_events_status_check CHECK (status IN ('ok', 'failed', 'refused'));

-- A move that did not switch the registry can be claimed for undoing: phase 'undoing'.
-- The switch applies only to a move still 'copying' and locks the journal row first, so
-- once an undo has claimed a move, no registry switch still on its way can apply, and
-- the old copy is never brought back after the registry has named the new one.
DO $$
DECLARE
    c text;
BEGIN
    FOR c IN
        SELECT conname FROM pg_catalog.pg_constraint
        WHERE conrelid = 'tenant_moves'::regclass AND contype = 'c'
          AND pg_catalog.pg_get_constraintdef(oid) LIKE '%phase%'
    LOOP
        EXECUTE format('ALTER TABLE tenant_moves DROP CONSTRAINT %I', c);
    END LOOP;
END $$;

ALTER TABLE tenant_moves
    ADD CONSTRAINT tenant_moves_phase_check CHECK (phase IN ('copying', 'switched', 'undoing'));

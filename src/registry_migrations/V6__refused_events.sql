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

-- The run ledger: one row for every change tenantctl makes to a tenant (or tries to).
-- Runs with search_path set to the registry schema.
CREATE TABLE tenant_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        uuid NOT NULL,
    -- No foreign key: the ledger outlives a dropped tenant.
    tenant_id     bigint NOT NULL,
    domain        text NOT NULL,
    schema_name   text NOT NULL,
    action        text NOT NULL,
    from_revision integer,
    to_revision   integer,
    status        text NOT NULL CHECK (status IN ('ok', 'failed')),
    error         text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    db_user       text NOT NULL DEFAULT current_user,
    client_host   text,
    client_addr   text DEFAULT inet_client_addr()::text
);

CREATE INDEX tenant_events_tenant_idx ON tenant_events (tenant_id, id);
CREATE INDEX tenant_events_run_idx ON tenant_events (run_id);

COMMENT ON TABLE tenant_events IS 'tenantctl run ledger: who changed which tenant, from which revision to which, and how it ended';

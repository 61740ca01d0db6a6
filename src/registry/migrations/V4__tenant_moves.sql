-- A move of a tenant to another server that has started and not finished: written
-- before anything is copied, switched to 'switched' in the transaction that points the
-- tenant at its new server, and deleted when the move is finished or undone. A rerun of
-- `tenant move` after a kill reads it to finish or undo the move.
-- Runs with search_path set to the registry schema.
CREATE TABLE tenant_moves (
    tenant_id bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    from_server text NOT NULL,
    to_server text NOT NULL,
    schema_name text NOT NULL,
    keep_source boolean NOT NULL,
    phase text NOT NULL CHECK (phase IN ('copying', 'switched')),
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

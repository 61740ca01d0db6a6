-- The tenant registry. Runs with search_path set to the registry schema.
-- These columns are a stable interface for applications: later versions only add.
CREATE TABLE tenants (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_name        text NOT NULL,
    domain             text NOT NULL UNIQUE,
    email              text,
    tenant_type        text NOT NULL DEFAULT 'standard',
    schema_name        text NOT NULL UNIQUE,
    schema_provisioned boolean NOT NULL DEFAULT false,
    migrations_applied boolean NOT NULL DEFAULT false,
    current_revision   integer,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'active', 'failed')),
    last_error         text,
    -- SHA-256 of the API key, lowercase hex; the key itself is never stored.
    api_key_hash       text NOT NULL UNIQUE CHECK (api_key_hash ~ '^[0-9a-f]{64}$'),
    api_key_prefix     text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tenants_status_idx ON tenants (status);
CREATE INDEX tenants_tenant_type_idx ON tenants (tenant_type);

COMMENT ON TABLE tenants IS 'tenantctl registry: one row per tenant; find a tenant''s schema by domain or by api_key_hash = sha256(key)';

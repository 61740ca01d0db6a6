-- Which server a tenant's schema lives on: `default` is the registry's own database,
-- other names are `[servers.NAME]` in tenants.toml.
-- Runs with search_path set to the registry schema.
ALTER TABLE tenants ADD COLUMN server text NOT NULL DEFAULT 'default';
CREATE INDEX tenants_server_idx ON tenants (server);

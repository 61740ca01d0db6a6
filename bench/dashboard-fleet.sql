-- A registry as a large fleet leaves it, for the dashboard's benchmark and its Chromium
-- test at scale: __TENANTS__ tenants registered (types church, school and ministry; two
-- thirds on server `default`, a third on `eu2`) with their cached columns as runs leave
-- them (most at revision 3, some behind, 1 in 200 failed with an error, 1 in 100 not
-- provisioned), and a ledger and a runs table with 30 days of history: a fleet upgrade
-- of every tenant today, nightly backups of two thirds of them, and 240 smaller runs.
-- The tenants' schemas are not created: every dashboard page but a tenant's own reads
-- the registry, the ledger and the servers' activity, never the schemas.
-- Run in the registry schema (search_path), after `tenantctl init`.
INSERT INTO tenants (tenant_name, domain, email, tenant_type, schema_name, schema_provisioned,
                     migrations_applied, current_revision, status, last_error,
                     api_key_hash, api_key_prefix, server)
SELECT 'Congregation ' || i,
       'parish-' || i || '.example.org',
       CASE WHEN i % 3 = 0 THEN 'office@parish-' || i || '.example.org' END,
       (ARRAY['church', 'school', 'ministry'])[1 + i % 3],
       'tenant_parish_' || i,
       i % 100 <> 0,
       i % 100 <> 0,
       CASE WHEN i % 100 = 0 THEN NULL WHEN i % 200 = 1 THEN 2 WHEN i % 7 = 0 THEN 2
            WHEN i % 31 = 0 THEN 1 ELSE 3 END,
       CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 200 = 1 THEN 'failed' ELSE 'active' END,
       CASE WHEN i % 200 = 1 THEN 'migration V3__groups failed at line 2: relation "groups" already exists' END,
       encode(sha256(convert_to('dashboard-key-' || i, 'UTF8')), 'hex'),
       'tk_parish',
       CASE WHEN i % 3 = 2 THEN 'eu2' ELSE 'default' END
FROM generate_series(1, __TENANTS__) AS i;

-- Today's fleet upgrade: one entry per provisioned tenant.
INSERT INTO tenant_events (run_id, tenant_id, domain, schema_name, action, from_revision, to_revision,
                           status, error, started_at, finished_at, client_host)
SELECT '6a1d3f0e-0000-4000-8000-000000000001', id, domain, schema_name, 'upgrade', 2, current_revision,
       CASE WHEN status = 'failed' THEN 'failed' ELSE 'ok' END, last_error,
       now() - interval '2 hours' + id * interval '10 ms',
       now() - interval '2 hours' + id * interval '10 ms' + interval '40 ms', 'deploy-1'
FROM tenants WHERE schema_provisioned;
INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result, client_host)
SELECT '6a1d3f0e-0000-4000-8000-000000000001', 'upgrade', now() - interval '2 hours',
       now() - interval '2 hours' + count(*) * interval '10 ms' + interval '1 s', count(*),
       count(*) FILTER (WHERE status = 'active'), 0, count(*) FILTER (WHERE status = 'failed'), 0,
       CASE WHEN bool_or(status = 'failed') THEN 'failed' ELSE 'ok' END, 'deploy-1'
FROM tenants WHERE schema_provisioned;

-- Daily backups of the churches and schools over the last week, the last about two hours ago.
INSERT INTO tenant_events (run_id, tenant_id, domain, schema_name, action, status, started_at, finished_at, client_host)
SELECT ('6a1d3f0e-0000-4000-8000-0000000001' || lpad(d::text, 2, '0'))::uuid, t.id, t.domain, t.schema_name,
       'backup', 'ok',
       now() - d * interval '1 day' - interval '3 hours',
       now() - d * interval '1 day' - interval '3 hours' + t.id * interval '5 ms', 'backup-1'
FROM tenants t, generate_series(0, 6) AS d
WHERE t.schema_provisioned AND t.tenant_type IN ('church', 'school');
INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result, client_host)
SELECT ('6a1d3f0e-0000-4000-8000-0000000001' || lpad(d::text, 2, '0'))::uuid, 'backup',
       now() - d * interval '1 day' - interval '3 hours',
       now() - d * interval '1 day' - interval '3 hours' + n * interval '5 ms',
       n, n, 0, 0, 0, 'ok', 'backup-1'
FROM generate_series(0, 6) AS d,
     (SELECT count(*) AS n FROM tenants WHERE schema_provisioned AND tenant_type IN ('church', 'school')) AS c;

-- 240 smaller runs over 30 days, one in twelve failed.
INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result, client_host)
SELECT gen_random_uuid(), (ARRAY['upgrade', 'provision', 'stamp'])[1 + k % 3],
       now() - (k * interval '3 hours') - (20 + k % 50) * interval '1 s',
       now() - (k * interval '3 hours'),
       50 + k % 200, 50 + k % 200 - (k % 12 = 0)::int * 3, 0, (k % 12 = 0)::int * 3, 0,
       CASE WHEN k % 12 = 0 THEN 'failed' ELSE 'ok' END, 'cron-' || (k % 4)
FROM generate_series(1, 240) AS k;

ANALYZE tenants;
ANALYZE tenant_events;
ANALYZE tenant_runs;

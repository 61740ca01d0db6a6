-- One row per bulk run (provision, upgrade, downgrade, stamp, backup, through the
-- command line or the service), written when it ends, even when no tenant needed work:
-- what "the last successful upgrade" means for monitoring.
-- Runs with search_path set to the registry schema.
CREATE TABLE tenant_runs (
    run_id      uuid PRIMARY KEY,
    command     text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    total       integer NOT NULL,
    ok          integer NOT NULL,
    up_to_date  integer NOT NULL,
    failed      integer NOT NULL,
    skipped     integer NOT NULL,
    result      text NOT NULL CHECK (result IN ('ok', 'failed', 'interrupted')),
    client_host text
);

CREATE INDEX tenant_runs_command_idx ON tenant_runs (command, finished_at);

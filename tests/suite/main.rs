//! tenantctl's integration tests, built as one binary: each module below was a test file
//! of its own, and the shared helpers are compiled once for all of them.
//!
//! Every test runs the real binary (or the library) against a real PostgreSQL server:
//! `scripts/test` finds or starts one. Run one module with
//! `cargo test --test suite -- MODULE::` and one test with its full path.

// Shared helpers.
mod checks;
mod cluster;
mod common_json;
mod support;

// The tests.
mod adopt_alembic;
mod adopt_extensions;
mod architecture;
mod backup;
mod backup_policies;
mod boundaries;
mod citus;
mod cli;
mod concurrency;
mod connections;
mod crash;
mod dashboard;
mod dashboard_pages;
mod data_hostile;
mod docs_examples;
mod dry_run_memory;
mod edge;
mod faults;
mod fence;
mod fleet;
mod harness;
mod impact;
mod interrupt;
mod ledger;
mod libpq_parity;
mod lint;
mod locks;
mod names;
mod online_move;
mod pitr;
mod pooler;
mod props;
mod psql_execution;
mod psql_split;
mod races;
mod registry;
mod registry_values;
mod restart;
mod schemas;
mod secrets;
mod selection_and_reports;
mod serve;
mod servers;
mod session_hygiene;
mod shared_schema;
mod sql_realism;
mod tenant_data;
mod tenant_move;
mod tidy;
mod tls;
mod verbs;
mod version_index;
mod warm_sessions;
mod workflows;

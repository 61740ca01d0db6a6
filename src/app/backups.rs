//! Backup policies (`[backup.policies]`, the book's "Backups"): which tenants a
//! `backup --due` run backs up, from the ledger's last successful backup of each, and the
//! lock that lets one such run go at a time, across processes and hosts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::app::changes::Started;
use crate::app::context::Context;
use crate::app::fleet::Selection;
use crate::config::{policy_for, Policy};
use crate::data::backup::Backup;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::{self, Client, Reads};
use crate::registry::{Tables, Tenant};

/// The tenants of `tenants` whose policy says a backup is due: one with a policy and no
/// successful backup in the ledger, or none younger than the policy's `every` (by the
/// registry server's clock). A tenant whose type has no policy (and there is no
/// `default`) is never due.
pub async fn due(
    client: &Client,
    registry_schema: &str,
    tenants: Vec<Tenant>,
    policies: &BTreeMap<String, Policy>,
) -> Result<Vec<Tenant>, Error> {
    let covered: Vec<Tenant> = tenants
        .into_iter()
        .filter(|t| policy_for(policies, &t.tenant_type).is_some())
        .collect();
    if covered.is_empty() {
        return Ok(covered);
    }
    // The registry was opened (and checked) when the tenants were selected.
    let tables = Tables::new(registry_schema);
    let ids: Vec<i64> = covered.iter().map(|t| t.id).collect();
    let rows = db::read(
        client,
        "reading the ledger's last backups",
        client.pg().query(
            &format!(
                "SELECT t.id, extract(epoch FROM now() - b.at)::float8 \
                 FROM unnest($1::bigint[]) AS t(id) \
                 LEFT JOIN (SELECT tenant_id, max(finished_at) AS at FROM {} \
                            WHERE action = 'backup' AND status = 'ok' AND isfinite(finished_at) \
                              AND tenant_id = ANY($1) GROUP BY tenant_id) b \
                   ON b.tenant_id = t.id",
                tables.events
            ),
            &[&ids],
        ),
    )
    .await?;
    let age: BTreeMap<i64, Option<f64>> = rows
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<f64>>(1)))
        .collect();
    Ok(covered
        .into_iter()
        .filter(|t| {
            let Some(policy) = policy_for(policies, &t.tenant_type) else {
                return false;
            };
            match age.get(&t.id).copied().flatten() {
                None => true,
                Some(secs) => secs >= policy.every.as_secs_f64(),
            }
        })
        .collect())
}

/// Takes the lock of `backup --due` runs on `client`'s session (held until it ends):
/// `false` when another run holds it.
pub async fn try_lock(client: &Client, registry_schema: &str) -> Result<bool, Error> {
    let (k1, k2) = db::lock_key(
        db::LockSpace::Registry,
        &format!("{registry_schema}.backup --due"),
    );
    let row = db::read(
        client,
        "taking the lock of due backups",
        client
            .pg()
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2]),
    )
    .await?;
    Ok(row.get(0))
}

/// Refuses `backup --due` (exit 3) when the config has no backup policy.
fn require_policies(cx: &Context) -> Result<(), Error> {
    if cx.settings.backup_policies.is_empty() {
        return Err(Error::setup(
            "backup --due needs backup policies: add [backup.policies.default] (and one per tenant type that differs) to the config, with `every` and `keep`",
        ));
    }
    Ok(())
}

/// The backups' directory: `given` (the flag `flag`), else `backup.dir`.
pub fn dir(cx: &Context, given: Option<&PathBuf>, flag: &str) -> Result<PathBuf, Error> {
    given
        .or(cx.settings.backup_dir.as_ref())
        .cloned()
        .ok_or_else(|| {
            Error::usage(format!(
                "name the backups' directory with {flag} DIR (or set backup.dir in the config)"
            ))
        })
}

/// A backup run begun: the tenants selected (for `--due`, those due) and the operation.
pub struct Begun {
    /// The selection, ready to run.
    pub started: Started,
    /// The backup operation.
    pub op: Backup,
    /// `--due` only: another `--due` run holds the lock, so this one backs up nothing.
    pub overlapped: bool,
}

/// Begins `backup` into `out` (else `backup.dir`; checked writable first): the selected
/// tenants, keeping `keep` of each; with `due`, only those due by their policy, each
/// keeping what its policy says, and nothing when another `--due` run is going (it
/// holds the lock until `started.client` is dropped). `--due` alone selects every
/// tenant. Without a policy `--due` is refused (exit 3) before the directory is looked
/// at.
pub async fn begin(
    cx: &Context,
    selection: &Selection,
    out: Option<&PathBuf>,
    keep: Option<usize>,
    due: bool,
) -> Result<Begun, Error> {
    let policies = &cx.settings.backup_policies;
    if due {
        require_policies(cx)?;
    }
    let dir = self::dir(cx, out, "--out")?;
    crate::data::backup::writable_dir(&dir)?;
    let mut selection = selection.clone();
    if due && !selection.selects() {
        selection.all = true;
    }
    // A backup reads the tenants as they are: it needs no migration files.
    let set = MigrationSet::empty(cx.settings.migrations_dir.clone());
    let mut started = Started::open(cx, set, &selection).await?;
    let mut overlapped = false;
    if due {
        if try_lock(&started.client, &cx.settings.registry_schema).await? {
            let selected = std::mem::take(&mut started.tenants);
            started.tenants = self::due(
                &started.client,
                &cx.settings.registry_schema,
                selected,
                policies,
            )
            .await?;
        } else {
            overlapped = true;
            started.tenants.clear();
        }
    }
    let op = Backup {
        dir,
        keep: if due { None } else { keep },
        policies: due.then(|| policies.clone()),
        unprovisioned: started.unprovisioned,
    };
    Ok(Begun {
        started,
        op,
        overlapped,
    })
}

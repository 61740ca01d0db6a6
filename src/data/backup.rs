//! `backup` as a bulk operation: each selected tenant's archive written, in its locked
//! session, under a temporary name in `DIR/DOMAIN/`, then published as its newest backup
//! `DOMAIN-STAMP.tenant` (a name never given twice, see [`super::files::publish_backup`])
//! and the tenant's older backups beyond `keep` removed. A backup never changes a
//! tenant's status; the ledger records each one.

use std::path::{Path, PathBuf};

use crate::engine::operation::{Operation, Unprovisioned};
use crate::engine::runner::Session;
use crate::engine::scheduler::{ResultStatus, TenantResult};
use crate::error::Error;
use crate::registry::Tenant;

/// Makes `dir` (and its parents) if missing and checks it can be written, so a
/// directory a backup cannot use is refused before any tenant is started.
pub fn writable_dir(dir: &Path) -> Result<(), Error> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::usage(format!(
            "--out {} is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::usage(format!("cannot create --out {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".tenantctl-write-check.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Error::usage(format!("cannot write into --out {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The backup operation.
pub struct Backup {
    /// Where the archives go.
    pub dir: PathBuf,
    /// How many of each tenant's backups to keep (`None`: all), unless `policies`.
    pub keep: Option<usize>,
    /// `backup --due`: each tenant keeps what its type's policy says.
    pub policies: Option<std::collections::BTreeMap<String, crate::config::Policy>>,
    /// What to do with tenants without a schema.
    pub unprovisioned: Unprovisioned,
}

impl Backup {
    /// What `tenant`'s rotation keeps: the newest N, and those younger than a duration.
    fn kept(&self, tenant: &Tenant) -> super::files::Keep {
        match &self.policies {
            Some(policies) => match crate::config::policy_for(policies, &tenant.tenant_type) {
                Some(p) => super::files::Keep {
                    newest: Some(p.keep),
                    within: p.keep_within,
                },
                None => super::files::Keep::default(),
            },
            None => super::files::Keep {
                newest: self.keep,
                within: None,
            },
        }
    }
}

impl Operation for Backup {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn keeps_status(&self) -> bool {
        true
    }

    async fn apply(&self, session: &mut Session<'_>, tenant: &Tenant, r: &mut TenantResult) {
        let fail = |r: &mut TenantResult, message: String| {
            r.status = ResultStatus::Failed;
            r.error = Some(message);
        };
        let state = match session.state().await {
            Ok(s) => s,
            Err(e) => return fail(r, e.to_string()),
        };
        r.from_revision = state.current();
        r.to_revision = state.current();
        if !state.schema_exists {
            let message = format!(
                "schema {} does not exist; there is nothing to back up",
                crate::ident::quote(&tenant.schema_name)
            );
            if self.unprovisioned == Unprovisioned::Skip {
                r.status = ResultStatus::Skipped;
                r.error = Some(message);
            } else {
                fail(r, message);
            }
            return;
        }
        // The domain names a directory: one edited by hand in the registry into
        // something `tenant create` refuses (`..`, a slash) must not lead outside DIR.
        if let Err(e) = crate::ident::validate_domain(&tenant.domain) {
            return fail(
                r,
                format!("not backed up: the registry's domain is not one tenantctl accepts ({e})"),
            );
        }
        let dir = self.dir.join(&tenant.domain);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return fail(r, format!("creating {}: {e}", dir.display()));
        }
        super::files::remove_stale_partials(&dir, &format!("{}-", tenant.domain));
        let started = time::OffsetDateTime::now_utc();
        let partial = super::files::backup_partial(&dir, &tenant.domain, started);
        let file = match super::files::create_partial(&partial) {
            Ok(f) => f,
            Err(e) => return fail(r, e.to_string()),
        };
        let label = partial.display().to_string();
        let settings = session.settings().clone();
        let written = super::export_in(session, tenant, &settings, Box::new(file), &label).await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return fail(r, e.to_string());
        }
        crate::failpoint!(
            "backup.written",
            return |e: crate::error::Error| {
                let _ = std::fs::remove_file(&partial);
                fail(r, e.to_string())
            }
        );
        let published = super::files::publish_backup(
            &partial,
            &dir,
            &tenant.domain,
            started,
            self.kept(tenant),
        );
        let published = match published {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return fail(r, e.to_string());
            }
        };
        r.file = Some(published.path.display().to_string());
        r.status = ResultStatus::Ok;
        if let Err(e) = published.rotated {
            // The new backup is complete; only removing old ones failed.
            r.error = Some(format!("backup written, but {e}"));
        }
    }
}

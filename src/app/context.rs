//! [`Context`]: what every action needs, whichever face calls it: the effective settings,
//! the servers and their connection targets, and the stop token. The command line wraps
//! it with its output settings; the service holds one for all its requests.

use crate::config::{Overrides, Settings};
use crate::engine::scheduler::RunOptions;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::{self, Client};
use crate::pg::interrupt::Interrupt;
use crate::registry::inspect::TenantStatus;
use crate::registry::servers::Servers;
use crate::registry::{Registry, Tenant};

/// What every action needs.
pub struct Context {
    /// Effective settings.
    pub settings: Settings,
    /// Where to connect: the registry's server.
    pub target: db::Target,
    /// Every server tenants live on, `default` (the same as `target`) first.
    pub servers: Servers,
    /// Set by Ctrl-C or SIGTERM.
    pub interrupt: Interrupt,
    /// Whether the first connection has been checked for a transaction-pooling proxy.
    pooling_checked: std::sync::atomic::AtomicBool,
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Context {
    /// Loads the configuration (file, environment, `overrides`) and resolves the
    /// connection targets; no connection yet.
    pub fn new(overrides: &Overrides, interrupt: Interrupt) -> Result<Context, Error> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::setup(format!("cannot read the current directory: {e}")))?;
        let settings = crate::config::load(overrides, &env_var, &cwd)?;
        let servers = Servers::resolve(&settings, &env_var)?;
        let target = servers.default_target().clone();
        Ok(Context {
            settings,
            target,
            servers,
            interrupt,
            pooling_checked: Default::default(),
        })
    }

    /// Opens a connection for the action's own queries. The first connection is checked
    /// for a transaction-pooling proxy (see [`db::refuse_transaction_pooling`]) before
    /// anything else runs on it.
    pub async fn connect(&self) -> Result<Client, Error> {
        let client = self.target.connect().await?;
        if !self
            .pooling_checked
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            db::refuse_transaction_pooling(&self.target, &client).await?;
        }
        Ok(client)
    }

    /// Loads and validates the migrations directory, and checks its
    /// `-- tenantctl: requires shared N` directives against the shared migrations.
    pub fn migrations(&self) -> Result<MigrationSet, Error> {
        let set = MigrationSet::load(&self.settings.migrations_dir)?;
        if set.files.iter().any(|f| f.up.requires_shared.is_some()) {
            let shared = match &self.settings.shared {
                Some(_) => Some(self.shared()?.1),
                None => None,
            };
            set.check_requires(shared.as_ref())?;
        }
        Ok(set)
    }

    /// Run options from the settings: `concurrency` (the command's `--concurrency`, the
    /// API's `concurrency`) is every server's limit; without it, each server's
    /// `concurrency` from the config.
    pub fn run_options(
        &self,
        concurrency: Option<u16>,
        max_failures: Option<usize>,
        canary: Option<u32>,
    ) -> RunOptions {
        let flag = concurrency.map(usize::from);
        RunOptions {
            concurrency: flag.unwrap_or(self.settings.concurrency),
            lanes: self
                .servers
                .iter()
                .map(|(s, _)| (s.name.clone(), flag.unwrap_or(s.concurrency)))
                .collect(),
            max_failures,
            canary: canary.map_or(0, |c| c as usize),
        }
    }

    /// What a workflow on one tenant needs, its lock waits and notices sent to `events`.
    pub fn one_tenant<'a>(
        &'a self,
        events: &'a crate::engine::scheduler::Events,
    ) -> crate::engine::tenant::Context<'a> {
        crate::engine::tenant::Context {
            target: &self.target,
            servers: &self.servers,
            settings: &self.settings,
            interrupt: &self.interrupt,
            events,
        }
    }

    /// A connection to `server`: `None` for the registry's server, whose connection the
    /// action already has.
    pub async fn connect_to(&self, server: &str) -> Result<Option<Client>, Error> {
        if crate::registry::servers::is_default(server) {
            return Ok(None);
        }
        Ok(Some(self.servers.target(server)?.connect().await?))
    }

    /// Observes the tenants' schemas, refreshes the registry's cache, and returns each
    /// tenant's status (see [`crate::app::fleet::statuses`]).
    pub async fn statuses(
        &self,
        client: &Client,
        registry: &Registry<'_>,
        tenants: &mut [Tenant],
        set: &MigrationSet,
    ) -> Result<Vec<TenantStatus>, Error> {
        let table = &self.settings.history_table;
        crate::app::fleet::statuses(&self.servers, client, registry, tenants, set, table).await
    }
}

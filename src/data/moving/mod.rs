//! `tenant move --to SERVER`: copying a tenant to another server and switching the
//! registry to it (the book's "Moving a tenant between servers"). This module is the move's
//! protocol, shared by both ways of copying, which are plugged into it as a
//! [`copy::Copier`] and never call back up: the offline copy in [`offline`] (an export
//! streamed into a load under a write fence) and the online one in [`online`] (logical
//! replication, fenced only for the cutover), with what both share in [`copy`].
//!
//! The protocol, and what an application sees at each step:
//! 1. The tenant's lock is taken on the source and held to the end, and a journal row
//!    (`tenant_moves`, phase `copying`) is written in the registry.
//! 2. The copy: the target schema is built by the migrations to the source's revision
//!    and filled, then, with the source's tables locked `EXCLUSIVE` in the source
//!    session's transaction (writes wait, reads go on; [`super::fence`]), brought level
//!    with the source and committed on the target.
//! 3. Still in that transaction, the source schema is renamed to `SCHEMA$moving`, and the
//!    transaction commits. The fence is now durable: writers that waited fail (their
//!    table no longer exists under its name), and nothing can write to the old copy any
//!    more, whatever happens to this process. Until step 4 the tenant is unavailable: the
//!    registry still names the source, where its schema is gone.
//! 4. The registry points the tenant at the target and the journal says `switched`, in
//!    one statement (which applies only to a move still `copying`). The application,
//!    which looks the tenant's server up again after an error, now finds the target.
//! 5. The old copy, `SCHEMA$moving`, is dropped, or renamed `SCHEMA$moved_UNIXTIME` with
//!    `--keep-source` or when open transactions still read it; the journal row is
//!    deleted.
//!
//! A source transaction is never rolled back once the switch could have committed, and
//! the old copy is never brought back once the registry could name the new one: an undo
//! first claims the journal row (`undoing`), which a switch on its way then cannot pass.
//! A kill at any step leaves a state the same command's rerun finishes or undoes:
//! - before step 3 commits, the source is untouched and registered; the rerun drops the
//!   target's copy and starts again;
//! - between steps 3 and 4, the target's copy is complete and the source fenced; the
//!   rerun switches the registry and finishes (or, asked to move the tenant to the server
//!   it is on, renames the source back and drops the target's copy);
//! - after step 4, the target is registered and complete; the rerun removes the old copy.
//!
//! There are never two registered copies, never none, and never a write acknowledged
//! into a copy that is then dropped.

pub mod copy;
pub mod offline;
pub mod online;

use std::time::Instant;

use crate::pg::db::Client;
use serde::Serialize;
use time::OffsetDateTime;

use crate::data::{self, load};
use crate::engine::runner::Session;
use crate::engine::scheduler;
use crate::engine::tenant::{self, Context};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::quote;
use crate::registry::{Event, MoveJournal, Registry, Tenant};
use copy::Copier;

/// What a move did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Moved {
    /// The tenant's domain.
    pub tenant: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// The tenant's domain (the same as `tenant`).
    pub domain: String,
    /// The server it was on.
    pub from_server: String,
    /// The server it is on now.
    pub to_server: String,
    /// Tables copied.
    pub tables: usize,
    /// Rows copied; `null` for an online move, which does not count them (counting
    /// would lengthen the write block).
    pub rows: Option<u64>,
    /// How long the tenant's writes were blocked on the source (from the write locks to
    /// the commit that fenced the old copy).
    pub write_block_ms: u64,
    /// How long the whole move took.
    pub duration_ms: u64,
    /// Whether the old copy was kept (renamed) rather than dropped.
    pub source_kept: bool,
    /// An online move: how long the target took to copy and catch up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catchup_ms: Option<u64>,
    /// One sentence.
    pub message: String,
}

impl Moved {
    /// The report of a command that left `tenant` on the server it is on, copying
    /// nothing: `message` says what it did.
    fn stayed(tenant: &Tenant, started: Instant, message: String) -> Moved {
        Moved {
            tenant: tenant.domain.clone(),
            tenant_id: tenant.id,
            domain: tenant.domain.clone(),
            from_server: tenant.server.clone(),
            to_server: tenant.server.clone(),
            tables: 0,
            rows: Some(0),
            write_block_ms: 0,
            duration_ms: started.elapsed().as_millis() as u64,
            source_kept: true,
            catchup_ms: None,
            message,
        }
    }
}

fn already_there(tenant: &Tenant) -> String {
    format!(
        "tenant {} is already on server {}; nothing to do",
        tenant.domain, tenant.server
    )
}

/// What a move would do, checked without changing anything.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MovePlan {
    /// Always true.
    pub dry_run: bool,
    /// The tenant's domain.
    pub tenant: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// The tenant's domain (the same as `tenant`).
    pub domain: String,
    /// The server it is on.
    pub from_server: String,
    /// The server it would go to.
    pub to_server: String,
    /// Whether an interrupted move would be finished or undone first.
    pub unfinished: Option<String>,
    /// Whether the command would move the tenant and drop an old copy (what its
    /// confirmation asks about), rather than only finish or undo an interrupted move, or
    /// do nothing.
    #[serde(skip)]
    pub moves: bool,
    /// Whether the command would finish an interrupted move to another server, then fail
    /// (exit 1): the tenant is not moved on in the same command. Its dry run fails alike.
    #[serde(skip)]
    pub then_fails: bool,
    /// One sentence.
    pub message: String,
}

/// The name the old copy is kept under: `SCHEMA$moved_UNIXTIME`, at most 63 bytes ('$'
/// is in no tenant's schema name, so it never collides with a tenant's).
pub(crate) fn kept_name(schema: &str) -> String {
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    super::beside(schema, &format!("$moved_{stamp}"))
}

/// The name the old copy takes when it is fenced (step 3), until it is removed (step 5):
/// `SCHEMA$moving`.
pub(crate) fn fence_name(schema: &str) -> String {
    super::beside(schema, "$moving")
}

/// What became of a move's old copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OldCopy {
    /// Dropped.
    Dropped,
    /// Renamed to this name: with `--keep-source`, or because sessions were reading it.
    Kept(String),
    /// Renamed to this name because an earlier tenantctl left it under the tenant's own
    /// schema name after the switch, where writes may have reached it.
    Suspect(String),
    /// Renamed to this name because these objects outside it depend on it.
    Depended(String, String),
    /// Already gone.
    Gone,
}

impl OldCopy {
    /// Whether it is still there under another name.
    fn kept(&self) -> bool {
        matches!(
            self,
            OldCopy::Kept(_) | OldCopy::Suspect(_) | OldCopy::Depended(..)
        )
    }

    /// What became of it, for a message.
    fn describe(&self, keep_source: bool) -> String {
        match self {
            OldCopy::Dropped => "dropped".to_string(),
            OldCopy::Kept(k) if keep_source => format!("renamed to {}", quote(k)),
            OldCopy::Kept(k) => format!(
                "renamed to {} instead of dropped, as sessions were reading it; drop it once they are done",
                quote(k)
            ),
            OldCopy::Suspect(k) => format!(
                "renamed to {}: an earlier tenantctl left it in place after the switch, so writes may have reached it there; compare it with the new copy before dropping it",
                quote(k)
            ),
            OldCopy::Depended(k, list) => format!(
                "renamed to {} instead of dropped: objects outside it came to depend on it ({list}) and still use the old copy; point them at the tenant's new server, then drop it",
                quote(k)
            ),
            OldCopy::Gone => "already removed".to_string(),
        }
    }
}

/// What the rerun of an interrupted move does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// The registry switched: remove the old copy.
    Finish,
    /// The source was fenced and the target's copy is complete, but the registry was
    /// not switched: switch it, then finish.
    Switch,
    /// Nothing was switched: bring the source back if it was fenced, drop the target's
    /// copy.
    Undo,
}

/// Refuses (exit 3) the unfinished move `j` of `tenant` when the registry does not name
/// the server the journal's phase says it names (the source until the switch, the
/// target from it): one of them was changed by hand, and finishing or undoing from
/// either could destroy the copy the application writes to.
fn agrees(j: &MoveJournal, tenant: &Tenant, registry: &Registry<'_>) -> Result<(), Error> {
    let switched = j.phase == "switched";
    let named = if switched {
        &j.to_server
    } else {
        &j.from_server
    };
    if &tenant.server == named {
        return Ok(());
    }
    let moves = crate::ident::qualified(registry.schema(), "tenant_moves");
    let (phase, then) = if switched {
        (
            "copying",
            format!(
                "`tenantctl tenant move {} --to {}` then undoes it",
                tenant.domain, j.from_server
            ),
        )
    } else {
        (
            "switched",
            format!(
                "`tenantctl tenant move {} --to {}` then finishes it, removing the old copy",
                tenant.domain, j.to_server
            ),
        )
    };
    Err(Error::setup(format!(
        "tenant {} is registered on server {}, but its unfinished move from server {} to server {} is in phase {}, where the registry names server {named}: the registry or the move's journal was changed by hand, and neither finishing nor undoing is safe from here; nothing was changed. If the registry is right (the application writes to server {}), set the journal's phase to match (UPDATE {moves} SET phase = '{phase}' WHERE tenant_id = {}): {then}; if the journal is right, put the registry back (server = '{named}')",
        tenant.domain, tenant.server, j.from_server, j.to_server, j.phase, tenant.server, tenant.id
    )))
}

/// The unfinished move `j` of tenant `domain` in a sentence, with the command that
/// finishes it and the one that undoes it.
pub fn describe_journal(j: &MoveJournal, domain: &str) -> String {
    let settle = if j.phase == "switched" {
        // The registry names the target already: the move can only be finished.
        format!(
            "`tenantctl tenant move {domain} --to {}` finishes it",
            j.to_server
        )
    } else {
        format!(
            "`tenantctl tenant move {domain} --to {}` finishes it, `--to {}` undoes it",
            j.to_server, j.from_server
        )
    };
    format!(
        "an unfinished move from server {} to server {} ({}): {settle}",
        j.from_server, j.to_server, j.phase
    )
}

/// Refuses (exit 1) to `what` tenant `tenant` while a move of it is unfinished: its
/// schema is then half-copied or fenced, and the move's rerun is what settles it.
pub async fn refuse_unfinished(
    registry: &Registry<'_>,
    tenant: &Tenant,
    what: &str,
) -> Result<(), Error> {
    let Some(j) = registry.move_journal(tenant.id).await? else {
        return Ok(());
    };
    Err(Error::refused(format!(
        "tenant {} has {}; settle it before you {what}; nothing was changed",
        tenant.domain,
        describe_journal(&j, &tenant.domain)
    )))
}

/// Reads `tenant` again once its lock is held (`then`: as the command found it) and
/// refuses when it was dropped, moved to another server, or is in an unfinished move
/// meanwhile: the session that holds the lock is then not on the tenant's schema.
pub async fn still_here(
    registry: &Registry<'_>,
    then: &Tenant,
    what: &str,
) -> Result<Tenant, Error> {
    let now = registry.find(&then.id.to_string()).await.map_err(|_| {
        Error::failed(format!(
            "tenant {} was dropped by another command while this one waited for it; nothing was changed",
            then.domain
        ))
    })?;
    refuse_unfinished(registry, &now, what).await?;
    if now.server != then.server {
        return Err(Error::failed(format!(
            "tenant {} moved to server {} while this command waited for it; nothing was changed: run it again",
            then.domain, now.server
        )));
    }
    Ok(now)
}

/// Checks what a move of `tenant` to `dest` needs (online, an online move's
/// prerequisites too), changing nothing; the refusals are the move's own. A `dry_run`
/// also tries the build on the target, rolled back; the move's check before it asks
/// leaves that to the move.
pub async fn plan(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    dest: &Destination,
    set: &MigrationSet,
    dry_run: bool,
) -> Result<MovePlan, Error> {
    let (to, keep_source, online) = (dest.to.as_str(), dest.keep_source, dest.online);
    cx.servers.get(to)?;
    let journal = registry.move_journal(tenant.id).await?;
    let settle = match &journal {
        Some(j) => {
            agrees(j, tenant, registry)?;
            Some(settle(cx, j, tenant, to).await?)
        }
        None => None,
    };
    let unfinished = journal
        .as_ref()
        .zip(settle)
        .map(|(j, s)| describe_unfinished(j, s, &tenant.domain));
    if journal.is_none() && to == tenant.server {
        return Ok(MovePlan {
            dry_run: true,
            tenant: tenant.domain.clone(),
            tenant_id: tenant.id,
            domain: tenant.domain.clone(),
            from_server: tenant.server.clone(),
            to_server: to.to_string(),
            unfinished: None,
            moves: false,
            then_fails: false,
            message: already_there(tenant),
        });
    }
    // Moving a tenant with an unswitched move to the server it is on undoes that move.
    let undo_only = settle == Some(Settle::Undo) && to == tenant.server;
    let mut untried = None;
    if settle.is_none_or(|s| s == Settle::Undo) && !undo_only {
        // An online move's prerequisites first, as the move checks them (after an
        // unfinished move is settled, whose leftovers they would count).
        if online && tenant.server != to {
            match journal {
                None => online::check(cx, tenant, to).await?,
                // Before the unfinished move is settled, what its leftovers do not
                // change; the move checks the rest once it has settled it.
                Some(_) => online::check_standing(cx, tenant, to).await?,
            }
        }
        preflight(cx, tenant, to, journal.as_ref()).await?;
        if journal.is_none() {
            // The copy is built by the local migrations to the tenant's revision: its
            // history must be theirs, as the move checks it.
            let (pool, session) =
                tenant::locked_schema(cx, &tenant.server, &tenant.schema_name, &tenant.domain)
                    .await?;
            let checked = async {
                let history = data::readable_history(&session, tenant).await?;
                data::check_history(&history, set, &format!("of tenant {}", tenant.domain))
            }
            .await;
            session.close(&pool).await;
            let revision = checked?;
            // A dry run builds the target's copy and checks it as the move would, then
            // rolls it back (the move itself does both once, for real).
            untried = if !dry_run {
                None
            } else if online {
                online::rehearse(cx, tenant, to, revision, set).await?
            } else {
                let manifest = data::peek(cx, tenant).await?;
                let schema = &tenant.schema_name;
                let source = cx.servers.target(&tenant.server)?.connect().await?;
                let (pool, mut target) =
                    tenant::locked_schema(cx, to, schema, &tenant.domain).await?;
                let tried = async {
                    let state = target.observe().await?;
                    let untried =
                        data::try_build(&mut target, &state, schema, revision, set, None).await?;
                    if untried.is_some() {
                        return Ok(untried);
                    }
                    let checked = async {
                        load::check_built(
                            target.client(),
                            schema,
                            &cx.settings.history_table,
                            &manifest,
                            load::RowsFrom::MoveSource,
                        )
                        .await?;
                        online::bound_alike(
                            &source,
                            target.client(),
                            schema,
                            &cx.settings.history_table,
                        )
                        .await
                    }
                    .await;
                    target.end_rehearsal().await;
                    let differences = checked?;
                    if !differences.is_empty() {
                        return Err(online::differs(revision, &differences));
                    }
                    Ok(None)
                }
                .await;
                target.close(&pool).await;
                tried?
            };
        }
    }
    let message = match (&journal, &unfinished, settle) {
        (Some(j), Some(u), Some(Settle::Finish | Settle::Switch)) if j.to_server == to => {
            format!("would finish: {u}")
        }
        // The move finishes the interrupted one, then fails (exit 1): the tenant is not
        // moved on in the same command.
        (Some(j), Some(u), Some(Settle::Finish | Settle::Switch)) => format!(
            "would finish: {u}; tenant {} would then be on server {}, not {to}, and the command would fail there: run it again once the move is finished; nothing was changed",
            tenant.domain, j.to_server
        ),
        (Some(_), Some(u), _) if undo_only => {
            format!("would undo: {u}; the tenant stays on server {to}")
        }
        (_, u, _) => format!(
            "{}would copy tenant {} from server {} to server {to} {}, switch the registry, then {} the old copy{}; nothing was changed",
            u.as_ref().map(|u| format!("{u}; then ")).unwrap_or_default(),
            tenant.domain,
            tenant.server,
            if online {
                "online, with logical replication (writes blocked only for the cutover)"
            } else {
                "under a write fence"
            },
            if keep_source { "rename" } else { "drop" },
            untried.map(|u| format!(" ({u})")).unwrap_or_default()
        ),
    };
    let then_fails = journal.as_ref().is_some_and(|j| j.to_server != to)
        && settle.is_some_and(|s| s != Settle::Undo);
    Ok(MovePlan {
        dry_run: true,
        tenant: tenant.domain.clone(),
        tenant_id: tenant.id,
        domain: tenant.domain.clone(),
        from_server: tenant.server.clone(),
        to_server: to.to_string(),
        then_fails,
        unfinished,
        moves: !(undo_only || settle.is_some_and(|s| s != Settle::Undo)),
        message,
    })
}

fn describe_unfinished(j: &MoveJournal, settle: Settle, domain: &str) -> String {
    match settle {
        Settle::Finish => format!(
            "an interrupted move of tenant {domain} from server {} to server {} switched the registry; its old copy on {} is removed now",
            j.from_server, j.to_server, j.from_server
        ),
        Settle::Switch => format!(
            "an interrupted move of tenant {domain} from server {} to server {} fenced the old copy (schema {}) and completed the new one, but did not switch the registry; it is switched now",
            j.from_server,
            j.to_server,
            quote(&fence_name(&j.schema_name))
        ),
        Settle::Undo => format!(
            "an interrupted move of tenant {domain} from server {} to server {} did not switch the registry; its partial copy on {} is dropped first",
            j.from_server, j.to_server, j.to_server
        ),
    }
}

/// What the rerun does about the unfinished move `j`: finish it when the registry
/// switched; switch then finish when the source was fenced and the target holds the
/// copy (unless the tenant is asked to stay where it is); undo it otherwise.
async fn settle(
    cx: &Context<'_>,
    j: &MoveJournal,
    tenant: &Tenant,
    to: &str,
) -> Result<Settle, Error> {
    if j.phase == "switched" {
        return Ok(Settle::Finish);
    }
    if j.phase != "copying" || to == j.from_server {
        return Ok(Settle::Undo);
    }
    if !fenced(cx, j, &tenant.domain).await? {
        return Ok(Settle::Undo);
    }
    let target = cx.servers.target(&j.to_server)?.connect().await?;
    let copy = crate::engine::dependents::contents(&*target, &j.schema_name).await?;
    Ok(if copy.non_empty() {
        Settle::Switch
    } else {
        Settle::Undo
    })
}

/// Whether the source of move `j` was fenced (its schema renamed to the fence name):
/// an error when both names exist, which no move makes.
async fn fenced(cx: &Context<'_>, j: &MoveJournal, domain: &str) -> Result<bool, Error> {
    let source = cx.servers.target(&j.from_server)?.connect().await?;
    let live = crate::engine::dependents::contents(&*source, &j.schema_name)
        .await?
        .exists;
    let moving = fence_name(&j.schema_name);
    let fenced = crate::engine::dependents::contents(&*source, &moving)
        .await?
        .exists;
    if fenced && live {
        return Err(Error::failed(format!(
            "an interrupted move of tenant {domain} fenced its old copy as schema {} on server {}, and schema {} exists there again; one of them was made by hand: compare them and drop or rename one, then run the move again; nothing was changed",
            quote(&moving),
            j.from_server,
            quote(&j.schema_name)
        )));
    }
    Ok(fenced)
}

/// The checks before anything is written: the servers differ and answer, the target
/// does not hold the schema (unless it is this tenant's own partial copy from an
/// interrupted move), the fence name is free on the source, the source schema holds only
/// what an archive carries and no row-level security hides rows from the copy, and
/// nothing outside the source schema depends on it.
pub(crate) async fn preflight(
    cx: &Context<'_>,
    tenant: &Tenant,
    to: &str,
    journal: Option<&MoveJournal>,
) -> Result<(), Error> {
    if tenant.server == to {
        return Err(Error::usage(format!(
            "tenant {} is already on server {to}",
            tenant.domain
        )));
    }
    let schema = &tenant.schema_name;
    let mut source = cx.servers.target(&tenant.server)?.connect().await?;
    let target = cx.servers.target(to)?.connect().await?;
    let ours = journal.is_some_and(|j| j.to_server == to && j.phase != "switched");
    if !ours
        && crate::engine::dependents::contents(&*target, schema)
            .await?
            .exists
    {
        return Err(Error::refused(format!(
            "schema {} already exists on server {to}; a tenant's copy cannot go there; nothing was changed",
            quote(schema)
        )));
    }
    let moving = fence_name(schema);
    if journal.is_none()
        && crate::engine::dependents::contents(&*source, &moving)
            .await?
            .exists
    {
        return Err(Error::refused(format!(
            "schema {} exists on server {}, and a move of tenant {} fences its old copy under that name; it is not this tenant's unfinished move (none is recorded): drop or rename it first; nothing was changed",
            quote(&moving),
            tenant.server,
            tenant.domain
        )));
    }
    let boundary = crate::engine::dependents::inspect(&mut source, schema).await?;
    if !boundary.contents.exists {
        return Err(Error::failed(format!(
            "tenant {}'s schema {} does not exist on server {}; there is nothing to move",
            tenant.domain,
            quote(schema),
            tenant.server
        )));
    }
    // The fence renames the old copy: that takes owning the schema (or a role that does)
    // and CREATE on the source's database, checked before anything is made rather than
    // found after the copy.
    let may_rename: bool = source
        .query_one(
            "SELECT (pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE') \
                     AND pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')) \
             FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
            &[&schema],
        )
        .await
        .map_err(crate::pg::db::query_error("checking who may rename the tenant's schema"))?
        .get(0);
    if !may_rename {
        return Err(Error::refused(format!(
            "the source's role may not rename schema {} on server {} (it must own the schema, or be a member of the role that does, and have CREATE on the database): a move fences the old copy by renaming it; nothing was changed",
            quote(schema),
            tenant.server
        )));
    }
    // What the copy could not read whole is refused before anything is made.
    let catalog = super::catalog::read(&source, schema, &cx.settings.history_table).await?;
    super::catalog::refuse_row_security(&source, schema, &catalog, "a move of the tenant").await?;
    // An interrupted online move's publication still lists the tables; the move drops
    // it before anything else, so it does not count.
    let leftover = journal.map(|_| online::replication_name(tenant.id));
    let outside: Vec<_> = boundary
        .outside
        .into_iter()
        .filter(|d| !leftover.as_deref().is_some_and(|n| names(&d.object, n)))
        .collect();
    // Whether dropped or kept renamed, objects outside the schema would go on reading
    // and writing the old copy (a rename carries them along).
    if !outside.is_empty() {
        return Err(Error::refused(crate::engine::plan::data_blocked(
            schema, &outside, "move",
        )));
    }
    Ok(())
}

/// Whether the object description `object` names `name` as a whole word.
fn names(object: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    object.match_indices(name).any(|(at, _)| {
        !object[..at].ends_with(word) && !object[at + name.len()..].starts_with(word)
    })
}

/// Where a tenant moves, and how.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The configured server it moves to.
    pub to: String,
    /// Rename the old copy instead of dropping it.
    pub keep_source: bool,
    /// Copy by logical replication (see [`online`]), fencing writes for the cutover only.
    pub online: bool,
}

/// Moves `tenant` to `dest.to`, copying offline or online as `dest` says, finishing or
/// undoing an interrupted move of it first.
pub async fn move_to(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    dest: &Destination,
    set: &MigrationSet,
) -> Result<Moved, Error> {
    let (to, keep) = (dest.to.as_str(), dest.keep_source);
    if dest.online {
        run(cx, registry, tenant, to, keep, set, &online::Online).await
    } else {
        run(cx, registry, tenant, to, keep, set, &offline::Offline).await
    }
}

/// The whole protocol (see the module header), copying as `how` does.
async fn run(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    keep_source: bool,
    set: &MigrationSet,
    how: &impl Copier,
) -> Result<Moved, Error> {
    let started = Instant::now();
    cx.servers.get(to)?;
    // Ctrl-C (or SIGTERM) stops the move at its next step and undoes it, unless its old
    // copy is already fenced, when it is finished; a second one ends the process at once
    // (a rerun then settles the move).
    let _graceful = cx.interrupt.graceful_guard_saying(
        "stopping: the move is undone at its next step and the tenant stays where it is, unless its old copy is already fenced, when it is finished (signal again to end at once; the same command run again then finishes or undoes it)",
    );
    // The tenant's lock, on the server its schema is on (or was on, for a move that
    // switched), is held to the end: a rerun never runs beside the move it settles.
    let pending = registry.move_journal(tenant.id).await?;
    let home = pending
        .as_ref()
        .map_or_else(|| tenant.server.clone(), |j| j.from_server.clone());
    let (pool, session) =
        tenant::locked_schema(cx, &home, &tenant.schema_name, &tenant.domain).await?;
    // A session this process leaves behind (killed) gives up its work and the tenant's
    // lock at once, whatever it was waiting for.
    crate::pg::db::notice_dead_client(session.client()).await;
    let result = async {
        // Another command may have changed the tenant while this one waited for it.
        let tenant = registry.find(&tenant.id.to_string()).await?;
        // What this copy refuses whatever an unfinished move left is refused before that
        // move is settled: the refusal then leaves it, and everything else, as it was.
        if pending.is_some() && tenant.server != to {
            how.check_unsettled(cx, &tenant, to).await?;
        }
        if let Some(settled) = recover(cx, registry, &tenant, to, started).await? {
            return Ok(settled);
        }
        let tenant = registry.find(&tenant.id.to_string()).await?;
        if tenant.server != home {
            return Err(Error::failed(format!(
                "tenant {} is on server {} now, not {home}; run the move again",
                tenant.domain, tenant.server
            )));
        }
        // Already there (a rerun of a move that finished): nothing to do, as an upgrade
        // of an up-to-date tenant has nothing to do.
        if tenant.server == to {
            return Ok(Moved::stayed(&tenant, started, already_there(&tenant)));
        }
        how.check(cx, &tenant, to).await?;
        preflight(cx, &tenant, to, None).await?;
        let journal = MoveJournal {
            from_server: tenant.server.clone(),
            to_server: to.to_string(),
            schema_name: tenant.schema_name.clone(),
            keep_source,
            phase: "copying".into(),
        };
        let began = OffsetDateTime::now_utc();
        registry.begin_move(tenant.id, &journal).await?;
        let moved =
            copy_and_switch(cx, registry, &tenant, &journal, set, &session, how, started).await;
        match moved {
            Ok(m) => Ok(m),
            Err((e, true)) => Err(e),
            Err((e, false)) => {
                // The source's transaction must end before anything else looks at it.
                let _ = session.client().batch_execute("ROLLBACK").await;
                let after = after_failure(cx, registry, &tenant, &journal, e, started).await;
                if let Err(e) = &after {
                    // The move had begun (its journal written): the attempt is in the
                    // ledger. The error is the command's either way.
                    let _ = super::log_failure(registry, &tenant, how.action(), began, e).await;
                }
                after
            }
        }
    }
    .await;
    session.close(&pool).await;
    result
}

/// After a failure that did not switch the registry (as far as this process knows):
/// undoes the move, or finishes it when the switch turns out to have committed.
async fn after_failure(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    e: Error,
    started: Instant,
) -> Result<Moved, Error> {
    // The cause's own message, without the full stop that would come before the rest.
    let e = Error::new(e.kind(), e.to_string().trim_end_matches('.').to_string());
    match undo(cx, registry, tenant, journal).await {
        Ok(Undone::Done(left)) => Err(Error::new(
            e.kind(),
            format!(
                "{e}; the move was undone: tenant {} stays on server {} as it was{}",
                tenant.domain,
                tenant.server,
                match left {
                    None => ", and nothing of it is left on either server".to_string(),
                    Some(left) => format!("; {left}"),
                }
            ),
        )),
        // The switch committed although this process did not hear so: finish.
        Ok(Undone::Switched) => {
            let mut finished = finish_switched(cx, registry, tenant, journal, started).await?;
            finished.message = format!(
                "{} (the registry switch had committed although its answer was lost: {e})",
                finished.message
            );
            Ok(finished)
        }
        Err(u) => Err(Error::new(
            e.kind(),
            format!(
                "{e}; undoing the move failed too ({u}); run the same `tenant move` again: it finishes or undoes the move"
            ),
        )),
    }
}

/// Deals with an interrupted move of `tenant` before a move to `to` starts (see
/// [`settle`]): the old copy is removed from a switched move (an error when it went
/// elsewhere than `to`: the tenant is not moved on in the same command); a fenced one is
/// switched and finished; any other is undone. `Some` when that settles the command: the
/// finished move, or an undo asked for by moving the tenant to the server it is on.
pub(crate) async fn recover(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    started: Instant,
) -> Result<Option<Moved>, Error> {
    let Some(j) = registry.move_journal(tenant.id).await? else {
        return Ok(None);
    };
    agrees(&j, tenant, registry)?;
    // What could not be done on the target stops the rerun, unless the move is to be
    // undone: the undo puts the source back first, whatever the target says.
    let target_problem = online::cleanup_parts(cx, &j, tenant.id).await?;
    let mut how = settle(cx, &j, tenant, to).await?;
    if let (Some(e), false) = (target_problem, how == Settle::Undo) {
        return Err(e);
    }
    if how == Settle::Switch {
        let run = scheduler::OwnRun::new()?;
        let event = run.event(
            "move (finished)",
            tenant.current_revision,
            OffsetDateTime::now_utc(),
        );
        registry.switch_server(tenant.id, &j, &event).await?;
        how = Settle::Finish;
    }
    let mut left = None;
    if how == Settle::Undo {
        match undo(cx, registry, tenant, &j).await? {
            // The registry switched meanwhile: finish instead.
            Undone::Switched => how = Settle::Finish,
            Undone::Done(l) => left = l,
        }
    }
    if how == Settle::Finish {
        let finished = finish_switched(cx, registry, tenant, &j, started).await?;
        if j.to_server == to {
            return Ok(Some(finished));
        }
        return Err(Error::failed(format!(
            "{}; tenant {} was not moved on to server {to}: run the command again for that",
            finished.message, tenant.domain
        )));
    }
    if to != tenant.server {
        return Ok(None);
    }
    Ok(Some(Moved::stayed(
        tenant,
        started,
        match left {
            None => format!(
                "undid the interrupted move of tenant {} to server {}: its partial copy there was dropped, and the tenant stays on server {} as it was",
                tenant.domain, j.to_server, tenant.server
            ),
            Some(left) => format!(
                "undid the interrupted move of tenant {} to server {}: {left}",
                tenant.domain, j.to_server
            ),
        },
    )))
}

/// Undoes the unswitched move `j`: claims it (so no switch can follow), removes its
/// replication objects, renames a fenced source back, drops the target's copy, and
/// closes the journal. `Ok(false)`, changing nothing, when the registry switched after
/// all (the move must be finished instead).
async fn undo(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    j: &MoveJournal,
) -> Result<Undone, Error> {
    if !registry.claim_undo(tenant.id).await? {
        return Ok(Undone::Switched);
    }
    // The source first: once it is back, the tenant is available whatever the target
    // says.
    let target_problem = online::cleanup_parts(cx, j, tenant.id).await?;
    if fenced(cx, j, &tenant.domain).await? {
        let source = cx.servers.target(&j.from_server)?.connect().await?;
        source
            .batch_execute(&format!(
                "ALTER SCHEMA {} RENAME TO {}",
                quote(&fence_name(&j.schema_name)),
                quote(&j.schema_name)
            ))
            .await
            .map_err(crate::pg::db::query_error(&format!(
                "renaming the fenced old copy back to schema {} on server {} (tenant {} is unavailable until it is)",
                quote(&j.schema_name),
                j.from_server,
                tenant.domain
            )))?;
    }
    let left = format!(
        "tenant {} is back on server {} and available, but its partial copy on server {} (schema {}) is left",
        tenant.domain,
        j.from_server,
        j.to_server,
        quote(&j.schema_name)
    );
    if cx.servers.get(&j.to_server).is_err() {
        // The target was taken out of the configuration: what is left there cannot be
        // reached from here, and the undo is done on the source alone.
        registry.end_move(tenant.id).await?;
        return Ok(Undone::Done(Some(format!(
            "{left}, because server {} is no longer in the configuration: drop that schema there by hand if the server still exists{}",
            j.to_server,
            target_problem
                .map(|e| format!("; {}", e.message().trim_end_matches('.')))
                .unwrap_or_default()
        ))));
    }
    let on_target = match target_problem {
        Some(e) => Err(e),
        None => undo_copy(cx, j, &tenant.domain).await,
    };
    if let Err(e) = on_target {
        // The journal stays (`undoing`): the tenant's other commands wait for the rerun
        // that removes what is left on the target.
        return Err(Error::new(
            e.kind(),
            format!(
                "{left}: {}; run the same `tenant move` again once server {} answers (or take it out of the configuration) to finish the undo",
                e.message().trim_end_matches('.'),
                j.to_server
            ),
        ));
    }
    registry.end_move(tenant.id).await?;
    Ok(Undone::Done(None))
}

/// How an [`undo`] ended.
enum Undone {
    /// The registry had switched: nothing was undone, the move is to be finished.
    Switched,
    /// Undone; with what was left behind and why, when something was.
    Done(Option<String>),
}

/// Drops the target's partial copy of an interrupted move, under that schema's lock on
/// the target: a session a killed move left loading it (it holds the lock until the
/// server notices its client is gone) is waited for, never raced.
pub(crate) async fn undo_copy(
    cx: &Context<'_>,
    j: &MoveJournal,
    domain: &str,
) -> Result<(), Error> {
    // An undo runs to its end whatever stop was asked for (it is what a stop asks for);
    // a second signal ends the process.
    let calm = crate::pg::interrupt::Interrupt::new();
    let cx = &Context {
        interrupt: &calm,
        ..*cx
    };
    let (pool, session) = tenant::locked_schema(cx, &j.to_server, &j.schema_name, domain).await?;
    let dropped = session
        .client()
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&j.schema_name)
        ))
        .await
        .map_err(crate::pg::db::query_error(&format!(
            "dropping the partial copy of schema {} on server {}",
            quote(&j.schema_name),
            j.to_server
        )));
    session.close(&pool).await;
    dropped
}

/// Steps 2 to 5 on `session`, the source's locked session. The error says whether the
/// registry was switched.
#[allow(clippy::too_many_arguments)]
async fn copy_and_switch(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    set: &MigrationSet,
    session: &Session<'_>,
    how: &impl Copier,
    started: Instant,
) -> Result<Moved, (Error, bool)> {
    let started_at = OffsetDateTime::now_utc();
    let not_switched = |e: Error| (e, false);
    crate::failpoint!("move.journal-written", not_switched);
    copy::stop_requested(cx).map_err(not_switched)?;
    let copied = how
        .copy(cx, tenant, journal, set, session)
        .await
        .map_err(not_switched)?;
    copy::stop_requested(cx).map_err(not_switched)?;
    let run = scheduler::OwnRun::new().map_err(not_switched)?;
    let event = run.event(how.action(), tenant.current_revision, started_at);
    let kept = switch_over(cx, registry, tenant, journal, session.client(), &event).await?;
    let write_block_ms = copied.fenced_at.elapsed().as_millis() as u64;
    how.after_switch(cx, journal, tenant.id)
        .await
        .map_err(|e| {
            (
                Error::new(
                    e.kind(),
                    format!(
                        "tenant {} moved to server {}, but cleaning up failed: {e}; run the same `tenant move` again to finish",
                        tenant.domain, journal.to_server
                    ),
                ),
                true,
            )
        })?;
    registry.end_move(tenant.id).await.map_err(|e| (e, true))?;
    let old_copy = kept.describe(journal.keep_source);
    let message = how.moved(tenant, journal, &copied, write_block_ms, &old_copy);
    Ok(Moved {
        tenant: tenant.domain.clone(),
        tenant_id: tenant.id,
        domain: tenant.domain.clone(),
        from_server: journal.from_server.clone(),
        to_server: journal.to_server.clone(),
        tables: copied.tables,
        rows: copied.rows,
        write_block_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: kept.kept(),
        catchup_ms: copied.catchup_ms,
        message,
    })
}

/// Steps 3 to 5, shared by both ways of copying, with the source's tables fenced in the
/// transaction open on `client` and the target's copy complete: the old copy is renamed
/// to the fence name and committed (writers that waited fail; nothing writes to it
/// again), the registry is switched, and the old copy is removed.
pub(crate) async fn switch_over(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    client: &Client,
    event: &Event<'_>,
) -> Result<OldCopy, (Error, bool)> {
    let schema = &tenant.schema_name;
    // The last moment to stop: from the fence's commit on, the move is finished.
    copy::stop_requested(cx).map_err(|e| (e, false))?;
    // The registry must answer now: fenced, the tenant is unavailable until the switch,
    // which a registry that went away would put off until a rerun.
    match registry.move_journal(tenant.id).await {
        Ok(Some(j)) if j.phase == "copying" => {}
        Ok(_) => {
            return Err((
                Error::failed(format!(
                    "the move's journal row for tenant {} changed while it copied (another command settled it); nothing was fenced",
                    tenant.domain
                )),
                false,
            ))
        }
        Err(e) => return Err((e, false)),
    }
    // Something outside the schema that came to depend on it during the copy would go
    // on using the old copy: the move is undone instead. Read with a snapshot of now
    // (the fenced transaction's snapshot predates the copy).
    let fresh = async {
        let now = cx.servers.target(&journal.from_server)?.connect().await?;
        now.batch_execute("BEGIN")
            .await
            .map_err(crate::pg::db::query_error(
                "looking for objects that depend on the tenant",
            ))?;
        let found = refuse_dependents(&now, schema, tenant.id).await;
        let _ = now.batch_execute("ROLLBACK").await;
        found
    };
    fresh.await.map_err(|e| (e, false))?;
    client
        .batch_execute(&format!(
            "ALTER SCHEMA {} RENAME TO {}; COMMIT",
            quote(schema),
            quote(&fence_name(schema))
        ))
        .await
        .map_err(|e| {
            (
                crate::pg::db::query_error(&format!(
                    "fencing the old copy of schema {} on server {}",
                    quote(schema),
                    journal.from_server
                ))(e),
                false,
            )
        })?;
    crate::failpoint!("move.source-fenced", |e: Error| {
        (
        Error::new(
            e.kind(),
            format!(
                "{e} (the old copy was already fenced as schema {}: tenant {} is unavailable until the move is finished or undone)",
                quote(&fence_name(schema)),
                tenant.domain
            ),
        ),
        false
    )
    });
    registry
        .switch_server(tenant.id, journal, event)
        .await
        .map_err(|e| {
            (
                Error::new(
                    e.kind(),
                    format!(
                        "{e} (the old copy was already fenced as schema {} on server {}: tenant {} is unavailable until the move is finished or undone)",
                        quote(&fence_name(schema)),
                        journal.from_server,
                        tenant.domain
                    ),
                ),
                false,
            )
        })?;
    crate::failpoint!("move.switched", |e| (e, true));
    if let Ok(target) = cx.servers.target(&journal.to_server) {
        if let Ok(client) = target.connect().await {
            crate::data::index_tenant(cx, &client, &journal.to_server, schema).await;
        }
    }
    remove_old_copy(cx, journal).await.map_err(|e| {
        (
            Error::new(
                e.kind(),
                format!(
                    "tenant {} now lives on server {} (the registry was switched), but {e}; run the same `tenant move` again to remove the old copy",
                    tenant.domain, journal.to_server
                ),
            ),
            true,
        )
    })
}

/// Removes the fenced old copy of move `j` from its source (step 5): dropped, or renamed
/// to [`kept_name`] with `keep_source` or when sessions reading it hold the drop back.
/// An old copy still under the tenant's own schema name (a move interrupted by an
/// earlier tenantctl, which fenced after the switch) is renamed, never dropped: writes
/// may have reached it after the switch.
async fn remove_old_copy(cx: &Context<'_>, j: &MoveJournal) -> Result<OldCopy, Error> {
    let source = cx.servers.target(&j.from_server)?.connect().await?;
    let moving = fence_name(&j.schema_name);
    let doing = format!(
        "removing the old copy of schema {} on server {}",
        quote(&j.schema_name),
        j.from_server
    );
    let (old, legacy) = if crate::engine::dependents::contents(&*source, &moving)
        .await?
        .exists
    {
        (moving, false)
    } else if crate::engine::dependents::contents(&*source, &j.schema_name)
        .await?
        .exists
    {
        (j.schema_name.clone(), true)
    } else {
        return Ok(OldCopy::Gone);
    };
    let kept = kept_name(&j.schema_name);
    let rename = format!("ALTER SCHEMA {} RENAME TO {}", quote(&old), quote(&kept));
    if j.keep_source || legacy {
        source
            .batch_execute(&rename)
            .await
            .map_err(crate::pg::db::query_error(&doing))?;
        crate::failpoint!("move.old-copy-removed");
        return Ok(if legacy {
            OldCopy::Suspect(kept)
        } else {
            OldCopy::Kept(kept)
        });
    }
    // In one transaction: the old copy's tables locked (no view can come to read them
    // meanwhile), nothing outside it found depending on it, then the drop. A drop needs
    // every table's strongest lock, which a session reading the old copy (an open
    // transaction) holds back: past the drop's wait it is renamed instead, as it is when
    // something outside depends on it (a drop would cascade into it).
    let removed = match drop_unless_depended_on(&source, &old).await {
        Ok(None) => OldCopy::Dropped,
        Ok(Some(why)) => {
            let _ = source.batch_execute("ROLLBACK").await;
            source
                .batch_execute(&rename)
                .await
                .map_err(crate::pg::db::query_error(&doing))?;
            match why {
                Some(dependents) => OldCopy::Depended(kept, dependents),
                None => OldCopy::Kept(kept),
            }
        }
        Err(e) => {
            let _ = source.batch_execute("ROLLBACK").await;
            return Err(crate::pg::db::query_error(&doing)(e));
        }
    };
    crate::failpoint!("move.old-copy-removed");
    Ok(removed)
}

/// Drops schema `old` with its tables locked first and nothing outside it depending on
/// it, in one transaction: `Ok(None)` once dropped; `Ok(Some(None))` when readers held
/// the locks past the drop's wait, `Ok(Some(Some(list)))` when objects outside depend on
/// it (the transaction is then left for the caller to roll back).
async fn drop_unless_depended_on(
    source: &Client,
    old: &str,
) -> Result<Option<Option<String>>, tokio_postgres::Error> {
    let tables: Vec<String> = source
        .query(
            "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            &[&old],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        crate::engine::plan::DROP_WAIT_MS
    );
    if !tables.is_empty() {
        begin.push_str(&format!(
            "; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ));
    }
    match source.batch_execute(&begin).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(Some(None))
        }
        Err(e) => return Err(e),
    }
    match crate::engine::dependents::outside(&**source, old).await {
        Ok(d) if !d.is_empty() => {
            let list: Vec<String> = d.iter().map(|x| x.object.clone()).collect();
            return Ok(Some(Some(crate::error::listed(&list, 5))));
        }
        Ok(_) => {}
        // Not known: kept rather than dropped.
        Err(_) => return Ok(Some(Some("(they could not be read)".to_string()))),
    }
    match source
        .batch_execute(&format!("DROP SCHEMA {} CASCADE; COMMIT", quote(old)))
        .await
    {
        Ok(()) => Ok(None),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Ok(Some(None))
        }
        Err(e) => Err(e),
    }
}

/// Refuses when objects outside `schema` depend on it (in `client`'s transaction).
pub(crate) async fn refuse_dependents(
    client: &Client,
    schema: &str,
    tenant_id: i64,
) -> Result<(), Error> {
    // An online move's own publication lists the tables until the fence's commit drops
    // it: it does not count.
    let own = online::replication_name(tenant_id);
    let blocking: Vec<_> = crate::engine::dependents::outside(&**client, schema)
        .await?
        .into_iter()
        .filter(|d| !names(&d.object, &own))
        .collect();
    if blocking.is_empty() {
        return Ok(());
    }
    Err(Error::refused(crate::engine::plan::data_blocked(
        schema, &blocking, "move",
    )))
}

/// Writes what the registry caches of the tenant (provisioned, revision) from its schema
/// on `j`'s target, where it now lives: a command that read the tenant while its move
/// was unfinished may have cached what the fenced source showed. Best effort: the next
/// reading command does it otherwise.
async fn refresh_cache(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    j: &MoveJournal,
) {
    let Ok(target) = cx.servers.target(&j.to_server) else {
        return;
    };
    let Ok(client) = target.connect().await else {
        return;
    };
    let Ok(mut states) = crate::registry::state::observe(
        &client,
        std::slice::from_ref(&j.schema_name),
        &cx.settings.history_table,
    )
    .await
    else {
        return;
    };
    if let Some(state) = states.remove(&j.schema_name) {
        let _ = crate::registry::record_with(
            registry.client(),
            registry.tables(),
            tenant.id,
            &crate::registry::Observed::of(&state),
            crate::registry::Outcome::Unchanged,
            None,
        )
        .await;
    }
}

/// Finishes a move whose registry switch committed: removes the old copy if it is still
/// there, cleans up replication leftovers, and closes the journal.
pub(crate) async fn finish_switched(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    j: &MoveJournal,
    started: Instant,
) -> Result<Moved, Error> {
    let kept = remove_old_copy(cx, j).await?;
    online::after_switch(cx, j, tenant.id).await?;
    refresh_cache(cx, registry, tenant, j).await;
    registry.end_move(tenant.id).await?;
    let message = format!(
        "finished the interrupted move of tenant {} from server {} to server {}: the old copy was {}",
        tenant.domain,
        j.from_server,
        j.to_server,
        kept.describe(j.keep_source)
    );
    Ok(Moved {
        tenant: tenant.domain.clone(),
        tenant_id: tenant.id,
        domain: tenant.domain.clone(),
        from_server: j.from_server.clone(),
        to_server: j.to_server.clone(),
        tables: 0,
        rows: Some(0),
        write_block_ms: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: j.keep_source || kept.kept(),
        catchup_ms: None,
        message,
    })
}

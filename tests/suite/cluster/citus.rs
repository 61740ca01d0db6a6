//! A throwaway Citus cluster: a coordinator and two workers, each a [`Cluster`] of its own
//! on 127.0.0.1 with `shared_preload_libraries = 'citus'` and
//! `citus.enable_schema_based_sharding = on`, trust authentication between them, the
//! `citus` extension created in the `postgres` database of each, the coordinator
//! registered with `citus_set_coordinator_host` and each worker with `citus_add_node`.
//!
//! Citus must be installed in the server binaries' PostgreSQL (`scripts/install-test-deps`
//! builds it as root); when it is not, starting a cluster panics saying so: Citus tests
//! never skip. Dropping the cluster stops and removes all three servers.

use std::path::PathBuf;
use std::process::Command;

use super::{server_bin_dir, Cluster, ServerCert, Setup};

/// What every node's postgresql.conf gets beyond the test settings.
const CONF: &str = "shared_preload_libraries = 'citus'\n\
                    citus.enable_schema_based_sharding = on\n\
                    max_connections = 100\n";

/// A running coordinator with two workers.
pub struct CitusCluster {
    /// The node tenantctl connects to (its registry lives there too).
    pub coordinator: Cluster,
    /// The workers, which hold the tenants' shards.
    pub workers: Vec<Cluster>,
}

/// Where the server binaries' PostgreSQL keeps extension libraries: `pg_config
/// --pkglibdir` of the `pg_config` beside the real `initdb` (PATH may hold a symlink to
/// it), else the `lib` directory beside that `bin` (Debian's layout).
fn pkglibdir() -> PathBuf {
    let initdb = server_bin_dir().join("initdb");
    let bin = std::fs::canonicalize(&initdb)
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(server_bin_dir);
    let pg_config = bin.join("pg_config");
    if let Ok(out) = Command::new(&pg_config).arg("--pkglibdir").output() {
        if out.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    bin.parent().unwrap_or(&bin).join("lib")
}

/// Panics with what to do when Citus is not installed.
fn require_citus() {
    let lib = pkglibdir().join("citus.so");
    assert!(
        lib.is_file(),
        "Citus is not installed ({} is missing): the Citus tests need it. Install it with \
         `sudo scripts/install-test-deps` (it builds Citus from the source kit in \
         $TENANTCTL_CITUS_SRC or ../shared/citus beside the repository)",
        lib.display()
    );
}

impl CitusCluster {
    /// Starts the three servers and joins them into one cluster; panics with the reason
    /// when any step fails.
    pub fn start() -> CitusCluster {
        require_citus();
        let setup = Setup {
            ssl: false,
            server_cert: ServerCert::Localhost,
            hba: &["local all all trust", "host all all 127.0.0.1/32 trust"],
        };
        let coordinator = Cluster::start_with(&setup, CONF);
        let workers: Vec<Cluster> = (0..2).map(|_| Cluster::start_with(&setup, CONF)).collect();
        for node in std::iter::once(&coordinator).chain(&workers) {
            client_of(node)
                .batch_execute("CREATE EXTENSION citus")
                .unwrap_or_else(|e| panic!("CREATE EXTENSION citus on port {}: {e}", node.port));
        }
        let mut c = client_of(&coordinator);
        c.execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
            &[&i32::from(coordinator.port)],
        )
        .unwrap_or_else(|e| panic!("citus_set_coordinator_host: {e}"));
        for w in &workers {
            c.execute(
                "SELECT citus_add_node('127.0.0.1', $1)",
                &[&i32::from(w.port)],
            )
            .unwrap_or_else(|e| panic!("citus_add_node for port {}: {e}", w.port));
        }
        CitusCluster {
            coordinator,
            workers,
        }
    }

    /// The coordinator's `postgres` database, as tenantctl is given it.
    pub fn url(&self) -> String {
        self.coordinator.url("")
    }

    /// A plain client on the coordinator, for checking what tenantctl did.
    pub fn client(&self) -> postgres::Client {
        client_of(&self.coordinator)
    }

    /// A plain client on worker `i`.
    pub fn worker_client(&self, i: usize) -> postgres::Client {
        client_of(&self.workers[i])
    }

    /// The workers as `HOST:PORT`, as the coordinator's `pg_dist_node` names them.
    pub fn worker_nodes(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|w| format!("127.0.0.1:{}", w.port))
            .collect()
    }
}

fn client_of(node: &Cluster) -> postgres::Client {
    postgres::Client::connect(&node.url(""), postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the node on port {}: {e}", node.port))
}

//! The servers tenants live on: each one's connection target and share of a bulk run,
//! and the rule that places a new tenant.
//!
//! `default` is the registry's own database (`database.url`); other servers are
//! `[servers.NAME]` tables in `tenants.toml`. The registry records each tenant's server;
//! a tenant's lock, schema and history live on its server, while the registry (and every
//! write to it) stays on `default`.

use std::collections::HashMap;

use crate::config::{Server, Settings, DEFAULT_SERVER};
use crate::error::Error;
use crate::ident;
use crate::pg::db::Target;

/// Every configured server with its connection target, `default` first.
#[derive(Debug, Clone)]
pub struct Servers {
    list: Vec<(Server, Target)>,
}

impl Servers {
    /// The servers in `settings`, each with its target resolved (no connection yet).
    pub fn resolve(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Servers, Error> {
        let list = settings
            .servers
            .iter()
            .map(|s| {
                let target = Target::resolve(&settings.for_server(s), env)?.named(&s.name);
                Ok((s.clone(), target))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Servers { list })
    }

    /// These servers with their reads bounded by `limit` (see [`crate::pg::db::read`]).
    pub fn with_read_timeout(self, limit: std::time::Duration) -> Servers {
        Servers {
            list: self
                .list
                .into_iter()
                .map(|(s, t)| (s, t.with_read_timeout(limit)))
                .collect(),
        }
    }

    /// These servers with `name`'s target replaced by `target` (a scratch instance
    /// standing in for it).
    pub fn replacing(&self, name: &str, target: Target) -> Servers {
        Servers {
            list: self
                .list
                .iter()
                .map(|(s, t)| {
                    let t = if s.name == name {
                        target.clone()
                    } else {
                        t.clone()
                    };
                    (s.clone(), t)
                })
                .collect(),
        }
    }

    /// Every server, `default` first, then by name.
    pub fn iter(&self) -> impl Iterator<Item = &(Server, Target)> {
        self.list.iter()
    }

    /// The server named `name`, or an error naming the configured ones.
    pub fn get(&self, name: &str) -> Result<&(Server, Target), Error> {
        self.list.iter().find(|(s, _)| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.list.iter().map(|(s, _)| s.name.as_str()).collect();
            let near = known
                .iter()
                .filter(|k| strsim::osa_distance(name, k) <= 2 && !name.is_empty())
                .min_by_key(|k| strsim::osa_distance(name, k))
                .map(|k| format!("did you mean {k}? "))
                .unwrap_or_default();
            Error::usage(format!(
                "server {} is not configured (add a [servers.NAME] table to tenants.toml); {near}the servers are: {}",
                ident::shown(name),
                known.join(", ")
            ))
        })
    }

    /// The connection target of the server named `name`.
    pub fn target(&self, name: &str) -> Result<&Target, Error> {
        Ok(&self.get(name)?.1)
    }

    /// The registry's server.
    pub fn default_target(&self) -> &Target {
        &self.list[0].1
    }

    /// Whether there is more than the default server.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// Where a new tenant goes: the server with the fewest registered tenants per unit of
    /// weight, among those with a weight above 0; ties go to the first by name (`default`
    /// first). `counts` is the number of tenants per server.
    pub fn place(&self, counts: &HashMap<String, i64>) -> Result<&str, Error> {
        self.list
            .iter()
            .filter(|(s, _)| s.weight > 0)
            .min_by(|(a, _), (b, _)| {
                let load = |s: &Server| {
                    counts.get(&s.name).copied().unwrap_or(0) as f64 / f64::from(s.weight)
                };
                load(a)
                    .partial_cmp(&load(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(s, _)| s.name.as_str())
            .ok_or_else(|| {
                Error::setup(
                    "no server takes new tenants: every server has weight 0; name one with --server",
                )
            })
    }
}

/// Whether `name` is the registry's server.
pub fn is_default(name: &str) -> bool {
    name == DEFAULT_SERVER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(spec: &[(&str, u32)]) -> Servers {
        let mut text = String::new();
        for (name, weight) in spec {
            if *name == "default" {
                text.push_str(&format!("[servers.default]\nweight = {weight}\n"));
            } else {
                text.push_str(&format!(
                    "[servers.{name}]\nurl = \"postgres://u@{name}/app\"\nweight = {weight}\n"
                ));
            }
        }
        let file = crate::config::parse_file(&text).expect("a valid file");
        let settings = crate::config::resolve(
            &crate::config::Overrides {
                database_url: Some("postgres://u@registry/app".into()),
                ..Default::default()
            },
            &|_| None,
            std::path::Path::new("/"),
            Some((std::path::PathBuf::from("/tenants.toml"), file)),
        )
        .expect("settings");
        Servers::resolve(&settings, &|_| None).expect("servers")
    }

    #[test]
    fn new_tenants_go_where_there_are_fewest_per_unit_of_weight() {
        let s = servers(&[("eu2", 1), ("us1", 2)]);
        let counts = |v: &[(&str, i64)]| -> HashMap<String, i64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        // All empty: the first by name, default first.
        assert_eq!(s.place(&counts(&[])).unwrap(), "default");
        assert_eq!(s.place(&counts(&[("default", 1)])).unwrap(), "eu2");
        // us1 has twice the weight: 3 tenants there weigh 1.5, less than 2 elsewhere.
        assert_eq!(
            s.place(&counts(&[("default", 2), ("eu2", 2), ("us1", 3)]))
                .unwrap(),
            "us1"
        );
        assert_eq!(
            s.place(&counts(&[("default", 2), ("eu2", 2), ("us1", 4)]))
                .unwrap(),
            "default"
        );
    }

    #[test]
    fn weight_zero_takes_no_new_tenants() {
        let s = servers(&[("default", 0), ("eu2", 1)]);
        assert_eq!(s.place(&HashMap::new()).unwrap(), "eu2");
        let none = servers(&[("default", 0)]);
        assert!(none.place(&HashMap::new()).is_err());
    }

    #[test]
    fn an_unknown_server_is_named_with_the_known_ones() {
        let s = servers(&[("eu2", 1)]);
        let e = s.get("nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("default, eu2"), "{e}");
        assert!(s.get("eu2").is_ok());
    }
}

//! libpq's connection conventions that tokio-postgres leaves to its caller, read as libpq
//! reads them, so that a DBA's psql environment reaches the same server, database and
//! user: connection service files (`service=` in a URL or a `key=value` string,
//! `PGSERVICE`, `PGSERVICEFILE` or `~/.pg_service.conf`, then
//! `PGSYSCONFDIR/pg_service.conf`), the password file (`passfile=`, `PGPASSFILE` or
//! `~/.pgpass`, with libpq's matching and its rule that a file others may read is not
//! used), and the parameters tokio-postgres cannot take, split from the rest.
//!
//! A libpq parameter tenantctl does not support (Kerberos, CRLs, ...) is refused with its
//! name, never ignored.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Parameters tenantctl reads itself; the rest of a connection string goes to
/// tokio-postgres.
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "service",
    "passfile",
];

/// libpq parameters tenantctl does not support: refused with their name.
const UNSUPPORTED: &[&str] = &[
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "gssencmode",
    "gsslib",
    "krbsrvname",
    "gssdelegation",
    "require_auth",
    "replication",
];

/// The parameters a connection string holds that tenantctl reads itself, and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// The string without them, for tokio-postgres.
    pub rest: String,
    /// Each of [`OURS`] that was given, by name (the last one wins, as in libpq).
    pub ours: Vec<(String, String)>,
}

impl Split {
    /// The value of one of [`OURS`], if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.ours
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a URL (`postgres://...?k=v&...`) or a `key=value` string into what tenantctl
/// reads and the rest; an unsupported libpq parameter is an error naming it.
pub fn split(conninfo: &str) -> Result<Split, String> {
    let is_url = conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://");
    if is_url {
        return split_url(conninfo);
    }
    split_keywords(conninfo)
}

/// The parameters tokio-postgres takes from a connection string, as libpq names them.
const PASSED_ON: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// Refuses, naming it, a parameter tenantctl cannot use, and a value of
/// `target_session_attrs` or `connect_timeout` it cannot take.
fn refuse(key: &str, value: &str) -> Result<(), String> {
    if UNSUPPORTED.contains(&key) {
        return Err(format!(
            "the libpq parameter {key} is not supported by tenantctl; remove it (Kerberos, certificate revocation lists and the other parameters of this kind cannot be used)"
        ));
    }
    if !OURS.contains(&key) && !PASSED_ON.contains(&key) {
        // Named only when it reads as a parameter name: anything else may be a piece of
        // a mistyped URL, password and all, and is never quoted.
        let named = !key.is_empty()
            && key.len() <= 40
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        return Err(if named {
            format!("the connection parameter {key} is not supported by tenantctl; remove it")
        } else {
            "a parameter name is not one libpq defines (nothing of the string is shown: it may hold a password)".to_string()
        });
    }
    match key {
        "target_session_attrs" if !matches!(value, "any" | "read-write") => Err(format!(
            "target_session_attrs={value} is not supported by tenantctl: use any or read-write"
        )),
        "connect_timeout" if value.trim().parse::<i64>().is_err() => {
            Err("connect_timeout must be a whole number of seconds".to_string())
        }
        _ => Ok(()),
    }
}

fn split_url(url: &str) -> Result<Split, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Split {
            rest: url.to_string(),
            ours: Vec::new(),
        });
    };
    let mut ours = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        refuse(k, &percent_decode(v))?;
        if OURS.contains(&k) {
            ours.push((k.to_string(), percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Split { rest, ours })
}

/// Splits a libpq `key=value` string (values bare, or single-quoted with `\'` and `\\`),
/// keeping each other pair's text as written.
fn split_keywords(s: &str) -> Result<Split, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut ours = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    let space = |c: u8| c.is_ascii_whitespace();
    loop {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !space(b[i]) {
            i += 1;
        }
        let key = &s[start..i];
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        // Nothing of the string is quoted in these errors: it may hold a password.
        if i >= b.len() || b[i] != b'=' {
            return Err(format!(
                "the word at character {} has no \"=\" (libpq's form is key=value ...)",
                start + 1
            ));
        }
        i += 1;
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        return Err(format!(
                            "the quoted value that starts at character {} is not closed",
                            start + 1
                        ))
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !space(b[i]) {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        refuse(key, &String::from_utf8_lossy(&value))?;
        if OURS.contains(&key) {
            ours.push((
                key.to_string(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        } else {
            kept.push(&s[start..i]);
        }
    }
    Ok(Split {
        rest: kept.join(" "),
        ours,
    })
}

/// Decodes `%XX` escapes in a URL query value (others are kept as written).
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The home directory, as libpq finds `~/.pgpass` and `~/.pg_service.conf`.
fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// The parameters of service `name`: from `PGSERVICEFILE` (else `~/.pg_service.conf`)
/// when it defines the service there, else from `PGSYSCONFDIR/pg_service.conf` (else
/// Debian's `/etc/postgresql-common/pg_service.conf`), as libpq looks. A service defined
/// nowhere, a file that cannot be read, a line that is not `key=value`, and a parameter
/// tenantctl does not support are errors naming the file and line.
pub fn service(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, Error> {
    let user = env("PGSERVICEFILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".pg_service.conf")));
    let system = env("PGSYSCONFDIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("pg_service.conf"))
        .unwrap_or_else(|| PathBuf::from("/etc/postgresql-common/pg_service.conf"));
    let mut looked = Vec::new();
    for file in user.into_iter().chain(std::iter::once(system)) {
        if !file.exists() {
            looked.push(file.display().to_string());
            continue;
        }
        if let Some(params) = service_in(&file, name)? {
            return Ok(params);
        }
        looked.push(file.display().to_string());
    }
    Err(Error::setup(format!(
        "definition of service {} not found (looked in {})",
        crate::ident::shown(name),
        looked.join(", ")
    )))
}

/// Service `name`'s parameters in one service file, if it defines it.
fn service_in(file: &Path, name: &str) -> Result<Option<Vec<(String, String)>>, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::setup(format!("cannot read service file {}: {e}", file.display())))?;
    let mut current: Option<&str> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", file.display(), i + 1);
        if let Some(section) = line.strip_prefix('[') {
            let Some(section) = section.strip_suffix(']') else {
                return Err(Error::setup(format!(
                    "{}: a section is written [name]",
                    at()
                )));
            };
            if found.is_some() {
                break;
            }
            current = Some(section);
            if section == name {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::setup(format!(
                "{}: expected key=value (the file is never quoted here, it may hold a password)",
                at()
            )));
        };
        if current != Some(name) {
            continue;
        }
        let k = k.trim();
        refuse(k, v.trim()).map_err(|e| Error::setup(format!("{}: {e}", at())))?;
        if k == "service" {
            return Err(Error::setup(format!(
                "{}: a service cannot name another service",
                at()
            )));
        }
        if let Some(params) = found.as_mut() {
            params.push((k.to_string(), v.trim().to_string()));
        }
    }
    Ok(found)
}

/// Where the password file is: `passfile`, else `PGPASSFILE`, else `~/.pgpass`.
pub fn password_file(
    passfile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    passfile
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("PGPASSFILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| home(env).map(|h| h.join(".pgpass")))
}

/// What a password file gave: the password of the first line that matches, or why the
/// file was not used (said when the server then asks for a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromFile {
    /// The password of the first matching line.
    Password(String),
    /// No line matched, or there is no file.
    None,
    /// The file was not used, and why (libpq's reasons: readable by group or others,
    /// not a plain file).
    Unused(String),
}

/// Looks up `host:port:database:user` in the password file at `path` as libpq does:
/// fields separated by `:` (`\:` and `\\` escaped), `*` matching anything, the first
/// matching line winning, a Unix-socket host matched as `localhost`; a file that group
/// or others may read, or that is not a plain file, is not used.
pub fn password_in(path: &Path, host: &str, port: u16, database: &str, user: &str) -> FromFile {
    let Ok(meta) = std::fs::metadata(path) else {
        return FromFile::None;
    };
    if !meta.is_file() {
        return FromFile::Unused(format!(
            "the password file {} is not a plain file",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return FromFile::Unused(format!(
                "the password file {} has group or world access (mode {:04o}); as libpq does, it is not used: chmod 0600 it",
                path.display(),
                mode & 0o7777
            ));
        }
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return FromFile::Unused(format!(
            "the password file {} cannot be read",
            path.display()
        ));
    };
    let host = if host.starts_with('/') || host.is_empty() {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = wanted
            .iter()
            .zip(&fields[..4])
            .all(|(w, f)| f == "*" || f == w);
        if matches {
            return FromFile::Password(fields[4..].join(":"));
        }
    }
    FromFile::None
}

/// A password file line's fields: split at `:`, with `\:` and `\\` unescaped.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("one field").push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut().expect("one field").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_are_split_from_urls_and_keyword_strings() {
        let s = split("postgres://u@h/db?service=eu&application_name=x&sslmode=require").unwrap();
        assert_eq!(s.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(s.get("service"), Some("eu"));
        assert_eq!(s.get("sslmode"), Some("require"));
        let s = split("host=h  service = 'my svc' user=u password='a\\'b c' passfile=/p sslcert=/c sslpassword=pw").unwrap();
        assert_eq!(s.rest, "host=h user=u password='a\\'b c'");
        assert_eq!(s.get("service"), Some("my svc"));
        assert_eq!(s.get("passfile"), Some("/p"));
        assert_eq!(s.get("sslcert"), Some("/c"));
        assert_eq!(s.get("sslpassword"), Some("pw"));
        for bad in [
            "postgres://h/db?sslcrl=/c.pem",
            "host=h krbsrvname=k",
            "host=h gssencmode=require",
        ] {
            let e = split(bad).unwrap_err();
            assert!(e.contains("not supported"), "{bad}: {e}");
        }
        assert!(split("host").is_err());
        assert!(split("host='h").is_err());
    }

    #[test]
    fn a_password_file_matches_as_libpq_does() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pgpass");
        std::fs::write(
            &p,
            "# comment\nother:5432:*:u:no\nlocalhost:5432:app:u:sock\\:et\n*:*:*:u:any:thing\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            password_in(&p, "/var/run/postgresql", 5432, "app", "u"),
            FromFile::Password("sock:et".into())
        );
        assert_eq!(
            password_in(&p, "db.internal", 6432, "x", "u"),
            FromFile::Password("any:thing".into())
        );
        assert_eq!(password_in(&p, "h", 5432, "x", "v"), FromFile::None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                password_in(&p, "h", 5432, "x", "u"),
                FromFile::Unused(m) if m.contains("chmod 0600")
            ));
        }
    }

    #[test]
    fn a_service_is_read_from_the_users_file_then_the_systems() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("user.conf");
        std::fs::write(&user, "[a]\nhost=h1\nport=6000\n\n[b]\ndbname=x\n").unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/pg_service.conf"),
            "# system\n[c]\nuser=sys\n",
        )
        .unwrap();
        let u = user.display().to_string();
        let etc = d.path().join("etc").display().to_string();
        let env = move |k: &str| match k {
            "PGSERVICEFILE" => Some(u.clone()),
            "PGSYSCONFDIR" => Some(etc.clone()),
            _ => None,
        };
        assert_eq!(
            service("a", &env).unwrap(),
            vec![("host".into(), "h1".into()), ("port".into(), "6000".into())]
        );
        assert_eq!(
            service("c", &env).unwrap(),
            vec![("user".into(), "sys".into())]
        );
        let e = service("nope", &env).unwrap_err();
        assert!(e.to_string().contains("definition of service"), "{e}");
        std::fs::write(&user, "[a]\nsslcrl=/c\n").unwrap();
        assert!(service("a", &env)
            .unwrap_err()
            .to_string()
            .contains("sslcrl"));
    }
}

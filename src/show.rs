//! How values are shown to people, the same on every face: revisions (`base` for none),
//! times (RFC 3339 in UTC to the second, or what the registry stores when that is no
//! time), yes/no, and the time-stamped line of a long-running command's log.

/// A timestamp for people: RFC 3339 in UTC, to the second.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A time read from the registry, for people: RFC 3339 in UTC to the second, else what
/// is stored (`infinity`, a year past 9999), and `null` for a NULL.
pub fn stored_time(t: Option<&crate::timestamp::Timestamp>) -> String {
    t.map_or_else(|| "null".to_string(), ToString::to_string)
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A revision for people: the number, or `base` when nothing is applied.
pub fn revision(r: Option<i32>) -> String {
    r.map_or_else(|| "base".to_string(), |v| v.to_string())
}

/// Versions as a list for people: `2,3,4` (empty for none).
pub fn versions(v: &[i32]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A size in bytes for people: `16 KiB`, `31.3 MiB`, `1.2 GiB` (powers of 1024).
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// A count with its noun, singular for one: `1 tenant`, `2 tenants`, `0 tenants`.
/// `noun` is the singular; its plural adds `s`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line of a long-running command's log, with the time (UTC) first.
pub fn log_line(text: &str) -> String {
    format!("{} {text}", timestamp(time::OffsetDateTime::now_utc()))
}

//! The dashboard's pictures, drawn on the server as inline SVG (no script, no request of
//! their own): tenants per revision with a segment per server, runs and failures per
//! day, the longest run per day, and the age of the oldest backup per tenant type
//! against its policy. Every bar carries a `<title>` with its numbers (a tooltip, and
//! what a screen reader reads), and each picture has a table of the same numbers beside
//! it on the page.

use std::collections::BTreeMap;

use maud::{html, Markup};
use time::{Duration, OffsetDateTime};

use crate::app::metrics::Backups;
use crate::registry::browse::Day;

/// One colour per server, in the order the servers are listed (repeating past eight).
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac",
];
const FAILED: &str = "#c0392b";
const OK: &str = "#59a14f";
const NEUTRAL: &str = "#4e79a7";

const WIDTH: f64 = 640.0;
const LABEL: f64 = 90.0;
const ROW: f64 = 22.0;

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in seconds, as a person reads it.
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

/// Tenants per revision, one bar per revision with a segment per server.
pub fn revisions(
    by_revision: &BTreeMap<Option<i32>, BTreeMap<String, u64>>,
    servers: &[String],
) -> Markup {
    let max = by_revision
        .values()
        .map(|s| s.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let room = WIDTH - LABEL - 70.0;
    let legend = 24.0;
    let height = legend + ROW * by_revision.len().max(1) as f64 + 4.0;
    let index = |s: &str| servers.iter().position(|x| x == s).unwrap_or(servers.len());
    // Each revision's segments, in the servers' order: (server, tenants, x, width), and
    // where the bar ends.
    type Segment<'a> = (&'a String, u64, f64, f64);
    let rows: Vec<(Option<i32>, u64, Vec<Segment>, f64)> = by_revision
        .iter()
        .map(|(revision, per_server)| {
            let mut ordered: Vec<(&String, u64)> =
                per_server.iter().map(|(s, n)| (s, *n)).collect();
            ordered.sort_by_key(|(s, _)| index(s));
            let mut x = LABEL;
            let segments = ordered
                .into_iter()
                .map(|(server, n)| {
                    let w = room * n as f64 / max as f64;
                    let at = x;
                    x += w;
                    (server, n, at, w)
                })
                .collect();
            (*revision, per_server.values().sum(), segments, x)
        })
        .collect();
    html! {
        svg id="revisions-chart" xmlns="http://www.w3.org/2000/svg" role="img"
            width=(px(WIDTH)) height=(px(height)) viewBox={"0 0 " (px(WIDTH)) " " (px(height))} {
            title { "Tenants per revision and server" }
            @for (i, server) in servers.iter().enumerate() {
                rect x=(px(LABEL + i as f64 * 110.0)) y="4" width="12" height="12" fill=(colour(i)) {}
                text x=(px(LABEL + 16.0 + i as f64 * 110.0)) y="14" font-size="12" { (server) }
            }
            @if by_revision.is_empty() {
                text x=(px(LABEL)) y=(px(legend + 15.0)) font-size="12" fill="#777" { "No tenants." }
            }
            @for (row, (revision, total, segments, end)) in rows.iter().enumerate() {
                @let y = legend + row as f64 * ROW;
                text x=(px(LABEL - 8.0)) y=(px(y + 15.0)) font-size="12" text-anchor="end" {
                    (crate::show::revision(*revision))
                }
                @for (server, n, x, w) in segments {
                    rect class="bar" x=(px(*x)) y=(px(y + 3.0)) width=(px(w.max(1.0))) height=(px(ROW - 6.0))
                        fill=(colour(index(server))) {
                        title { "revision " (crate::show::revision(*revision)) " on " (server) ": " (plural(*n, "tenant", "tenants")) }
                    }
                }
                text x=(px(end + 6.0)) y=(px(y + 15.0)) font-size="12" { (total) }
            }
        }
    }
}

/// The last `days` days (UTC) ending with `today`, each with its runs (zero when none).
fn calendar(days: &[Day], today: OffsetDateTime, n: i32) -> Vec<Day> {
    let by_day: BTreeMap<&str, &Day> = days.iter().map(|d| (d.day.as_str(), d)).collect();
    (0..n)
        .rev()
        .map(|back| {
            let date = (today - Duration::days(i64::from(back))).date();
            let day = format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            );
            by_day.get(day.as_str()).map_or_else(
                || Day {
                    day: day.clone(),
                    runs: 0,
                    failed_runs: 0,
                    failed_tenants: 0,
                    longest: 0.0,
                },
                |d| (*d).clone(),
            )
        })
        .collect()
}

/// Runs per day over the last `n` days (failed runs in red), and the longest run of
/// each day.
pub fn runs(days: &[Day], today: OffsetDateTime, n: i32) -> Markup {
    let days = calendar(days, today, n);
    let height = 120.0;
    let left = 40.0;
    let slot = (WIDTH - left) / days.len().max(1) as f64;
    let most = days.iter().map(|d| d.runs).max().unwrap_or(0).max(1);
    let longest = days.iter().map(|d| d.longest).fold(0.0_f64, f64::max);
    let scale = if longest > 0.0 { longest } else { 1.0 };
    let base = height - 18.0;
    let tall = base - 8.0;
    let first = days.first().map(|d| d.day.clone()).unwrap_or_default();
    let last = days.last().map(|d| d.day.clone()).unwrap_or_default();
    html! {
        svg id="runs-chart" xmlns="http://www.w3.org/2000/svg" role="img"
            width=(px(WIDTH)) height=(px(height)) viewBox={"0 0 " (px(WIDTH)) " " (px(height))} {
            title { "Bulk runs per day, failed runs in red" }
            text x="0" y="12" font-size="11" fill="#777" { (most) }
            text x="0" y=(px(base)) font-size="11" fill="#777" { "0" }
            line x1=(px(left)) y1=(px(base)) x2=(px(WIDTH)) y2=(px(base)) stroke="#ccc" {}
            @for (i, d) in days.iter().enumerate() {
                @let x = left + i as f64 * slot + 1.0;
                @let h_all = tall * d.runs as f64 / most as f64;
                @let h_failed = tall * d.failed_runs as f64 / most as f64;
                @if d.runs > 0 {
                    rect class="bar" x=(px(x)) y=(px(base - h_all)) width=(px(slot - 2.0)) height=(px(h_all - h_failed))
                        fill=(OK) {
                        title { (d.day) ": " (plural(d.runs, "run", "runs")) ", " (d.failed_runs) " failed, "
                            (plural(d.failed_tenants, "tenant", "tenants")) " failed" }
                    }
                    @if d.failed_runs > 0 {
                        rect class="bar failed" x=(px(x)) y=(px(base - h_failed)) width=(px(slot - 2.0)) height=(px(h_failed))
                            fill=(FAILED) {
                            title { (d.day) ": " (d.failed_runs) " of " (plural(d.runs, "run", "runs")) " failed" }
                        }
                    }
                }
            }
            text x=(px(left)) y=(px(height - 2.0)) font-size="11" fill="#777" { (first) }
            text x=(px(WIDTH)) y=(px(height - 2.0)) font-size="11" fill="#777" text-anchor="end" { (last) }
        }
        svg id="durations-chart" xmlns="http://www.w3.org/2000/svg" role="img"
            width=(px(WIDTH)) height=(px(height)) viewBox={"0 0 " (px(WIDTH)) " " (px(height))} {
            title { "The longest bulk run of each day" }
            text x="0" y="12" font-size="11" fill="#777" { (age(longest)) }
            line x1=(px(left)) y1=(px(base)) x2=(px(WIDTH)) y2=(px(base)) stroke="#ccc" {}
            @for (i, d) in days.iter().enumerate() {
                @if d.runs > 0 {
                    @let x = left + i as f64 * slot + 1.0;
                    @let h = (tall * d.longest / scale).max(1.0);
                    rect class="bar" x=(px(x)) y=(px(base - h)) width=(px(slot - 2.0)) height=(px(h)) fill=(NEUTRAL) {
                        title { (d.day) ": longest run " (age(d.longest)) }
                    }
                }
            }
            text x=(px(left)) y=(px(height - 2.0)) font-size="11" fill="#777" { (first) }
            text x=(px(WIDTH)) y=(px(height - 2.0)) font-size="11" fill="#777" text-anchor="end" { (last) }
        }
    }
}

/// The age of each tenant type's oldest last backup, with its policy's interval marked
/// (red past it); a type with tenants never backed up shows a full red bar.
pub fn backups(backups: &[(String, Backups, Option<f64>)], now: f64) -> Markup {
    let ages: Vec<Option<f64>> = backups
        .iter()
        .map(|(_, b, _)| b.oldest.map(|t| (now - t).max(0.0)))
        .collect();
    let scale = ages
        .iter()
        .flatten()
        .copied()
        .chain(backups.iter().filter_map(|(_, _, e)| *e))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let room = WIDTH - LABEL - 210.0;
    let height = ROW * backups.len().max(1) as f64 + 4.0;
    html! {
        svg id="backups-chart" xmlns="http://www.w3.org/2000/svg" role="img"
            width=(px(WIDTH)) height=(px(height)) viewBox={"0 0 " (px(WIDTH)) " " (px(height))} {
            title { "Age of the oldest last backup per tenant type" }
            @if backups.is_empty() {
                text x=(px(LABEL)) y="15" font-size="12" fill="#777" { "No tenants." }
            }
            @for (row, ((kind, b, every), age_s)) in backups.iter().zip(&ages).enumerate() {
                @let y = row as f64 * ROW;
                @let late = b.never > 0 || matches!((age_s, every), (Some(a), Some(e)) if a >= e);
                @let w = match age_s { Some(a) if b.never == 0 => room * a / scale, _ => room };
                text x=(px(LABEL - 8.0)) y=(px(y + 15.0)) font-size="12" text-anchor="end" { (kind) }
                rect class="bar" x=(px(LABEL)) y=(px(y + 3.0)) width=(px(w.max(1.0))) height=(px(ROW - 6.0))
                    fill=(if late { FAILED } else { OK }) {
                    title {
                        (kind) ": "
                        @if b.never > 0 { (plural(b.never, "tenant", "tenants")) " never backed up" }
                        @else if let Some(a) = age_s { "oldest last backup " (age(*a)) " ago" }
                        @else { "no backup" }
                        @if let Some(e) = every { ", policy every " (age(*e)) }
                        ", " (b.overdue) " overdue"
                    }
                }
                @if let Some(e) = every {
                    @let x = LABEL + room * e / scale;
                    line x1=(px(x)) y1=(px(y + 1.0)) x2=(px(x)) y2=(px(y + ROW - 1.0)) stroke="#222" stroke-dasharray="3,2" {}
                }
                text x=(px(LABEL + room + 8.0)) y=(px(y + 15.0)) font-size="12" {
                    @if b.never > 0 { (b.never) " never" }
                    @else if let Some(a) = age_s { (age(*a)) }
                    " · " (b.overdue) " overdue"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_a_person_would() {
        assert_eq!(age(5.0), "5.0 s");
        assert_eq!(age(42.4), "42 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(3.0 * 3600.0), "3.0 h");
        assert_eq!(age(3.0 * 86400.0), "3.0 d");
        assert_eq!(age(-1.0), "0.0 s");
    }

    #[test]
    fn the_calendar_fills_days_without_runs() {
        let today = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        let d = Day {
            day: "2026-05-28".into(),
            runs: 3,
            failed_runs: 1,
            failed_tenants: 2,
            longest: 4.0,
        };
        let days = calendar(std::slice::from_ref(&d), today, 30);
        assert_eq!(days.len(), 30);
        assert_eq!(days.last().unwrap().day, "2026-05-28");
        assert_eq!(days.last().unwrap().runs, 3);
        assert_eq!(days.first().unwrap().day, "2026-04-29");
        assert!(days[..29].iter().all(|d| d.runs == 0));
    }

    #[test]
    fn bars_are_titled_with_their_numbers_and_text_is_escaped() {
        let mut by_revision = BTreeMap::new();
        by_revision.insert(Some(3), BTreeMap::from([("<b>".to_string(), 2u64)]));
        let svg = revisions(&by_revision, &["<b>".to_string()]).into_string();
        assert!(
            svg.contains("<title>revision 3 on &lt;b&gt;: 2 tenants</title>"),
            "{svg}"
        );
        assert!(!svg.contains("<b>"), "{svg}");
    }
}

//! A `timestamptz` as the registry's tables hold it: any value PostgreSQL can store is
//! read without failing, and shown as what it is.
//!
//! PostgreSQL stores times from 4714 BC to 294276 AD, and `infinity` and `-infinity`.
//! RFC 3339 writes years 0000 to 9999 only, and the `time` crate holds years up to 9999.
//! A value outside that (someone wrote `'infinity'`, or a year 20000, by hand) is never
//! turned into another time: it is kept as it is and spelt as PostgreSQL spells it, in
//! UTC (`infinity`, `-infinity`, `20000-01-02T03:04:05Z`, `0044-03-15T12:00:00Z BC`).

use std::fmt;

use serde::{Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio_postgres::types::{FromSql, Type};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_MICROS: i128 = 946_684_800_000_000;

/// Microseconds in a day.
const DAY_MICROS: i128 = 86_400_000_000;

/// A stored `timestamptz` (or `timestamp`, read as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    /// A time RFC 3339 writes: years 1 to 9999.
    At(OffsetDateTime),
    /// `infinity`.
    Infinity,
    /// `-infinity`.
    NegInfinity,
    /// A time outside years 1 to 9999, in microseconds since PostgreSQL's epoch
    /// (2000-01-01 UTC).
    Beyond(i64),
}

impl Timestamp {
    /// The value PostgreSQL sends in binary: microseconds since 2000-01-01 UTC, with
    /// `i64::MAX` and `i64::MIN` for `infinity` and `-infinity`.
    pub fn from_pg_micros(micros: i64) -> Timestamp {
        match micros {
            i64::MAX => return Timestamp::Infinity,
            i64::MIN => return Timestamp::NegInfinity,
            _ => {}
        }
        let unix_nanos = (i128::from(micros) + PG_EPOCH_UNIX_MICROS) * 1000;
        match OffsetDateTime::from_unix_timestamp_nanos(unix_nanos) {
            Ok(t) if (1..=9999).contains(&t.year()) => Timestamp::At(t),
            _ => Timestamp::Beyond(micros),
        }
    }

    /// The time, when it is one RFC 3339 writes.
    pub fn at(&self) -> Option<OffsetDateTime> {
        match self {
            Timestamp::At(t) => Some(*t),
            _ => None,
        }
    }

    /// Seconds since the Unix epoch, when it is a finite time.
    pub fn unix_seconds(&self) -> Option<f64> {
        let micros = match self {
            Timestamp::At(t) => return Some(t.unix_timestamp_nanos() as f64 / 1e9),
            Timestamp::Beyond(m) => i128::from(*m) + PG_EPOCH_UNIX_MICROS,
            Timestamp::Infinity | Timestamp::NegInfinity => return None,
        };
        Some(micros as f64 / 1e6)
    }

    /// Whole milliseconds from `self` to `later` (0 when `later` is earlier), when both
    /// are times RFC 3339 writes.
    pub fn millis_until(&self, later: &Timestamp) -> Option<i64> {
        let ms = (later.at()? - self.at()?).whole_milliseconds();
        i64::try_from(ms.max(0)).ok()
    }

    /// The value as JSON shows it: RFC 3339 in UTC, else PostgreSQL's own spelling.
    fn full(&self) -> String {
        match self {
            Timestamp::At(t) => {
                let t = t.to_offset(UtcOffset::UTC);
                t.format(&Rfc3339).unwrap_or_else(|_| beyond(micros_of(&t)))
            }
            Timestamp::Infinity => "infinity".into(),
            Timestamp::NegInfinity => "-infinity".into(),
            Timestamp::Beyond(m) => beyond(*m),
        }
    }
}

/// Microseconds since PostgreSQL's epoch of a time the `time` crate holds.
fn micros_of(t: &OffsetDateTime) -> i64 {
    let micros = t.unix_timestamp_nanos() / 1000 - PG_EPOCH_UNIX_MICROS;
    i64::try_from(micros).unwrap_or(if micros < 0 {
        i64::MIN + 1
    } else {
        i64::MAX - 1
    })
}

/// A time outside RFC 3339's years, as PostgreSQL spells it (in UTC): the year as it is,
/// `BC` after a year before 1.
fn beyond(pg_micros: i64) -> String {
    let unix = i128::from(pg_micros) + PG_EPOCH_UNIX_MICROS;
    let days = unix.div_euclid(DAY_MICROS);
    let in_day = unix.rem_euclid(DAY_MICROS);
    let (year, month, day) = civil_from_days(days);
    let secs = in_day / 1_000_000;
    let frac = in_day % 1_000_000;
    let (shown_year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    let mut s = format!(
        "{shown_year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s.push_str(era);
    s
}

/// The proleptic Gregorian date (astronomical year: 0 is 1 BC) of a day counted from
/// 1970-01-01.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// For people: RFC 3339 in UTC to the second, else as JSON writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::At(t) => {
                let t = t.to_offset(UtcOffset::UTC);
                let t = t.replace_nanosecond(0).unwrap_or(t);
                f.write_str(&Timestamp::At(t).full())
            }
            Timestamp::Beyond(m) => f.write_str(&beyond(m - m.rem_euclid(1_000_000))),
            other => f.write_str(&other.full()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full())
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "RFC 3339 in UTC with microseconds (2026-12-07T06:59:59.123456Z); \
                `infinity` or `-infinity`; a time outside years 1 to 9999 as PostgreSQL \
                writes it"
        })
    }
}

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<Timestamp, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Timestamp::from_pg_micros(
            postgres_protocol::types::timestamp_from_sql(raw)?,
        ))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP)
    }
}

/// Reads column `c` of `row` as a stored time: `None` for a NULL (or a column of another
/// type), never an error.
pub fn column(row: &tokio_postgres::Row, c: &str) -> Option<Timestamp> {
    row.try_get::<_, Option<Timestamp>>(c).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> String {
        Timestamp::from_pg_micros(micros).full()
    }

    #[test]
    fn times_rfc_3339_writes_are_written_so() {
        assert_eq!(at(0), "2000-01-01T00:00:00Z");
        assert_eq!(at(1_500_000), "2000-01-01T00:00:01.5Z");
        assert_eq!(at(-PG_EPOCH_UNIX_MICROS as i64), "1970-01-01T00:00:00Z");
        assert!(matches!(Timestamp::from_pg_micros(0), Timestamp::At(_)));
    }

    #[test]
    fn infinities_and_far_years_are_written_as_postgresql_writes_them() {
        assert_eq!(Timestamp::from_pg_micros(i64::MAX).full(), "infinity");
        assert_eq!(Timestamp::from_pg_micros(i64::MIN).full(), "-infinity");
        assert_eq!(at(568_025_233_445_500_000), "20000-01-02T03:04:05.5Z");
        // The largest and smallest times PostgreSQL stores.
        assert_eq!(
            at(9_223_371_331_199_999_999),
            "294276-12-31T23:59:59.999999Z"
        );
        assert_eq!(at(-211_813_488_000_000_000), "4714-11-24T00:00:00Z BC");
        // 1 BC is year 0; 10000 is the first year past RFC 3339.
        assert_eq!(at(-63_113_904_000_000_000), "0001-01-01T00:00:00Z BC");
        assert_eq!(at(252_455_616_000_000_000), "10000-01-01T00:00:00Z");
        assert!(matches!(
            Timestamp::from_pg_micros(252_455_616_000_000_000),
            Timestamp::Beyond(_)
        ));
    }

    #[test]
    fn people_see_times_to_the_second() {
        assert_eq!(
            Timestamp::from_pg_micros(1_500_000).to_string(),
            "2000-01-01T00:00:01Z"
        );
        assert_eq!(
            Timestamp::from_pg_micros(568_025_233_445_500_000).to_string(),
            "20000-01-02T03:04:05Z"
        );
        assert_eq!(Timestamp::Infinity.to_string(), "infinity");
    }

    #[test]
    fn durations_need_two_times() {
        let a = Timestamp::from_pg_micros(0);
        let b = Timestamp::from_pg_micros(2_500_000);
        assert_eq!(a.millis_until(&b), Some(2500));
        assert_eq!(b.millis_until(&a), Some(0));
        assert_eq!(a.millis_until(&Timestamp::Infinity), None);
        assert_eq!(Timestamp::Infinity.unix_seconds(), None);
        assert_eq!(a.unix_seconds(), Some(946_684_800.0));
    }
}

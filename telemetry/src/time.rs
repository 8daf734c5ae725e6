//! UTC calendar arithmetic for partition names (`dt=YYYY-MM-DD/hour=HH`), without a date crate.
//!
//! Days are counted from 1970-01-01 (proleptic Gregorian), using Howard Hinnant's
//! `civil_from_days` / `days_from_civil` algorithms. No time zones: everything is UTC.

use std::time::{SystemTime, UNIX_EPOCH};

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Microseconds since the Unix epoch (negative before it), saturating.
pub(crate) fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// The hour partition of a timestamp: (days since epoch, hour of day).
pub(crate) fn partition_of(micros: i64) -> (i64, u8) {
    let hours = micros.div_euclid(MICROS_PER_HOUR);
    // rem_euclid(24) is in 0..24.
    (hours.div_euclid(24), hours.rem_euclid(24) as u8)
}

/// Days since epoch of a timestamp.
pub(crate) fn day_of(t: SystemTime) -> i64 {
    partition_of(unix_micros(t)).0
}

/// `YYYY-MM-DD` of a day number.
pub(crate) fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYYMMDDTHHMMSSZ` of a timestamp (for file names).
pub(crate) fn format_compact(t: SystemTime) -> String {
    let us = unix_micros(t);
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Parses `YYYY-MM-DD` into a day number; `None` unless the date is valid.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Round-trip rejects 2023-02-30 and the like.
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(19_723), "2024-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("24-01-01"), None);
        // Years 0001..=9999.
        for days in (-719_162..2_932_897).step_by(7) {
            assert_eq!(parse_date(&format_date(days)), Some(days), "{days}");
        }
    }

    #[test]
    fn partitions() {
        let t = UNIX_EPOCH + Duration::from_secs(19_723 * 86_400 + 13 * 3600 + 59);
        assert_eq!(partition_of(unix_micros(t)), (19_723, 13));
        assert_eq!(partition_of(-1), (-1, 23));
        assert_eq!(format_compact(t), "20240101T130059Z");
    }
}

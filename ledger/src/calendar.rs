//! The business day (营业日) of reports and reconciliation: a calendar date in China Standard
//! Time (UTC+8, no daylight saving). Pure arithmetic on milliseconds since the epoch, so the
//! ledger, the bank link and the node agree on which day a moment belongs to.

use std::fmt;

/// China Standard Time's offset from UTC.
pub const CST_OFFSET_MS: i64 = 8 * 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// A business day, e.g. 2026-11-24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusinessDay {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl BusinessDay {
    /// The business day a moment falls in.
    pub fn of_ms(at_ms: i64) -> BusinessDay {
        // Howard Hinnant's `civil_from_days`.
        let z = (at_ms + CST_OFFSET_MS).div_euclid(DAY_MS) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        BusinessDay { year, month, day }
    }

    /// Parses `YYYY-MM-DD`, refusing dates that do not exist.
    pub fn parse(text: &str) -> Option<BusinessDay> {
        let b = text.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return None;
        }
        let year: i64 = text[..4].parse().ok()?;
        let month: u32 = text[5..7].parse().ok()?;
        let day: u32 = text[8..].parse().ok()?;
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
        valid.then_some(BusinessDay { year, month, day })
    }

    /// The day as [start, end) in milliseconds since the epoch.
    pub fn bounds_ms(self) -> (i64, i64) {
        let start = days_from_civil(self.year, self.month, self.day) * DAY_MS - CST_OFFSET_MS;
        (start, start + DAY_MS)
    }

    /// The day before.
    pub fn previous(self) -> BusinessDay {
        BusinessDay::of_ms(self.bounds_ms().0 - 1)
    }

    /// Parses `YYYYMMDD`, as the bank's statements name days.
    pub fn parse_compact(text: &str) -> Option<BusinessDay> {
        if text.len() != 8 || !text.is_ascii() {
            return None;
        }
        BusinessDay::parse(&format!("{}-{}-{}", &text[..4], &text[4..6], &text[6..]))
    }

    /// `YYYYMMDD`, as the bank's statements name days.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for BusinessDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_before_crosses_months_years_and_leap_days() {
        for (day, before) in [
            ("2026-03-01", "2026-02-28"),
            ("2028-03-01", "2028-02-29"),
            ("2027-01-01", "2026-12-31"),
            ("2026-11-27", "2026-11-26"),
        ] {
            let day = BusinessDay::parse(day).unwrap();
            assert_eq!(day.previous().to_string(), before);
            assert_eq!(BusinessDay::parse_compact(&day.compact()), Some(day));
        }
        assert_eq!(BusinessDay::parse_compact("20260230"), None);
        assert_eq!(BusinessDay::parse_compact("2026-1-1"), None);
    }

    #[test]
    fn a_business_day_starts_at_midnight_in_beijing() {
        // 2026-11-24T00:00+08:00 = 2026-11-23T16:00Z
        let day = BusinessDay::parse("2026-11-24").unwrap();
        assert_eq!(
            day.bounds_ms(),
            (1_795_449_600_000, 1_795_449_600_000 + DAY_MS)
        );
        assert_eq!(BusinessDay::of_ms(1_795_449_600_000), day);
        assert_eq!(
            BusinessDay::of_ms(1_795_449_599_999).to_string(),
            "2026-11-23"
        );
        assert_eq!(day.compact(), "20261124");
    }

    #[test]
    fn dates_round_trip_over_centuries_and_nonsense_is_refused() {
        for ms in (-4_000_000_000_000i64..8_000_000_000_000).step_by(7_777_777_777) {
            let day = BusinessDay::of_ms(ms);
            let (start, end) = day.bounds_ms();
            assert!(start <= ms && ms < end, "{day} {ms}");
            assert_eq!(BusinessDay::parse(&day.to_string()), Some(day));
        }
        assert!(BusinessDay::parse("2024-02-29").is_some());
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "26-11-24",
            "2026/11/24",
            "",
            "2026-11-2x",
        ] {
            assert_eq!(BusinessDay::parse(bad), None, "{bad}");
        }
    }
}

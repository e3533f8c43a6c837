//! Civil-date arithmetic (proleptic Gregorian, days since 1970-01-01) and the civil date
//! in Italy: one copy for fiscal codes, PIN cutoffs, SAML instants and log timestamps.

use std::fmt;

/// A calendar date (proleptic Gregorian), enough for ages and cutoffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        (1..=12).contains(&month).then_some(())?;
        (day >= 1 && day <= days_in_month(year, month)).then_some(Date { year, month, day })
    }

    /// Today's date in UTC.
    pub fn today_utc() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date::from_days_since_epoch((secs / 86_400) as i64)
    }

    /// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Days from 1970-01-01 to `self` (inverse of [`Date::from_days_since_epoch`]).
    pub fn days_since_epoch(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The UTC date at `secs` since the epoch.
    pub fn from_unix_secs(secs: u64) -> Date {
        Date::from_days_since_epoch(i64::try_from(secs / 86_400).unwrap_or(i64::MAX))
    }

    /// Whole years from `self` to `on` (an age when `self` is a birth date).
    pub fn years_until(&self, on: Date) -> i32 {
        let mut years = on.year - self.year;
        if (on.month, on.day) < (self.month, self.day) {
            years -= 1;
        }
        years
    }
}

impl Date {
    /// `YYYY-MM-DD`.
    pub fn parse_iso(s: &str) -> Option<Date> {
        let s = s.trim();
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        Date::new(
            s.get(0..4)?.parse().ok()?,
            s.get(5..7)?.parse().ok()?,
            s.get(8..10)?.parse().ok()?,
        )
    }

    /// The date `years` later (29 February becomes 28 February in a common year).
    pub fn plus_years(self, years: i32) -> Date {
        let year = self.year + years;
        Date::new(year, self.month, self.day).unwrap_or(Date {
            year,
            month: self.month,
            day: days_in_month(year, self.month),
        })
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Date::parse_iso(&s).ok_or_else(|| serde::de::Error::custom("not a YYYY-MM-DD date"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 31,
    }
}

/// The civil date in Italy (CET/CEST: UTC+1, UTC+2 from the last Sunday of March to the
/// last Sunday of October, switching at 01:00 UTC) at `secs` since the epoch: cutoffs and
/// 18th birthdays take effect at Italian midnight.
pub fn italian_date(secs: u64) -> Date {
    let utc_days = i64::try_from(secs / 86_400).unwrap_or(0);
    let year = Date::from_days_since_epoch(utc_days).year;
    // Days since the epoch of the last Sunday of `month` in `year` (1970-01-01: Thursday).
    let last_sunday = |month: u8| -> i64 {
        let mut d = Date {
            year,
            month,
            day: 31,
        }
        .days_since_epoch();
        while (d + 4).rem_euclid(7) != 0 {
            d -= 1;
        }
        d
    };
    let t = i64::try_from(secs).unwrap_or(i64::MAX);
    let summer_start = last_sunday(3) * 86_400 + 3600;
    let summer_end = last_sunday(10) * 86_400 + 3600;
    let offset = if (summer_start..summer_end).contains(&t) {
        7200
    } else {
        3600
    };
    Date::from_days_since_epoch(t.saturating_add(offset).div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_epoch_is_the_inverse_of_from_days() {
        for days in [-800_000, -1, 0, 59, 60, 365, 11_016, 20_000, 2_932_896] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(
            Date::new(2024, 2, 29).map(Date::days_since_epoch),
            Some(19_782)
        );
        assert_eq!(Date::new(2023, 2, 29), None);
        assert_eq!(
            Date::new(2000, 2, 29).map(|d| d.to_string()),
            Some("2000-02-29".into())
        );
        assert_eq!(Date::new(1900, 2, 29), None);
        assert_eq!(
            Date::from_unix_secs(1_795_837_464).to_string(),
            "2026-11-28"
        );
    }
}

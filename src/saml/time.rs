//! `xs:dateTime` in UTC as SAML uses it: `YYYY-MM-DDThh:mm:ss[.fraction]Z`. Anything else
//! (a missing `Z`, an offset, a non-existent date) is malformed.

/// Seconds since the Unix epoch for a UTC `xs:dateTime`, or `None` when malformed.
pub fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..s.len() - 1];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let date = crate::identity::Date::new(i32::try_from(year).ok()?, month as u8, day as u8)?;
    Some(date.days_since_epoch() * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Formats seconds since the epoch as `YYYY-MM-DDThh:mm:ssZ`.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let d = crate::identity::Date::from_days_since_epoch(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year,
        d.month,
        d.day,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_with_and_without_fractions() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2026-11-28T03:44:24Z"), Some(1_795_837_464));
        assert_eq!(parse_utc("2026-11-28T03:44:24.718Z"), Some(1_795_837_464));
        assert_eq!(format_utc(1_795_837_464), "2026-11-28T03:44:24Z");
        for bad in [
            "2026-11-28T03:44:24",
            "2026-11-28T03:44:24+01:00",
            "2026-02-30T00:00:00Z",
            "2026-11-28 03:44:24Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T03:44:24.Z",
            "",
            "x",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}

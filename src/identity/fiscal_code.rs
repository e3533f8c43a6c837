//! The Italian fiscal code (*codice fiscale*): 16 characters — surname (3), name (3),
//! birth year (2), month letter, birth day (+40 for women), place code (4), check letter.
//! Homonyms get *omocodia* variants: some of the 7 digit positions replaced by letters
//! (`L M N P Q R S T U V` for 0–9). Parsing accepts the SPID form `TINIT-…` and lower case,
//! validates the structure and the check character, and exposes the birth date and sex.

use std::fmt;

pub use crate::civil::Date;

/// A syntactically valid fiscal code with a correct check character, upper case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiscalCode([u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FiscalCodeError {
    #[error("a fiscal code has 16 characters")]
    Length,
    #[error("character {position} of the fiscal code is not allowed there")]
    Character { position: usize },
    #[error("the fiscal code's check character does not match")]
    Checksum,
    #[error("the fiscal code's birth date is not a date")]
    BirthDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Female,
    Male,
}

const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";
/// Positions that hold digits (or their omocodia letters).
const DIGIT_POSITIONS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];

/// Values of characters in odd positions (1st, 3rd, ...) for the check character.
const ODD_VALUES: [u8; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

fn char_value(c: u8, odd: bool) -> u8 {
    let index = if c.is_ascii_digit() {
        c - b'0'
    } else {
        c - b'A'
    };
    if odd {
        ODD_VALUES[index as usize]
    } else {
        index
    }
}

/// The check character for the first 15 characters.
pub fn check_character(first15: &[u8]) -> u8 {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &c)| u32::from(char_value(c, i % 2 == 0)))
        .sum();
    b'A' + (sum % 26) as u8
}

fn digit_value(c: u8) -> Option<u8> {
    if c.is_ascii_digit() {
        Some(c - b'0')
    } else {
        OMOCODIA.iter().position(|&o| o == c).map(|p| p as u8)
    }
}

impl FiscalCode {
    /// Parses `TINIT-RSSMRA80A01H501U`, `rssmra80a01h501u` or the bare code.
    pub fn parse(input: &str) -> Result<FiscalCode, FiscalCodeError> {
        let trimmed = input.trim();
        let bare = match trimmed.get(..6) {
            Some(p) if p.eq_ignore_ascii_case("TINIT-") => &trimmed[6..],
            _ => trimmed,
        };
        let bytes = bare.as_bytes();
        if bytes.len() != 16 {
            return Err(FiscalCodeError::Length);
        }
        let mut code = [0u8; 16];
        for (i, &b) in bytes.iter().enumerate() {
            let c = b.to_ascii_uppercase();
            let ok = match i {
                0..=5 | 8 | 11 | 15 => c.is_ascii_uppercase(),
                _ => c.is_ascii_digit() || OMOCODIA.contains(&c),
            };
            if !ok {
                return Err(FiscalCodeError::Character { position: i + 1 });
            }
            code[i] = c;
        }
        if !MONTHS.contains(&code[8]) {
            return Err(FiscalCodeError::Character { position: 9 });
        }
        if check_character(&code[..15]) != code[15] {
            return Err(FiscalCodeError::Checksum);
        }
        let fc = FiscalCode(code);
        let day = fc.raw_day();
        if !(1..=31).contains(&day) && !(41..=71).contains(&day) {
            return Err(FiscalCodeError::BirthDate);
        }
        Ok(fc)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters and digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    fn digits(&self, positions: [usize; 2]) -> u8 {
        positions
            .iter()
            .map(|&p| digit_value(self.0[p]).unwrap_or(0))
            .fold(0, |acc, d| acc * 10 + d)
    }

    fn raw_day(&self) -> u8 {
        self.digits([9, 10])
    }

    /// Whether any digit position carries an omocodia letter.
    pub fn is_omocode(&self) -> bool {
        DIGIT_POSITIONS
            .iter()
            .any(|&p| self.0[p].is_ascii_uppercase())
    }

    pub fn sex(&self) -> Sex {
        if self.raw_day() > 40 {
            Sex::Female
        } else {
            Sex::Male
        }
    }

    /// The birth date, with the two-digit year put in the century that makes the person
    /// not born after `today` (a code cannot say whether `20` is 1920 or 2020: the most
    /// recent year not in the future is taken). `None` if the date does not exist.
    pub fn birth_date(&self, today: Date) -> Option<Date> {
        let yy = i32::from(self.digits([6, 7]));
        let month = MONTHS.iter().position(|&m| m == self.0[8])? as u8 + 1;
        let day = self.raw_day() % 40;
        let mut year = today.year - today.year.rem_euclid(100) + yy;
        let candidate = |y| Date::new(y, month, day);
        if candidate(year).is_none_or(|d| d > today) {
            year -= 100;
        }
        candidate(year)
    }

    /// Age in whole years on `today`, when the birth date exists.
    pub fn age(&self, today: Date) -> Option<i32> {
        self.birth_date(today).map(|b| b.years_until(today))
    }
}

impl fmt::Display for FiscalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for FiscalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FiscalCode({})", self.as_str())
    }
}

impl std::str::FromStr for FiscalCode {
    type Err = FiscalCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FiscalCode::parse(s)
    }
}

impl serde::Serialize for FiscalCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FiscalCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FiscalCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 11, 28).unwrap()
    }

    #[test]
    fn parses_known_codes() {
        let fc = FiscalCode::parse("RSSMRA80A01H501U").unwrap();
        assert_eq!(fc.as_str(), "RSSMRA80A01H501U");
        assert_eq!(fc.sex(), Sex::Male);
        assert_eq!(fc.birth_date(today()), Date::new(1980, 1, 1));
        assert_eq!(fc.age(today()), Some(46));
        assert!(!fc.is_omocode());
        // SPID's form and lower case.
        assert_eq!(FiscalCode::parse("TINIT-rssmra80a01h501u").unwrap(), fc);
    }

    #[test]
    fn women_have_forty_added_to_the_day() {
        let first15 = b"RSSMRA85T41H501";
        let code = format!(
            "{}{}",
            std::str::from_utf8(first15).unwrap(),
            check_character(first15) as char
        );
        let fc = FiscalCode::parse(&code).unwrap();
        assert_eq!(fc.sex(), Sex::Female);
        assert_eq!(fc.birth_date(today()), Date::new(1985, 12, 1));
    }

    #[test]
    fn omocodia_letters_stand_for_digits() {
        // RSSMRA80A01H501U with the last digit (1 → M) substituted; new check character.
        let first15 = b"RSSMRA80A01H50M";
        let code = format!(
            "{}{}",
            std::str::from_utf8(first15).unwrap(),
            check_character(first15) as char
        );
        let fc = FiscalCode::parse(&code).unwrap();
        assert!(fc.is_omocode());
        assert_eq!(fc.birth_date(today()), Date::new(1980, 1, 1));
        // Day and year positions substituted too: 8→U 0→L, 0→L 1→M.
        let first15 = b"RSSMRAULALMH501";
        let code = format!(
            "{}{}",
            std::str::from_utf8(first15).unwrap(),
            check_character(first15) as char
        );
        let fc = FiscalCode::parse(&code).unwrap();
        assert_eq!(fc.birth_date(today()), Date::new(1980, 1, 1));
    }

    #[test]
    fn century_is_resolved_against_today() {
        let make = |yy: &str| {
            let first15 = format!("RSSMRA{yy}A01H501");
            let c = check_character(first15.as_bytes()) as char;
            FiscalCode::parse(&format!("{first15}{c}")).unwrap()
        };
        assert_eq!(make("10").birth_date(today()), Date::new(2010, 1, 1));
        assert_eq!(make("10").age(today()), Some(16));
        assert_eq!(make("26").birth_date(today()), Date::new(2026, 1, 1));
        assert_eq!(make("27").birth_date(today()), Date::new(1927, 1, 1));
        // A minor turning 18: the day before and the day itself.
        let minor = make("08");
        assert_eq!(minor.age(Date::new(2025, 12, 31).unwrap()), Some(17));
        assert_eq!(minor.age(Date::new(2026, 1, 1).unwrap()), Some(18));
    }

    #[test]
    fn bad_codes_are_refused() {
        use FiscalCodeError::*;
        assert_eq!(FiscalCode::parse("RSSMRA80A01H501"), Err(Length));
        assert_eq!(FiscalCode::parse("RSSMRA80A01H501X"), Err(Checksum));
        assert_eq!(
            FiscalCode::parse("R5SMRA80A01H501U"),
            Err(Character { position: 2 })
        );
        assert_eq!(
            FiscalCode::parse("RSSMRA80Z01H501U"),
            Err(Character { position: 9 })
        );
        assert_eq!(FiscalCode::parse("TINIT-"), Err(Length));
        assert_eq!(FiscalCode::parse("ÀSSMRA80A01H501U"), Err(Length));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn code_strategy() -> impl Strategy<Value = String> {
        (
            "[A-Z]{6}",
            0u8..100,
            0usize..12,
            1u8..29,
            any::<bool>(),
            "[A-Z][0-9]{3}",
            proptest::collection::vec(any::<bool>(), 7),
        )
            .prop_map(|(names, yy, m, d, female, place, omo)| {
                let day = if female { d + 40 } else { d };
                let mut s =
                    format!("{names}{yy:02}{}{day:02}{place}", MONTHS[m] as char).into_bytes();
                for (k, &p) in DIGIT_POSITIONS.iter().enumerate() {
                    if omo[k] {
                        s[p] = OMOCODIA[(s[p] - b'0') as usize];
                    }
                }
                let c = check_character(&s);
                s.push(c);
                String::from_utf8(s).unwrap()
            })
    }

    proptest! {
        #[test]
        fn generated_codes_parse_and_round_trip(code in code_strategy()) {
            let fc = FiscalCode::parse(&code).unwrap();
            prop_assert_eq!(fc.as_str(), code.as_str());
            prop_assert!(fc.birth_date(Date::new(2026, 11, 28).unwrap()).is_some());
        }

        #[test]
        fn any_single_substitution_is_caught(code in code_strategy(), pos in 0usize..16, c in "[A-Z0-9]") {
            let mut bytes = code.clone().into_bytes();
            let c = c.as_bytes()[0];
            prop_assume!(bytes[pos] != c);
            bytes[pos] = c;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(FiscalCode::parse(&changed).is_err());
        }
    }
}

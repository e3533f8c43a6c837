//! Test users of the demo (citizen, patronato operator, volunteer, a minor), used by the
//! development login. Their fiscal codes are well-formed (check characters computed) but
//! belong to nobody. Refused outside `mode = "demo"`.

use crate::identity::fiscal_code::check_character;
use crate::identity::{FiscalCode, Identity, Level, Method, Role};

/// A demo user and what the chooser says about them.
pub struct TestUser {
    pub key: &'static str,
    pub label_it: &'static str,
    pub label_en: &'static str,
    pub identity: Identity,
}

fn code(first15: &str) -> Option<FiscalCode> {
    let c = check_character(first15.as_bytes()) as char;
    FiscalCode::parse(&format!("{first15}{c}")).ok()
}

fn user(
    key: &'static str,
    label_it: &'static str,
    label_en: &'static str,
    first15: &str,
    names: (&str, &str),
    roles: &[&str],
) -> Option<TestUser> {
    Some(TestUser {
        key,
        label_it,
        label_en,
        identity: Identity {
            subject: code(first15)?,
            given_name: names.0.into(),
            family_name: names.1.into(),
            level: Level::SpidL2,
            method: Method::Spid,
            idp: "https://demo.varco.invalid/idp".into(),
            roles: roles.iter().map(|r| Role((*r).into())).collect(),
            patronato: (!roles.is_empty()).then(|| "patronato-demo".to_string()),
            auth_time: 0,
            extra: Default::default(),
        },
    })
}

/// The demo users.
pub fn test_users() -> Vec<TestUser> {
    [
        user(
            "cittadino",
            "Cittadino (Mario Rossi)",
            "Citizen",
            "RSSMRA80A01H501",
            ("Mario", "Rossi"),
            &[],
        ),
        user(
            "operatore",
            "Operatrice di patronato (Giulia Bianchi)",
            "Patronato operator",
            "BNCGLI85C52H501",
            ("Giulia", "Bianchi"),
            &["operatore"],
        ),
        user(
            "volontario",
            "Volontario di patronato (Luca Verdi)",
            "Patronato volunteer",
            "VRDLCU90L20F205",
            ("Luca", "Verdi"),
            &["volontario"],
        ),
        user(
            "minore",
            "Minorenne (Sofia Esposito)",
            "A minor",
            "SPSSFO12E50F839",
            ("Sofia", "Esposito"),
            &[],
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Date;

    #[test]
    fn all_four_users_exist_with_valid_codes() {
        let users = test_users();
        assert_eq!(users.len(), 4);
        let minor = users.iter().find(|u| u.key == "minore").unwrap();
        let age = minor
            .identity
            .subject
            .age(Date::new(2026, 11, 28).unwrap())
            .unwrap();
        assert!(age < 18, "{age}");
    }
}

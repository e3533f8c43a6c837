//! The switch-off as a table of dates and categories (a controllable clock: every function
//! takes `today`).

use super::*;
use crate::identity::fiscal_code::check_character;

fn d(s: &str) -> Date {
    Date::parse_iso(s).unwrap()
}

/// A valid fiscal code from its first 15 characters.
pub fn cf(first15: &str) -> FiscalCode {
    let c = check_character(first15.as_bytes()) as char;
    FiscalCode::parse(&format!("{first15}{c}")).unwrap()
}

const SWITCH: Switch = Switch {
    issuance_stop: Date {
        year: 2020,
        month: 10,
        day: 1,
    },
    cutoff: Date {
        year: 2021,
        month: 9,
        day: 30,
    },
};

#[test]
fn general_pins_work_until_the_cutoff_and_new_ones_only_for_exceptions() {
    let old = d("2019-03-01");
    let new = d("2020-11-15");
    // Before the issuance stop and the cutoff: any PIN holder.
    assert_eq!(may_log_in(&SWITCH, d("2020-09-30"), Some(old), &[]), Ok(()));
    // After the stop, before the cutoff: old PINs still, new ones only for exceptions.
    assert_eq!(may_log_in(&SWITCH, d("2021-01-10"), Some(old), &[]), Ok(()));
    assert_eq!(
        may_log_in(&SWITCH, d("2021-01-10"), Some(new), &[]),
        Err(Refusal::IssuedAfterStop)
    );
    assert_eq!(
        may_log_in(&SWITCH, d("2021-01-10"), Some(new), &[Category::Minor]),
        Ok(())
    );
    // The cutoff day itself refuses; the verifier is not needed to know it.
    assert_eq!(
        may_log_in(&SWITCH, d("2021-09-30"), None, &[]),
        Err(Refusal::AfterCutoff)
    );
    assert_eq!(may_log_in(&SWITCH, d("2021-09-29"), None, &[]), Ok(()));
    for c in Category::ALL {
        assert_eq!(
            may_log_in(&SWITCH, d("2024-01-01"), Some(old), &[c]),
            Ok(())
        );
    }
}

#[test]
fn each_category_on_its_dedicated_route_and_refused_elsewhere() {
    let after = d("2022-02-01");
    let issued = d("2019-01-01");
    for c in Category::ALL {
        // Its own dedicated service: admitted, whether or not the route lists pin.
        assert_eq!(
            admit(&SWITCH, after, issued, &[c], &[c], false),
            Admission::Admit
        );
        // Another category's service, or a general one: refused.
        for other in Category::ALL.into_iter().filter(|o| *o != c) {
            assert_eq!(
                admit(&SWITCH, after, issued, &[c], &[other], true),
                Admission::Refuse(Refusal::NotDedicated)
            );
        }
        assert_eq!(
            admit(&SWITCH, after, issued, &[c], &[], true),
            Admission::Refuse(Refusal::NotDedicated)
        );
    }
    // No category after the cutoff: refused everywhere, dedicated services too.
    assert_eq!(
        admit(&SWITCH, after, issued, &[], &[Category::Minor], true),
        Admission::Refuse(Refusal::AfterCutoff)
    );
    // Before the cutoff a general PIN goes where routes accept PIN, not elsewhere.
    let before = d("2021-05-01");
    assert_eq!(
        admit(&SWITCH, before, issued, &[], &[], true),
        Admission::Admit
    );
    assert_eq!(
        admit(&SWITCH, before, issued, &[], &[], false),
        Admission::NotAccepted
    );
    // A PIN issued after the stop is an exception PIN even before the cutoff.
    let new = d("2020-12-01");
    assert_eq!(
        admit(&SWITCH, before, new, &[Category::Guardianship], &[], true),
        Admission::Refuse(Refusal::NotDedicated)
    );
    assert_eq!(
        admit(&SWITCH, before, new, &[], &[], true),
        Admission::Refuse(Refusal::IssuedAfterStop)
    );
}

#[test]
fn a_minor_turns_18_and_loses_the_exception() {
    // Born 2005-05-15 (fiscal code year 05, month E, day 15).
    let subject = cf("RSSMRA05E15H501");
    assert!(is_minor(&subject, None, d("2023-05-14")));
    assert!(!is_minor(&subject, None, d("2023-05-15")));
    // Women: day + 40 in the code (55 = the 15th).
    let her = cf("RSSMRA05E55H501");
    assert!(is_minor(&her, None, d("2023-05-14")));
    assert!(!is_minor(&her, None, d("2023-05-15")));
    // The known date of birth wins over the code's century guess.
    let old_man = cf("RSSMRA25A01H501");
    assert!(is_minor(&old_man, None, d("2030-01-01")));
    assert!(!is_minor(&old_man, Some(d("1925-01-01")), d("2030-01-01")));
    // Born 29 February: 18 on 28 February of the common year.
    let leap = cf("RSSMRA04B29H501");
    assert!(is_minor(&leap, None, d("2022-02-27")));
    assert!(!is_minor(&leap, None, d("2022-02-28")));

    let issued = d("2021-01-01");
    let on_minor_route = |today| {
        let held = categories(&subject, None, &[], today);
        admit(&SWITCH, today, issued, &held, &[Category::Minor], false)
    };
    assert_eq!(on_minor_route(d("2023-05-14")), Admission::Admit);
    assert_eq!(
        on_minor_route(d("2023-05-15")),
        Admission::Refuse(Refusal::AfterCutoff)
    );
}

#[test]
fn the_registry_never_makes_a_minor_and_categories_are_deduplicated() {
    let adult = cf("RSSMRA80A01H501");
    let today = d("2022-01-01");
    assert_eq!(
        categories(
            &adult,
            None,
            &[
                Category::Minor,
                Category::Guardianship,
                Category::Guardianship
            ],
            today
        ),
        vec![Category::Guardianship]
    );
}

#[test]
fn dedicated_prefixes_match_whole_segments() {
    let ex = ExceptionRoutes {
        minor: vec!["/minori".into()],
        no_italian_document: vec!["/stranieri/".into()],
        guardianship: vec!["/tutela".into(), "/minori/tutela".into()],
    };
    assert_eq!(ex.dedicated_to("/minori", false), vec![Category::Minor]);
    assert_eq!(ex.dedicated_to("/minori/x", false), vec![Category::Minor]);
    assert!(ex.dedicated_to("/minorix", false).is_empty());
    assert_eq!(
        ex.dedicated_to("/minori/tutela/a", false),
        vec![Category::Minor, Category::Guardianship]
    );
    assert_eq!(
        ex.dedicated_to("/stranieri/a", false),
        vec![Category::NoItalianDocument]
    );
    assert!(ex.dedicated_to("/", false).is_empty());
    // As the router reads paths: a parameter ends a segment; case only when folded.
    assert_eq!(
        ex.dedicated_to("/minori;jsessionid=1", false),
        vec![Category::Minor]
    );
    assert!(ex.dedicated_to("/MINORI", false).is_empty());
    assert_eq!(ex.dedicated_to("/MINORI/x", true), vec![Category::Minor]);
}

#[test]
fn the_date_is_italian() {
    let at = |y: i32, m: u8, d: u8, h: i64| {
        // Seconds since the epoch of y-m-d h:00 UTC.
        let days = Date::new(y, m, d).unwrap();
        let mut n = 0i64;
        let mut probe = Date::from_days_since_epoch(0);
        while probe != days {
            n += 1;
            probe = Date::from_days_since_epoch(n);
        }
        (n * 86_400 + h * 3600) as u64
    };
    // Summer (UTC+2): 22:00 UTC on 30 September is already 1 October; winter: UTC+1.
    assert_eq!(italian_date(at(2021, 9, 30, 22)), d("2021-10-01"));
    assert_eq!(italian_date(at(2021, 9, 30, 21)), d("2021-09-30"));
    assert_eq!(italian_date(at(2021, 12, 31, 23)), d("2022-01-01"));
    assert_eq!(italian_date(at(2021, 12, 31, 22)), d("2021-12-31"));
    // The switches: last Sunday of March 2021 was the 28th, of October the 31st.
    assert_eq!(
        italian_date(at(2021, 3, 28, 0) + 3599 + 22 * 3600),
        d("2021-03-29")
    );
    assert_eq!(italian_date(at(2021, 3, 27, 23)), d("2021-03-28"));
    assert_eq!(italian_date(at(2021, 10, 31, 22)), d("2021-10-31"));
    assert_eq!(italian_date(at(2021, 10, 31, 23)), d("2021-11-01"));
}

#[test]
fn basic_credentials_and_the_pin_are_never_printed() {
    use base64::Engine as _;
    let b = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let (who, pin) = basic_credentials(&b("rssmra80a01h501u:Segreto99")).unwrap();
    assert_eq!(who.as_str(), "RSSMRA80A01H501U");
    assert_eq!(pin.expose(), "Segreto99");
    assert!(!format!("{pin:?}").contains("Segreto99"));
    assert!(basic_credentials(&b("not-a-code:Segreto99")).is_none());
    assert!(basic_credentials(&b("RSSMRA80A01H501U:")).is_none());
    assert!(basic_credentials(&b("RSSMRA80A01H501U")).is_none());
    assert!(basic_credentials("Bearer abc").is_none());
    assert!(basic_credentials("Basic !!!").is_none());
}

#[test]
fn argon2id_hashes_verify_and_anything_else_never_matches() {
    let h = hash_secret("12345678").unwrap();
    assert!(h.starts_with("$argon2id$"));
    assert!(verify_secret("12345678", &h));
    assert!(!verify_secret("12345679", &h));
    assert!(!verify_secret("12345678", "not a hash"));
    // Another algorithm is refused even when it would match.
    let i = h.replacen("$argon2id$", "$argon2i$", 1);
    assert!(!verify_secret("12345678", &i));
}

#[test]
fn verifier_files_name_the_bad_line_never_the_hash() {
    let h = hash_secret("1234").unwrap();
    let ok = format!(
        "fiscal_code,issued,date_of_birth,hash\n# comment\nRSSMRA80A01H501U,2019-01-01,,{h}\nRSSMRA05E15H501{c},2021-01-01,2005-05-15,{h}\n",
        c = cf("RSSMRA05E15H501").as_str().chars().last().unwrap()
    );
    let rows = verifier::parse_file("f.csv", &ok).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].2.issued, d("2019-01-01"));
    assert_eq!(rows[1].2.date_of_birth, Some(d("2005-05-15")));
    assert!(verify_secret("1234", &rows[0].1));
    for bad in [
        "RSSMRA80A01H501U,2019-01-01,,$argon2i$secret",
        "RSSMRA80A01H501X,2019-01-01,,$argon2id$secret",
        "RSSMRA80A01H501U,2019-13-01,,$argon2id$secret",
        "RSSMRA80A01H501U,2019-01-01",
    ] {
        let err = verifier::parse_file("f.csv", bad).unwrap_err();
        assert!(err.starts_with("f.csv:1:"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}

#[test]
fn registry_files_parse_and_refuse_minors() {
    let t = registry::parse_csv(
        "r.csv",
        "fiscal_code,category,valid_to\nRSSMRA80A01H501U,guardianship,2030-01-01\nRSSMRA80A01H501U,no_italian_document\n",
    )
    .unwrap();
    assert_eq!(t["RSSMRA80A01H501U"].len(), 2);
    for bad in [
        "RSSMRA80A01H501U,minor",
        "RSSMRA80A01H501U,vip",
        "RSSMRA80A01H501U,guardianship,someday",
    ] {
        assert_eq!(registry::parse_csv("r.csv", bad).unwrap_err().line, 1);
    }
}

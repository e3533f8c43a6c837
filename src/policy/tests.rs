//! Table-driven tests of `decide`: operator vs volunteer × with/without delega ×
//! expired/revoked/future delega × each HTTP method × level below/at/above × citizen on
//! own/other file × method not accepted, plus the path tricks that must never turn a
//! denial into an allow.

use std::collections::BTreeMap;

use super::*;
use crate::identity::{Role, fiscal_code::check_character};

fn cf(first15: &str) -> FiscalCode {
    let c = check_character(first15.as_bytes()) as char;
    FiscalCode::parse(&format!("{first15}{c}")).unwrap()
}

const CLIENT: &str = "RSSMRA80A01H501";
const OTHER: &str = "VRDGPP70B02F205";
const OPERATOR: &str = "BNCGLI85C52H501";
const VOLUNTEER: &str = "VRDLCU90L20F205";

fn today() -> Date {
    Date::new(2026, 11, 28).unwrap()
}

fn user(code: &str, roles: &[&str], level: Level, method: Method) -> Identity {
    Identity {
        subject: cf(code),
        given_name: "N".into(),
        family_name: "F".into(),
        level,
        method,
        idp: "https://idp".into(),
        roles: roles.iter().map(|r| Role((*r).into())).collect(),
        patronato: (!roles.is_empty()).then(|| "P1".into()),
        auth_time: 0,
        extra: BTreeMap::new(),
    }
}

/// Delegations by (patronato, client); `down` makes the source fail.
struct Table {
    records: BTreeMap<(String, String), DelegationRecord>,
    down: bool,
}

impl Lookups for Table {
    fn delegation(
        &self,
        patronato: &str,
        assistito: &FiscalCode,
    ) -> Result<Option<DelegationRecord>, SourceDown> {
        if self.down {
            return Err(SourceDown("delegations"));
        }
        Ok(self
            .records
            .get(&(patronato.to_string(), assistito.as_str().to_string()))
            .cloned())
    }
}

fn delega(from: (i32, u8, u8), to: Option<(i32, u8, u8)>, revoked: bool) -> DelegationRecord {
    DelegationRecord {
        valid_from: Date::new(from.0, from.1, from.2).unwrap(),
        valid_to: to.map(|t| Date::new(t.0, t.1, t.2).unwrap()),
        revoked,
    }
}

fn lookups(record: Option<DelegationRecord>) -> Table {
    let mut records = BTreeMap::new();
    if let Some(r) = record {
        records.insert(("P1".to_string(), cf(CLIENT).as_str().to_string()), r);
    }
    Table {
        records,
        down: false,
    }
}

/// The example's pension-file route: operators; volunteers with a delegation, read-only;
/// citizens their own file only.
fn fascicolo() -> RoutePolicy {
    let cfg: PolicyConfig = toml_policy(
        r#"
min_level = "SpidL2"
roles = ["operatore", "volontario", "cittadino"]
[[rule]]
role = "volontario"
effect = "allow"
http_methods = ["GET", "HEAD"]
paths = ["/fascicolo/**"]
[delegation]
path = "/fascicolo/{assistito}/**"
required_for = ["volontario"]
self_only = ["cittadino"]
"#,
    );
    cfg.compile().unwrap()
}

/// Benefit applications: operators only, SpidL2+, never volunteers.
fn domande() -> RoutePolicy {
    toml_policy(
        r#"
min_level = "SpidL2"
roles = ["operatore"]
methods = ["spid", "cie", "cns"]
"#,
    )
    .compile()
    .unwrap()
}

fn toml_policy(text: &str) -> PolicyConfig {
    ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

fn facts<'a>(
    method: &'a HttpMethod,
    path: &'a str,
    headers: &'a http::HeaderMap,
) -> RequestFacts<'a> {
    RequestFacts {
        method,
        path,
        query: None,
        headers,
        form_fields: &[],
        today: today(),
    }
}

/// (name, user, method, path, the delegation on record, expected decision)
type Case<'a> = (
    &'a str,
    &'a Identity,
    HttpMethod,
    &'a str,
    Option<DelegationRecord>,
    Decision,
);

#[test]
fn the_fascicolo_table() {
    let h = http::HeaderMap::new();
    let path = format!("/fascicolo/{}/estratto", cf(CLIENT).as_str());
    let other_path = format!("/fascicolo/{}/estratto", cf(OTHER).as_str());
    let valid = Some(delega((2025, 1, 1), Some((2027, 1, 1)), false));
    let open_ended = Some(delega((2025, 1, 1), None, false));
    let expired = Some(delega((2024, 1, 1), Some((2025, 1, 1)), false));
    let future = Some(delega((2027, 1, 1), None, false));
    let revoked = Some(delega((2025, 1, 1), None, true));
    use Decision::*;
    let operator = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Spid);
    let volunteer = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let citizen = user(CLIENT, &[], Level::SpidL2, Method::Cie);
    let low = user(VOLUNTEER, &["volontario"], Level::SpidL1, Method::Spid);
    let high = user(VOLUNTEER, &["volontario"], Level::SpidL3, Method::Spid);
    let pin = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Pin);
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("operator, no delega needed", &operator, HttpMethod::GET, &path, None, Allow),
        ("operator may write", &operator, HttpMethod::POST, &path, None, Allow),
        ("volunteer with delega GET", &volunteer, HttpMethod::GET, &path, valid.clone(), Allow),
        ("volunteer with delega HEAD", &volunteer, HttpMethod::HEAD, &path, open_ended.clone(), Allow),
        ("volunteer without delega", &volunteer, HttpMethod::GET, &path, None, Deny(Denial::NoDelegation)),
        ("volunteer, expired delega", &volunteer, HttpMethod::GET, &path, expired, Deny(Denial::DelegationNotValid)),
        ("volunteer, future delega", &volunteer, HttpMethod::GET, &path, future, Deny(Denial::DelegationNotValid)),
        ("volunteer, revoked delega", &volunteer, HttpMethod::GET, &path, revoked, Deny(Denial::DelegationRevoked)),
        ("volunteer, delega for another client", &volunteer, HttpMethod::GET, &other_path, valid.clone(), Deny(Denial::NoDelegation)),
        ("citizen, own file", &citizen, HttpMethod::GET, &path, None, Allow),
        ("citizen, other file", &citizen, HttpMethod::GET, &other_path, None, Deny(Denial::NotOwnFile)),
        ("level below", &low, HttpMethod::GET, &path, valid.clone(), StepUp(Level::SpidL2)),
        ("level above", &high, HttpMethod::GET, &path, valid.clone(), Allow),
        ("PIN not accepted by default", &pin, HttpMethod::GET, &path, None, Deny(Denial::LoginMethod("pin"))),
        ("no client in the path", &volunteer, HttpMethod::GET, "/fascicolo/", valid.clone(), Deny(Denial::MissingAssistito)),
        ("malformed client code", &volunteer, HttpMethod::GET, "/fascicolo/NOTACODE/x", valid.clone(), Deny(Denial::MissingAssistito)),
    ];
    for method in [
        HttpMethod::POST,
        HttpMethod::PUT,
        HttpMethod::PATCH,
        HttpMethod::DELETE,
    ] {
        let d = decide(
            &fascicolo(),
            &volunteer,
            &facts(&method, &path, &h),
            &lookups(valid.clone()),
        );
        assert_eq!(
            d,
            Deny(Denial::RoleRule {
                role: "volontario".into(),
                method: method.to_string()
            }),
            "volunteer {method}"
        );
    }
    for (name, who, method, p, record, expected) in cases {
        let d = decide(&fascicolo(), who, &facts(&method, p, &h), &lookups(record));
        assert_eq!(d, expected, "{name}");
    }
}

#[test]
fn benefit_applications_are_the_operators_alone() {
    let h = http::HeaderMap::new();
    let p = "/domande/nuova";
    use Decision::*;
    for method in [
        HttpMethod::GET,
        HttpMethod::POST,
        HttpMethod::PUT,
        HttpMethod::DELETE,
    ] {
        let op = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Cns);
        assert_eq!(
            decide(&domande(), &op, &facts(&method, p, &h), &lookups(None)),
            Allow
        );
        let vol = user(VOLUNTEER, &["volontario"], Level::SpidL3, Method::Spid);
        assert_eq!(
            decide(&domande(), &vol, &facts(&method, p, &h), &lookups(None)),
            Deny(Denial::Role),
            "{method}"
        );
    }
    // A route that names its identity providers refuses the others' logins, whatever
    // the method.
    let op = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Cns);
    let mut only_one = domande();
    only_one.idps = vec!["https://idp.other/".into()];
    assert_eq!(
        decide(
            &only_one,
            &op,
            &facts(&HttpMethod::GET, p, &h),
            &lookups(None)
        ),
        Deny(Denial::IdentityProvider)
    );
    only_one.idps.push(op.idp.clone());
    assert_eq!(
        decide(
            &only_one,
            &op,
            &facts(&HttpMethod::GET, p, &h),
            &lookups(None)
        ),
        Allow
    );
    let oidc = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Oidc);
    assert_eq!(
        decide(
            &domande(),
            &oidc,
            &facts(&HttpMethod::GET, p, &h),
            &lookups(None)
        ),
        Deny(Denial::LoginMethod("oidc"))
    );
    let citizen = user(CLIENT, &[], Level::SpidL2, Method::Spid);
    assert_eq!(
        decide(
            &domande(),
            &citizen,
            &facts(&HttpMethod::GET, p, &h),
            &lookups(None)
        ),
        Deny(Denial::Role)
    );
}

#[test]
fn a_source_down_denies_with_unavailable_never_allows() {
    let h = http::HeaderMap::new();
    let path = format!("/fascicolo/{}/x", cf(CLIENT).as_str());
    let vol = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let down = Table {
        records: BTreeMap::new(),
        down: true,
    };
    assert_eq!(
        decide(
            &fascicolo(),
            &vol,
            &facts(&HttpMethod::GET, &path, &h),
            &down
        ),
        Decision::Unavailable("delegations")
    );
    // A volunteer who is also an operator elsewhere: the source is still needed for the
    // volunteer role only if the operator role does not allow first.
    let both = user(
        VOLUNTEER,
        &["operatore", "volontario"],
        Level::SpidL2,
        Method::Spid,
    );
    assert_eq!(
        decide(
            &fascicolo(),
            &both,
            &facts(&HttpMethod::GET, &path, &h),
            &down
        ),
        Decision::Allow
    );
}

#[test]
fn query_and_header_sources_name_the_client() {
    let policy = toml_policy(
        r#"
roles = ["volontario"]
[delegation]
query = "cf"
"#,
    )
    .compile()
    .unwrap();
    let vol = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let h = http::HeaderMap::new();
    let q = format!("cf={}", cf(CLIENT).as_str());
    let with_query = |query: Option<&str>| {
        let f = RequestFacts {
            method: &HttpMethod::GET,
            path: "/stampa",
            query,
            headers: &h,
            form_fields: &[],
            today: today(),
        };
        decide(
            &policy,
            &vol,
            &f,
            &lookups(Some(delega((2025, 1, 1), None, false))),
        )
    };
    assert_eq!(with_query(Some(&q)), Decision::Allow);
    assert_eq!(with_query(None), Decision::Deny(Denial::MissingAssistito));
    let policy = toml_policy(
        r#"
[delegation]
header = "X-Assistito"
"#,
    )
    .compile()
    .unwrap();
    let mut h = http::HeaderMap::new();
    h.insert("x-assistito", cf(CLIENT).as_str().parse().unwrap());
    let f = RequestFacts {
        method: &HttpMethod::GET,
        path: "/x",
        query: None,
        headers: &h,
        form_fields: &[],
        today: today(),
    };
    assert_eq!(
        decide(
            &policy,
            &vol,
            &f,
            &lookups(Some(delega((2025, 1, 1), None, false)))
        ),
        Decision::Allow
    );
}

/// The router normalizes before policy; what reaches `decide` may still differ in case or
/// carry matrix parameters. None of these turns a volunteer's denial into an allow.
#[test]
fn path_tricks_never_turn_a_denial_into_an_allow() {
    let policy = toml_policy(
        r#"
roles = ["operatore", "volontario"]
[[rule]]
role = "volontario"
effect = "deny"
http_methods = ["POST", "PUT", "PATCH", "DELETE"]
paths = ["/domande/**"]
[[rule]]
role = "volontario"
effect = "allow"
"#,
    )
    .compile()
    .unwrap();
    let vol = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let h = http::HeaderMap::new();
    for raw in [
        "/domande/nuova",
        "/domande/../domande/nuova",
        "/domande/%2e%2e/domande/nuova",
        "//domande//nuova",
        "/domande./nuova",
        "/DOMANDE/nuova",
        "/Domande/nuova",
        "/domande;x=1/nuova",
        "/domande/",
        "/domande",
    ] {
        // As the gateway does: normalize first (a refused path never reaches policy).
        let Ok(path) = crate::routes::normalize_path(raw) else {
            continue;
        };
        let d = decide(
            &policy,
            &vol,
            &facts(&HttpMethod::POST, &path, &h),
            &lookups(None),
        );
        assert!(matches!(d, Decision::Deny(_)), "{raw} → {path}: {d:?}");
    }
    let d = decide(
        &policy,
        &vol,
        &facts(&HttpMethod::GET, "/domande/nuova", &h),
        &lookups(None),
    );
    assert_eq!(d, Decision::Allow);
    // A method in another case is the same method to a deny rule (issue 11, item 8).
    for spelling in ["post", "Post", "pOsT", "delete", "patch"] {
        let m = HttpMethod::from_bytes(spelling.as_bytes()).unwrap();
        let d = decide(
            &policy,
            &vol,
            &facts(&m, "/domande/nuova", &h),
            &lookups(None),
        );
        assert!(matches!(d, Decision::Deny(_)), "{spelling}: {d:?}");
    }
}

#[test]
fn bad_policies_name_their_key() {
    let bad = toml_policy(
        r#"
[[rule]]
role = "x"
effect = "allow"
paths = ["nope"]
"#,
    );
    assert_eq!(bad.compile().unwrap_err().0, "rule[0].paths");
    let bad = toml_policy(
        r#"
[delegation]
path = "/fascicolo/**"
"#,
    );
    assert_eq!(bad.compile().unwrap_err().0, "delegation.path");
    let bad = toml_policy(
        r#"
[delegation]
query = "cf"
header = "x"
"#,
    );
    assert_eq!(bad.compile().unwrap_err().0, "delegation");
}

/// The client named more than once, or in a spelling some backend reads as the name, is
/// refused with 400 for everyone (issue 11, item 2): PHP, Django and Rails read the last
/// `cf`, Spring and ASP.NET join them, CGI reads `X_Assistito` as `X-Assistito`.
#[test]
fn a_client_named_twice_is_refused_whoever_asks() {
    let query_policy = toml_policy(
        r#"
roles = ["operatore", "volontario", "cittadino"]
[delegation]
query = "cf"
required_for = ["volontario"]
self_only = ["cittadino"]
"#,
    )
    .compile()
    .unwrap();
    let a = cf(CLIENT);
    let b = cf(OTHER);
    let vol = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let op = user(OPERATOR, &["operatore"], Level::SpidL2, Method::Spid);
    let citizen = user(CLIENT, &[], Level::SpidL2, Method::Spid);
    let h = http::HeaderMap::new();
    let decide_q = |who: &Identity, query: &str, body: &[String]| {
        let f = RequestFacts {
            method: &HttpMethod::GET,
            path: "/stampa/doc",
            query: Some(query),
            headers: &h,
            form_fields: body,
            today: today(),
        };
        decide(
            &query_policy,
            who,
            &f,
            &lookups(Some(delega((2025, 1, 1), None, false))),
        )
    };
    let ambiguous = Decision::Deny(Denial::AmbiguousAssistito);
    assert_eq!(Denial::AmbiguousAssistito.status(), 400);
    // Once, in the configured spelling: decided as before.
    let once = format!("cf={}", a.as_str());
    assert_eq!(decide_q(&vol, &once, &[]), Decision::Allow);
    assert_eq!(decide_q(&citizen, &once, &[]), Decision::Allow);
    for twice in [
        format!("cf={}&cf={}", a.as_str(), b.as_str()),
        format!("cf={}&cf={}", a.as_str(), a.as_str()),
        format!("cf={}&CF={}", a.as_str(), b.as_str()),
        format!("cf={}&cf[]={}", a.as_str(), b.as_str()),
        format!("cf={};cf={}", a.as_str(), b.as_str()),
        format!("x=1;cf={}&cf={}", b.as_str(), a.as_str()),
        format!("cf={}&c%66={}", a.as_str(), b.as_str()),
    ] {
        for who in [&vol, &op, &citizen] {
            assert_eq!(decide_q(who, &twice, &[]), ambiguous, "{twice}");
        }
    }
    // The parameter also in a form body.
    let body = vec!["titolo".to_string(), "cf".to_string()];
    assert_eq!(decide_q(&vol, &once, &body), ambiguous);
    assert_eq!(decide_q(&op, &once, &body), ambiguous);
    // Another spelling alone is not the configured name: the volunteer's client is missing.
    let spelt = format!("CF={}", a.as_str());
    assert_eq!(
        decide_q(&vol, &spelt, &[]),
        ambiguous,
        "a spelling only some backends read is refused"
    );
    // A value that is not a fiscal code stays "missing" (denied for those who need it).
    assert_eq!(
        decide_q(&vol, "cf=nonvalido", &[]),
        Decision::Deny(Denial::MissingAssistito)
    );

    let header_policy = toml_policy(
        r#"
roles = ["operatore", "volontario"]
[delegation]
header = "X-Assistito"
"#,
    )
    .compile()
    .unwrap();
    let decide_h = |who: &Identity, pairs: &[(&str, &FiscalCode)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.as_str().parse().unwrap(),
            );
        }
        let f = RequestFacts {
            method: &HttpMethod::GET,
            path: "/x",
            query: None,
            headers: &h,
            form_fields: &[],
            today: today(),
        };
        decide(
            &header_policy,
            who,
            &f,
            &lookups(Some(delega((2025, 1, 1), None, false))),
        )
    };
    assert_eq!(decide_h(&vol, &[("x-assistito", &a)]), Decision::Allow);
    for pairs in [
        vec![("x-assistito", &a), ("x-assistito", &b)],
        vec![("x-assistito", &a), ("x_assistito", &b)],
        vec![("x_assistito", &a)],
    ] {
        assert_eq!(decide_h(&vol, &pairs), ambiguous, "{pairs:?}");
        assert_eq!(decide_h(&op, &pairs), ambiguous, "{pairs:?}");
    }
}

/// `_method` in any name PHP files as `_method` is refused on a route with per-method
/// rules (Laravel, Symfony and Rack would run that method instead).
#[test]
fn method_overrides_are_refused_where_rules_name_methods() {
    let policy = toml_policy(
        r#"
roles = ["volontario"]
[[rule]]
role = "volontario"
effect = "allow"
http_methods = ["GET", "POST"]
"#,
    )
    .compile()
    .unwrap();
    let vol = user(VOLUNTEER, &["volontario"], Level::SpidL2, Method::Spid);
    let h = http::HeaderMap::new();
    let run = |query: Option<&str>, body: &[String]| {
        let f = RequestFacts {
            method: &HttpMethod::POST,
            path: "/x",
            query,
            headers: &h,
            form_fields: body,
            today: today(),
        };
        decide(&policy, &vol, &f, &lookups(None))
    };
    let refused = Decision::Deny(Denial::MethodOverride);
    assert_eq!(Denial::MethodOverride.status(), 400);
    for name in [
        "_method",
        "_METHOD",
        ".method",
        " .method",
        "_method\0x",
        "_method[]",
    ] {
        assert_eq!(run(None, &[name.to_string()]), refused, "{name:?}");
    }
    for q in [
        "_method=DELETE",
        "a=1&.method=DELETE",
        "%20.method=PUT",
        "_method%00x=DELETE",
    ] {
        assert_eq!(run(Some(q), &[]), refused, "{q}");
    }
    // Names that are not `_method` to PHP pass.
    for name in ["method", "payment_method", "_methods"] {
        assert_eq!(
            run(Some(&format!("{name}=x")), &[]),
            Decision::Allow,
            "{name}"
        );
    }
}

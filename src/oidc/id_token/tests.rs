//! Each rule of ID token validation, with tokens signed by a key generated here.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

const ISS: &str = "https://op.example/";
const CLIENT: &str = "https://rp.example/";
const NONCE: &str = "n0nce-n0nce-n0nce-n0nce-n0nce-n0nce-0123";
const NOW: u64 = 1_800_000_000;

struct Op {
    key: EncodingKey,
    jwk: Jwk,
    pem: Vec<u8>,
}

fn op(kid: &str) -> Op {
    let pair = rcgen::KeyPair::generate().unwrap();
    let pem = pair.serialize_pem().into_bytes();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    Op { key, jwk, pem }
}

fn jwks(keys: &[&Op]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|o| o.jwk.clone()).collect(),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": CLIENT,
        "sub": "pairwise-1",
        "iat": NOW - 5,
        "exp": NOW + 300,
        "nonce": NONCE,
        "acr": "https://www.spid.gov.it/SpidL2",
        "sid": "op-session-1",
        "auth_time": NOW - 10,
    })
}

fn sign(op: &Op, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &op.key).unwrap()
}

fn expected(acr: &AcrMap) -> Expected<'_> {
    Expected {
        issuer: ISS,
        client_id: CLIENT,
        nonce: NONCE,
        algorithms: &[Algorithm::ES256, Algorithm::RS256],
        acr,
        required: Level::SpidL2,
        leeway: 30,
        max_age: 600,
        now: NOW,
    }
}

fn check(token: &str, keys: &JwkSet) -> Result<IdToken, IdTokenError> {
    validate(token, keys, &expected(&AcrMap::spid()))
}

fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    c
}

#[test]
fn a_good_token_yields_its_subject_level_and_session() {
    let o = op("k1");
    let t = check(&sign(&o, Some("k1"), &claims()), &jwks(&[&o])).unwrap();
    assert_eq!(t.sub, "pairwise-1");
    assert_eq!(t.level, Level::SpidL2);
    assert_eq!(t.sid.as_deref(), Some("op-session-1"));
    assert_eq!(t.auth_time, Some(NOW - 10));
    // Without a kid, a JWKS of one key is unambiguous.
    assert!(check(&sign(&o, None, &claims()), &jwks(&[&o])).is_ok());
}

#[test]
fn the_signature_and_the_key_are_checked() {
    let (o, other) = (op("k1"), op("k2"));
    let token = sign(&o, Some("k1"), &claims());
    // Signed by another key under the same kid.
    let forged = sign(&other, Some("k1"), &claims());
    assert_eq!(check(&forged, &jwks(&[&o])), Err(IdTokenError::Signature));
    // A changed payload.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(
        with(|c| {
            c.insert("sub".into(), json!("someone-else"));
        })
        .to_string(),
    );
    assert_eq!(
        check(&parts.join("."), &jwks(&[&o])),
        Err(IdTokenError::Signature)
    );
    // A kid the JWKS does not have: the caller refetches (rotation), then it verifies.
    let rotated = sign(&other, Some("k2"), &claims());
    assert_eq!(
        check(&rotated, &jwks(&[&o])),
        Err(IdTokenError::UnknownKey(Some("k2".into())))
    );
    assert!(check(&rotated, &jwks(&[&o, &other])).is_ok());
    // No kid and several keys: ambiguous.
    assert_eq!(
        check(&sign(&o, None, &claims()), &jwks(&[&o, &other])),
        Err(IdTokenError::UnknownKey(None))
    );
    assert!(matches!(
        check("not-a-jwt", &jwks(&[&o])),
        Err(IdTokenError::Malformed(_))
    ));
}

#[test]
fn none_and_shared_secret_algorithms_are_refused() {
    let o = op("k1");
    let keys = jwks(&[&o]);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        b64(&claims())
    );
    assert_eq!(
        check(&none, &keys),
        Err(IdTokenError::Algorithm("none".into()))
    );
    // HS256 keyed with the provider's public key (the classic confusion attack).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&o.pem)).unwrap();
    assert_eq!(
        check(&hs, &keys),
        Err(IdTokenError::Algorithm("HS256".into()))
    );
    // An asymmetric algorithm the provider is not configured for.
    let acr = AcrMap::spid();
    let only_rs = Expected {
        algorithms: &[Algorithm::RS256],
        ..expected(&acr)
    };
    assert_eq!(
        validate(&sign(&o, Some("k1"), &claims()), &keys, &only_rs),
        Err(IdTokenError::Algorithm("ES256".into()))
    );
    // Listing HS256 does not make it acceptable.
    let listed = Expected {
        algorithms: &[Algorithm::HS256, Algorithm::ES256],
        ..expected(&acr)
    };
    assert_eq!(
        validate(&hs, &keys, &listed),
        Err(IdTokenError::Algorithm("HS256".into()))
    );
}

#[test]
fn issuer_audience_and_authorized_party_are_this_client() {
    let o = op("k1");
    let keys = jwks(&[&o]);
    let run = |c: Value| check(&sign(&o, Some("k1"), &c), &keys);
    assert_eq!(
        run(with(|c| {
            c.insert("iss".into(), json!("https://evil.example/"));
        })),
        Err(IdTokenError::Issuer)
    );
    assert_eq!(
        run(with(|c| {
            c.insert("aud".into(), json!("https://other-rp.example/"));
        })),
        Err(IdTokenError::Audience)
    );
    // Several audiences: azp must name this client.
    assert_eq!(
        run(with(|c| {
            c.insert("aud".into(), json!([CLIENT, "https://other-rp.example/"]));
        })),
        Err(IdTokenError::AuthorizedParty)
    );
    assert!(
        run(with(|c| {
            c.insert("aud".into(), json!([CLIENT, "https://other-rp.example/"]));
            c.insert("azp".into(), json!(CLIENT));
        }))
        .is_ok()
    );
    assert_eq!(
        run(with(|c| {
            c.insert("azp".into(), json!("https://other-rp.example/"));
        })),
        Err(IdTokenError::AuthorizedParty)
    );
    assert!(matches!(
        run(with(|c| {
            c.remove("sub");
        })),
        Err(IdTokenError::Claims(_))
    ));
}

#[test]
fn times_are_checked_against_the_injected_clock() {
    let o = op("k1");
    let keys = jwks(&[&o]);
    let run = |c: Value| check(&sign(&o, Some("k1"), &c), &keys);
    assert_eq!(
        run(with(|c| {
            c.insert("exp".into(), json!(NOW - 31));
        })),
        Err(IdTokenError::Expired)
    );
    // Within the leeway.
    assert!(
        run(with(|c| {
            c.insert("exp".into(), json!(NOW - 10));
        }))
        .is_ok()
    );
    assert_eq!(
        run(with(|c| {
            c.insert("iat".into(), json!(NOW + 60));
        })),
        Err(IdTokenError::IssuedInFuture)
    );
    assert_eq!(
        run(with(|c| {
            c.insert("iat".into(), json!(NOW - 700));
        })),
        Err(IdTokenError::TooOld)
    );
    // An `auth_time` in the future (which would start a session that never times out).
    assert_eq!(
        run(with(|c| {
            c.insert("auth_time".into(), json!(u64::MAX / 2));
        })),
        Err(IdTokenError::IssuedInFuture)
    );
    // One long past is an old single sign-on session at the provider: accepted.
    assert!(
        run(with(|c| {
            c.insert("auth_time".into(), json!(NOW - 9 * 3600));
        }))
        .is_ok()
    );
    assert_eq!(
        run(with(|c| {
            c.insert("nbf".into(), json!(NOW + 60));
        })),
        Err(IdTokenError::NotYetValid)
    );
    assert!(matches!(
        run(with(|c| {
            c.remove("iat");
        })),
        Err(IdTokenError::Claims(_))
    ));
}

#[test]
fn the_nonce_is_the_logins() {
    let o = op("k1");
    let keys = jwks(&[&o]);
    let run = |c: Value| check(&sign(&o, Some("k1"), &c), &keys);
    assert_eq!(
        run(with(|c| {
            c.insert("nonce".into(), json!("another-nonce"));
        })),
        Err(IdTokenError::Nonce)
    );
    assert_eq!(
        run(with(|c| {
            c.remove("nonce");
        })),
        Err(IdTokenError::Nonce)
    );
    // A pending login without a nonce accepts nothing.
    let acr = AcrMap::spid();
    let empty = Expected {
        nonce: "",
        ..expected(&acr)
    };
    let no_nonce = with(|c| {
        c.insert("nonce".into(), json!(""));
    });
    assert_eq!(
        validate(&sign(&o, Some("k1"), &no_nonce), &keys, &empty),
        Err(IdTokenError::Nonce)
    );
}

#[test]
fn the_acr_reaches_the_level_asked_for() {
    let o = op("k1");
    let keys = jwks(&[&o]);
    let run = |c: Value| check(&sign(&o, Some("k1"), &c), &keys);
    assert_eq!(
        run(with(|c| {
            c.insert("acr".into(), json!("https://www.spid.gov.it/SpidL1"));
        })),
        Err(IdTokenError::LevelTooLow {
            got: Level::SpidL1,
            required: Level::SpidL2
        })
    );
    let high = run(with(|c| {
        c.insert("acr".into(), json!("https://www.spid.gov.it/SpidL3"));
    }))
    .unwrap();
    assert_eq!(high.level, Level::SpidL3);
    assert_eq!(
        run(with(|c| {
            c.insert("acr".into(), json!("urn:other"));
        })),
        Err(IdTokenError::UnknownAcr("urn:other".into()))
    );
    assert_eq!(
        run(with(|c| {
            c.remove("acr");
        })),
        Err(IdTokenError::NoAcr)
    );
    // A generic provider's map: its own values, and a level for tokens without acr.
    let map = AcrMap {
        values: vec![("urn:example:mfa".into(), Level::SpidL2)],
        absent: Some(Level::SpidL1),
    };
    let generic = Expected {
        acr: &map,
        required: Level::SpidL1,
        ..expected(&map)
    };
    let none = sign(
        &o,
        Some("k1"),
        &with(|c| {
            c.remove("acr");
        }),
    );
    assert_eq!(
        validate(&none, &keys, &generic).unwrap().level,
        Level::SpidL1
    );
    let mfa = sign(
        &o,
        Some("k1"),
        &with(|c| {
            c.insert("acr".into(), json!("urn:example:mfa"));
        }),
    );
    assert_eq!(
        validate(&mfa, &keys, &generic).unwrap().level,
        Level::SpidL2
    );
}

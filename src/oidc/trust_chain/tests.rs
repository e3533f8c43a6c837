//! A trust anchor, an intermediate and an OP with keys generated here; each rule broken
//! once.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_800_000_000;
const TA: &str = "https://ta.example/";
const INT: &str = "https://intermediate.example/";
const OP: &str = "https://op.example/";

struct Entity {
    id: &'static str,
    key: EncodingKey,
    jwk: Jwk,
}

fn entity(id: &'static str, kid: &str) -> Entity {
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    Entity { id, key, jwk }
}

impl Entity {
    fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("entity-statement+jwt".into());
        h.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            entity_id: self.id.into(),
            jwks: JwkSet {
                keys: vec![self.jwk.clone()],
            },
        }
    }
}

struct Fed {
    ta: Entity,
    int: Entity,
    op: Entity,
}

fn fed() -> Fed {
    Fed {
        ta: entity(TA, "ta-1"),
        int: entity(INT, "int-1"),
        op: entity(OP, "op-1"),
    }
}

fn op_configuration(f: &Fed, extra: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = json!({
        "iss": OP, "sub": OP, "iat": NOW - 10, "exp": NOW + 3600,
        "jwks": f.op.jwks(),
        "authority_hints": [INT],
        "metadata": {"openid_provider": {
            "issuer": OP,
            "authorization_endpoint": "https://op.example/authorize",
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }},
        "trust_marks": [{"id": "https://ta.example/openid_provider/public", "trust_mark": "x.y.z"}],
    });
    extra(c.as_object_mut().unwrap());
    f.op.sign(&c)
}

fn about(by: &Entity, sub: &Entity, extra: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = json!({
        "iss": by.id, "sub": sub.id, "iat": NOW - 10, "exp": NOW + 7200,
        "jwks": sub.jwks(),
    });
    extra(c.as_object_mut().unwrap());
    by.sign(&c)
}

fn run(chain: &[String], f: &Fed) -> Result<Resolved, ChainError> {
    let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
    resolve(&refs, &f.ta.anchor(), "openid_provider", NOW, 30)
}

fn good(f: &Fed) -> Vec<String> {
    vec![
        op_configuration(f, |_| {}),
        about(&f.int, &f.op, |_| {}),
        about(&f.ta, &f.int, |c| {
            c.insert(
                "metadata_policy".into(),
                json!({"openid_provider": {
                    "id_token_signing_alg_values_supported": {"subset_of": ["RS256", "ES256", "PS256"]},
                    "token_endpoint_auth_methods_supported": {"superset_of": ["private_key_jwt"]},
                }}),
            );
        }),
    ]
}

#[test]
fn a_valid_chain_resolves_the_leafs_metadata_through_the_policy() {
    let f = fed();
    let r = run(&good(&f), &f).unwrap();
    assert_eq!(r.entity_id, OP);
    assert_eq!(
        r.metadata["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    // The chain expires with its earliest statement (the OP's configuration).
    assert_eq!(r.expires, NOW + 3600);
    assert_eq!(r.trust_marks.len(), 1);
    // With the anchor's own configuration at the end, the same.
    let mut with_ta = good(&f);
    with_ta.push(
        f.ta.sign(
            &json!({"iss": TA, "sub": TA, "iat": NOW, "exp": NOW + 100, "jwks": f.ta.jwks()}),
        ),
    );
    assert_eq!(run(&with_ta, &f).unwrap().metadata, r.metadata);
}

#[test]
fn every_signature_is_checked_with_the_superiors_keys() {
    let f = fed();
    let stranger = entity(OP, "op-1");
    // The OP's configuration signed by a key its superior does not vouch for.
    let mut chain = good(&f);
    chain[0] = {
        let c = Statement::unverified(&chain[0]).unwrap().claims;
        let mut c = Value::Object(c);
        c["jwks"] = stranger.jwks();
        stranger.sign(&c)
    };
    assert_eq!(run(&chain, &f), Err(ChainError::Signature(OP.into())));
    // The intermediate's statement signed by another key.
    let fake_int = entity(INT, "int-1");
    let mut chain = good(&f);
    chain[1] = about(&fake_int, &f.op, |_| {});
    assert_eq!(run(&chain, &f), Err(ChainError::Signature(INT.into())));
    // A different anchor key.
    let other_ta = entity(TA, "ta-1");
    let chain = good(&f);
    let refs2: Vec<&str> = chain.iter().map(String::as_str).collect();
    assert_eq!(
        resolve(&refs2, &other_ta.anchor(), "openid_provider", NOW, 30),
        Err(ChainError::Signature(TA.into()))
    );
    // A changed payload.
    let mut chain = good(&f);
    let mut parts: Vec<String> = chain[1].split('.').map(str::to_string).collect();
    let mut c = Statement::unverified(&chain[1]).unwrap().claims;
    c.insert(
        "metadata".into(),
        json!({"openid_provider": {"issuer": "https://evil.example/"}}),
    );
    parts[1] = URL_SAFE_NO_PAD.encode(Value::Object(c).to_string());
    chain[1] = parts.join(".");
    assert_eq!(run(&chain, &f), Err(ChainError::Signature(INT.into())));
}

#[test]
fn time_links_length_and_anchor_are_checked() {
    let f = fed();
    let mut chain = good(&f);
    chain[1] = about(&f.int, &f.op, |c| {
        c.insert("exp".into(), json!(NOW - 60));
    });
    assert_eq!(run(&chain, &f), Err(ChainError::Expired(INT.into())));
    let mut chain = good(&f);
    chain[2] = about(&f.ta, &f.int, |c| {
        c.insert("iat".into(), json!(NOW + 600));
    });
    assert_eq!(run(&chain, &f), Err(ChainError::NotYetValid(TA.into())));
    // A statement about someone else.
    let mut chain = good(&f);
    chain[1] = about(&f.int, &f.ta, |_| {});
    assert_eq!(run(&chain, &f), Err(ChainError::Broken(INT.into())));
    // The leaf does not name the intermediate as its authority.
    let mut chain = good(&f);
    chain[0] = op_configuration(&f, |c| {
        c.insert(
            "authority_hints".into(),
            json!(["https://elsewhere.example/"]),
        );
    });
    assert_eq!(run(&chain, &f), Err(ChainError::Broken(INT.into())));
    // Not self-issued.
    let mut chain = good(&f);
    chain[0] = op_configuration(&f, |c| {
        c.insert("iss".into(), json!(INT));
    });
    assert_eq!(run(&chain, &f), Err(ChainError::NotSelfIssued));
    // Ends at another authority.
    let chain = vec![good(&f)[0].clone(), good(&f)[1].clone()];
    assert_eq!(run(&chain, &f), Err(ChainError::NotAnchored(TA.into())));
    // The anchor allows no intermediate.
    let mut chain = good(&f);
    chain[2] = about(&f.ta, &f.int, |c| {
        c.insert("constraints".into(), json!({"max_path_length": 0}));
    });
    assert_eq!(run(&chain, &f), Err(ChainError::PathTooLong(TA.into())));
    let mut chain = good(&f);
    chain[2] = about(&f.ta, &f.int, |c| {
        c.insert("constraints".into(), json!({"max_path_length": 1}));
    });
    assert!(run(&chain, &f).is_ok());
    assert_eq!(run(&good(&f)[..1], &f), Err(ChainError::Length));
}

#[test]
fn a_leaf_outside_the_anchors_policy_is_not_trusted() {
    let f = fed();
    let mut chain = good(&f);
    chain[2] = about(&f.ta, &f.int, |c| {
        c.insert(
            "metadata_policy".into(),
            json!({"openid_provider": {"token_endpoint_auth_methods_supported": {"superset_of": ["tls_client_auth"]}}}),
        );
    });
    assert!(matches!(
        run(&chain, &f),
        Err(ChainError::Policy(PolicyError::Violation { .. }))
    ));
    // The intermediate and the anchor disagree.
    let mut chain = good(&f);
    chain[1] = about(&f.int, &f.op, |c| {
        c.insert(
            "metadata_policy".into(),
            json!({"openid_provider": {"id_token_signing_alg_values_supported": {"one_of": ["RS256"]}}}),
        );
    });
    assert!(matches!(
        run(&chain, &f),
        Err(ChainError::Policy(PolicyError::Combination { .. }))
    ));
    // The superior's stated metadata replaces the leaf's.
    let mut chain = good(&f);
    chain[1] = about(&f.int, &f.op, |c| {
        c.insert(
            "metadata".into(),
            json!({"openid_provider": {"authorization_endpoint": "https://op.example/auth2"}}),
        );
    });
    let r = run(&chain, &f).unwrap();
    assert_eq!(
        r.metadata["authorization_endpoint"],
        "https://op.example/auth2"
    );
    // No metadata of the type asked for.
    let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
    assert_eq!(
        resolve(&refs, &f.ta.anchor(), "openid_relying_party", NOW, 30),
        Err(ChainError::NoMetadata("openid_relying_party".into()))
    );
}

#[test]
fn statements_that_are_not_entity_statements_are_refused() {
    let f = fed();
    let mut chain = good(&f);
    let c = Statement::unverified(&chain[1]).unwrap().claims;
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("int-1".into());
    h.typ = Some("JWT".into());
    chain[1] = jsonwebtoken::encode(&h, &Value::Object(c), &f.int.key).unwrap();
    assert_eq!(run(&chain, &f), Err(ChainError::Type(INT.into())));
    let mut chain = good(&f);
    chain[1] = "not.a-statement".into();
    assert!(matches!(run(&chain, &f), Err(ChainError::Malformed(_))));
}

mod arbitrary_input {
    use proptest::prelude::*;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        /// Whatever the bytes, the statement, ID token and JWE parsers answer without
        /// panicking, and nothing resolves against an anchor with no keys.
        #[test]
        fn untrusted_tokens_never_panic(
            head in proptest::collection::vec(any::<u8>(), 0..64),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            json_body in "\\{(\"(iss|sub|iat|exp|jwks|authority_hints|metadata|metadata_policy|constraints)\":(\"[a-z:/.]{0,12}\"|[0-9]{1,11}|\\[\\]|\\{\\}|null),?){0,9}\\}",
            raw in "[A-Za-z0-9._-]{0,200}",
        ) {
            let anchor = TrustAnchor { entity_id: TA.into(), jwks: JwkSet { keys: Vec::new() } };
            let tokens = [
                raw.clone(),
                format!("{}.{}.{}", b64(&head), b64(&body), b64(&head)),
                format!("{}.{}.sig", b64(br#"{"alg":"ES256","typ":"entity-statement+jwt","kid":"k"}"#), b64(json_body.as_bytes())),
            ];
            for t in &tokens {
                let _ = Statement::unverified(t);
                let chain = [t.as_str(), t.as_str(), t.as_str()];
                prop_assert!(resolve(&chain, &anchor, "openid_provider", NOW, 30).is_err());
                let acr = crate::oidc::id_token::AcrMap::spid();
                let exp = crate::oidc::id_token::Expected {
                    issuer: OP, client_id: "c", nonce: "n", algorithms: &[Algorithm::ES256],
                    acr: &acr, required: crate::identity::Level::SpidL2, leeway: 0, max_age: 60, now: NOW,
                };
                let empty = JwkSet { keys: Vec::new() };
                let token_refused = crate::oidc::id_token::validate(t, &empty, &exp).is_err();
                prop_assert!(token_refused);
                let five = [t.as_str(); 5].join(".");
                let jwe_refused = crate::oidc::jwe::decrypt(&five, &[]).is_err();
                prop_assert!(jwe_refused);
            }
        }
    }
}

/// The anchor's constraints on what is below the intermediate: the OP's host must be
/// permitted and not excluded, and its entity type allowed.
#[test]
fn naming_constraints_and_allowed_entity_types_bind_the_entities_below() {
    let f = fed();
    let with = |constraints: Value| {
        let mut chain = good(&f);
        chain[2] = about(&f.ta, &f.int, |c| {
            c.insert("constraints".into(), constraints);
        });
        run(&chain, &f)
    };
    assert!(with(json!({"naming_constraints": {"permitted": [".example"]}})).is_ok());
    assert!(with(json!({"naming_constraints": {"permitted": ["op.example"]}})).is_ok());
    let excluded = Err(ChainError::Constraint {
        by: TA.into(),
        what: OP.into(),
    });
    assert_eq!(
        with(json!({"naming_constraints": {"permitted": [".other.example"]}})),
        excluded
    );
    assert_eq!(
        with(
            json!({"naming_constraints": {"permitted": [".example"], "excluded": ["op.example"]}})
        ),
        excluded
    );
    assert!(with(json!({"allowed_entity_types": ["openid_provider"]})).is_ok());
    assert!(matches!(
        with(json!({"allowed_entity_types": ["openid_relying_party"]})),
        Err(ChainError::Constraint { .. })
    ));
}

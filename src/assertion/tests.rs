use std::time::{Duration, SystemTime};

use super::verify::{Expected, VerifyError, parse_jwks, verify};
use super::*;
use crate::identity::{FiscalCode, Level, Method, Role};

pub(crate) fn identity() -> Identity {
    Identity {
        subject: FiscalCode::parse("RSSMRA80A01H501U").unwrap(),
        given_name: "Mario".into(),
        family_name: "Rossi \"il Grande\"".into(),
        level: Level::SpidL2,
        method: Method::Spid,
        idp: "https://idp.example/".into(),
        roles: vec![Role("operatore".into())],
        patronato: None,
        auth_time: 1_790_000_000,
        extra: Default::default(),
    }
}

fn pem(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    rcgen::KeyPair::generate_for(alg)
        .unwrap()
        .serialize_pem()
        .into_bytes()
}

fn keyset(keys: &[(&str, SigningAlgorithm, &[u8])], active: &str) -> Arc<KeySet> {
    Arc::new(
        KeySet::from_pems(
            keys.iter()
                .map(|(k, a, p)| (k.to_string(), *a, p.to_vec()))
                .collect(),
            Some(active),
        )
        .unwrap(),
    )
}

const BINDING: RequestBinding<'static> = RequestBinding {
    audience: "pensioni",
    method: "GET",
    url: "https://app.example.it/fascicolo/RSSMRA80A01H501U?x=1",
};

fn expected() -> Expected<'static> {
    Expected {
        audience: "pensioni",
        issuer: Some("https://varco.example/"),
        method: Some("GET"),
        url: Some("https://app.example.it/fascicolo/RSSMRA80A01H501U?x=1"),
        leeway: 0,
    }
}

fn mint_with(keys: &Arc<KeySet>, now: SystemTime) -> String {
    let minter = Minter::new(keys.clone(), Duration::from_secs(60));
    let session = SessionClaims::new("https://varco.example/", &identity(), "sidhash").unwrap();
    minter.mint(&session, &BINDING, now).unwrap()
}

#[test]
fn es256_and_eddsa_headers_verify_with_all_claims() {
    for (alg, key) in [
        (SigningAlgorithm::ES256, pem(&rcgen::PKCS_ECDSA_P256_SHA256)),
        (SigningAlgorithm::EdDSA, pem(&rcgen::PKCS_ED25519)),
    ] {
        let keys = keyset(&[("k1", alg, &key)], "k1");
        let token = mint_with(&keys, SystemTime::now());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg.jwt());
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let jwks = parse_jwks(&keys.jwks_json()).unwrap();
        let c = verify(&token, &jwks, &expected()).unwrap();
        assert_eq!(c.sub, "RSSMRA80A01H501U");
        assert_eq!(c.iss, "https://varco.example/");
        assert_eq!(c.aud, "pensioni");
        assert_eq!(c.acr, "https://www.spid.gov.it/SpidL2");
        assert_eq!(c.amr, "spid");
        assert_eq!(c.idp, "https://idp.example/");
        assert_eq!(c.family_name, "Rossi \"il Grande\"");
        assert_eq!(c.roles, vec!["operatore".to_string()]);
        assert_eq!(c.sid, "sidhash");
        assert_eq!(c.exp - c.iat, 60);
        assert_eq!(c.jti.len(), 32);
    }
}

#[test]
fn rs256_headers_verify() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let key = pair.serialize_pem().into_bytes();
    let keys = keyset(&[("r1", SigningAlgorithm::RS256, &key)], "r1");
    let token = mint_with(&keys, SystemTime::now());
    let jwks = parse_jwks(&keys.jwks_json()).unwrap();
    assert!(verify(&token, &jwks, &expected()).is_ok());
}

#[test]
fn jti_is_unique_per_request() {
    let keys = keyset(
        &[(
            "k1",
            SigningAlgorithm::ES256,
            &pem(&rcgen::PKCS_ECDSA_P256_SHA256),
        )],
        "k1",
    );
    let jwks = parse_jwks(&keys.jwks_json()).unwrap();
    let a = verify(&mint_with(&keys, SystemTime::now()), &jwks, &expected()).unwrap();
    let b = verify(&mint_with(&keys, SystemTime::now()), &jwks, &expected()).unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn binding_audience_issuer_and_expiry_are_enforced() {
    let keys = keyset(
        &[(
            "k1",
            SigningAlgorithm::ES256,
            &pem(&rcgen::PKCS_ECDSA_P256_SHA256),
        )],
        "k1",
    );
    let jwks = parse_jwks(&keys.jwks_json()).unwrap();
    let token = mint_with(&keys, SystemTime::now());

    let other_url = Expected {
        url: Some("https://app.example.it/fascicolo/VRDGPP70A01H501X"),
        ..expected()
    };
    assert!(matches!(
        verify(&token, &jwks, &other_url),
        Err(VerifyError::Url { .. })
    ));
    let other_method = Expected {
        method: Some("POST"),
        ..expected()
    };
    assert!(matches!(
        verify(&token, &jwks, &other_method),
        Err(VerifyError::Method { .. })
    ));
    let other_aud = Expected {
        audience: "domande",
        ..expected()
    };
    assert_eq!(
        verify(&token, &jwks, &other_aud),
        Err(VerifyError::Audience("domande".into()))
    );
    let other_iss = Expected {
        issuer: Some("https://elsewhere/"),
        ..expected()
    };
    assert!(matches!(
        verify(&token, &jwks, &other_iss),
        Err(VerifyError::Issuer(_))
    ));
    let old = mint_with(&keys, SystemTime::now() - Duration::from_secs(120));
    assert_eq!(verify(&old, &jwks, &expected()), Err(VerifyError::Expired));
}

#[test]
fn tampering_and_foreign_algorithms_are_refused() {
    let keys = keyset(
        &[(
            "k1",
            SigningAlgorithm::ES256,
            &pem(&rcgen::PKCS_ECDSA_P256_SHA256),
        )],
        "k1",
    );
    let jwks = parse_jwks(&keys.jwks_json()).unwrap();
    let token = mint_with(&keys, SystemTime::now());
    let parts: Vec<&str> = token.split('.').collect();

    // A payload with another subject, the original signature.
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace("RSSMRA80A01H501U", "VRDGPP70A01H501X");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged),
        parts[2]
    );
    assert_eq!(
        verify(&forged, &jwks, &expected()),
        Err(VerifyError::Signature)
    );

    // alg=none and HS256 (with the public key as the HMAC secret) are refused.
    for alg in ["none", "HS256"] {
        let header = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}"));
        let t = format!("{header}.{}.{}", parts[1], parts[2]);
        assert!(verify(&t, &jwks, &expected()).is_err(), "{alg} accepted");
    }
    assert!(matches!(
        verify("not.a.jwt", &jwks, &expected()),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn rotation_keeps_old_tokens_valid_while_their_key_is_published() {
    let k1 = pem(&rcgen::PKCS_ECDSA_P256_SHA256);
    let k2 = pem(&rcgen::PKCS_ED25519);
    let before = keyset(&[("k1", SigningAlgorithm::ES256, &k1)], "k1");
    let old_token = mint_with(&before, SystemTime::now());

    // Step 1-2: add k2 and make it active; k1 stays published.
    let during = keyset(
        &[
            ("k1", SigningAlgorithm::ES256, &k1),
            ("k2", SigningAlgorithm::EdDSA, &k2),
        ],
        "k2",
    );
    let jwks = parse_jwks(&during.jwks_json()).unwrap();
    assert_eq!(jwks.keys.len(), 2);
    assert!(verify(&old_token, &jwks, &expected()).is_ok());
    let new_token = mint_with(&during, SystemTime::now());
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("k2")
    );
    assert!(verify(&new_token, &jwks, &expected()).is_ok());

    // Step 3: k1 removed: its tokens no longer verify.
    let after = keyset(&[("k2", SigningAlgorithm::EdDSA, &k2)], "k2");
    let jwks = parse_jwks(&after.jwks_json()).unwrap();
    assert_eq!(
        verify(&old_token, &jwks, &expected()),
        Err(VerifyError::UnknownKid("k1".into()))
    );
}

#[test]
fn jwks_publishes_public_parts_only() {
    let keys = keyset(
        &[
            (
                "k1",
                SigningAlgorithm::ES256,
                &pem(&rcgen::PKCS_ECDSA_P256_SHA256),
            ),
            ("k2", SigningAlgorithm::EdDSA, &pem(&rcgen::PKCS_ED25519)),
        ],
        "k1",
    );
    let v: serde_json::Value = serde_json::from_slice(&keys.jwks_json()).unwrap();
    let list = v["keys"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for k in list {
        assert!(k.get("d").is_none(), "private part published: {k}");
        assert_eq!(k["use"], "sig");
    }
    assert_eq!(list[0]["kid"], "k1");
    assert_eq!(list[0]["kty"], "EC");
    assert_eq!(list[0]["crv"], "P-256");
    assert_eq!(list[1]["kty"], "OKP");
}

#[test]
fn bad_key_configuration_is_refused_without_leaking_the_key() {
    let err = KeySet::from_pems(
        vec![(
            "k1".into(),
            SigningAlgorithm::EdDSA,
            pem(&rcgen::PKCS_ECDSA_P256_SHA256),
        )],
        Some("k1"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, AssertionError::KeyFormat { .. }));
    assert!(!err.to_string().contains("PRIVATE"));
    let key = pem(&rcgen::PKCS_ECDSA_P256_SHA256);
    let err = KeySet::from_pems(
        vec![("k1".into(), SigningAlgorithm::ES256, key)],
        Some("k9"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, AssertionError::NoActiveKey));
}

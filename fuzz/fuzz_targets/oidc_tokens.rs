//! The OIDC parsers of untrusted tokens never panic: entity statements and trust chains,
//! ID tokens, back-channel logout tokens, UserInfo JWEs, discovery documents. Nothing
//! verifies against empty key sets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use varco::oidc::{discovery, id_token, jwe, logout_token, trust_chain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let parts: Vec<&str> = s.splitn(4, '\n').collect();
    let _ = trust_chain::Statement::unverified(parts[0]);
    let anchor = trust_chain::TrustAnchor {
        entity_id: "https://ta.example/".into(),
        jwks: jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
    };
    assert!(trust_chain::resolve(&parts, &anchor, "openid_provider", 1_800_000_000, 30).is_err());
    let acr = id_token::AcrMap::spid();
    let expected = id_token::Expected {
        issuer: "https://op.example/",
        client_id: "c",
        nonce: "n",
        algorithms: &[jsonwebtoken::Algorithm::ES256],
        acr: &acr,
        required: varco::identity::Level::SpidL2,
        leeway: 0,
        max_age: 60,
        now: 1_800_000_000,
    };
    let empty = jsonwebtoken::jwk::JwkSet { keys: Vec::new() };
    assert!(id_token::validate(s, &empty, &expected).is_err());
    assert!(jwe::decrypt(s, &[]).is_err());
    let logout = logout_token::Expected {
        issuer: "https://op.example/",
        client_id: "c",
        algorithms: &[jsonwebtoken::Algorithm::ES256],
        leeway: 0,
        max_age: 60,
        now: 1_800_000_000,
    };
    assert!(logout_token::validate(s, &empty, &logout).is_err());
    let _ = discovery::parse(data, "https://op.example/");
});

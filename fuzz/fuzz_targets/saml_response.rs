//! The SAML response path on untrusted bytes: pre-filter (size, UTF-8, no DTD/entities),
//! envelope rules, XML signature shape + xmlsec verification against the test IdP
//! certificate, assertion rules. Nothing may panic; nothing unsigned may be accepted.
//!
//!   cargo +nightly fuzz run saml_response ../tests/fixtures/saml
//!
//! (the corpus of tests/fixtures/saml is the seed: valid, invalid and attack responses).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use varco::identity::Level;
use varco::saml::authn_request::Profile;
use varco::saml::response::{Expected, validate_response_xml};

fn idp_cert() -> Vec<u8> {
    let pem = include_str!("../../tests/fixtures/saml/idp-test.crt.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = varco::saml::prefilter::check_xml(data.to_vec()) else {
        return;
    };
    // The corpus's fixed "now" and expectations (src/saml/response/corpus.rs).
    let exp = Expected {
        profile: Profile::Spid,
        idp_entity_id: "https://idp.example/",
        sp_entity_id: "https://sp.example.it/",
        acs_url: "https://sp.example.it/_varco/saml/acs",
        request_id: "_req1",
        request_issued_at: 1_795_840_000 - 30,
        requested_level: Level::SpidL2,
        now: 1_795_840_000,
        skew: 5,
    };
    if let Ok((_, facts)) = validate_response_xml(&xml, &exp, &[idp_cert()]) {
        // Whatever is accepted carries the signed subject of the corpus.
        assert!(facts.attributes.contains_key("fiscalNumber"));
    }
});

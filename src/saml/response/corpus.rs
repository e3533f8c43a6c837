//! The fixture corpus of tests/fixtures/saml/: the valid SPID response, one invalid
//! variant per rule, signature and wrapping attacks, and the accepted edge cases — each a
//! file, signed by the committed test IdP key where the case needs a signature, with its
//! outcome in `MANIFEST`. Every file goes through the whole pipeline (pre-filter,
//! envelope, signature, assertion). `VARCO_WRITE_FIXTURES=1 cargo test --lib corpus`
//! regenerates the files; otherwise the files must equal what the generator produces and
//! must give the outcome written in the manifest.

use super::tests::*;
use super::*;
use crate::saml::xmldsig::{SignatureError, sign_enveloped, signature_template};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/saml");

/// The pipeline a received form value goes through, on decoded text.
fn run(xml: &str, profile: Profile) -> Result<(EnvelopeFacts, AssertionFacts), SamlError> {
    let text = crate::saml::prefilter::check_xml(xml.as_bytes().to_vec())?;
    validate_response_xml(&text, &expected(profile), &[idp_signer().cert])
}

fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').to_string()
}

fn span(xml: &str, open: &str, close: &str) -> (usize, usize) {
    let start = xml.find(open).expect("open tag");
    let end = xml[start..].find(close).expect("close tag") + start + close.len();
    (start, end)
}

/// Returns `(assertion, assertion without its signature)` of a signed response.
fn signed_assertion_of(xml: &str) -> (String, String) {
    let (a, b) = span(xml, "<saml:Assertion", "</saml:Assertion>");
    let assertion = xml[a..b].to_string();
    let (s, e) = span(&assertion, "<ds:Signature", "</ds:Signature>");
    let bare = format!("{}{}", &assertion[..s], &assertion[e..]);
    (assertion, bare)
}

const EVIL_CF: &str = "TINIT-BNCGLI85C52H501";

/// The attacker's assertion: another subject, another ID (its copied signature no longer
/// matches).
fn evil(assertion: &str) -> String {
    assertion
        .replace("TINIT-RSSMRA80A01H501U", &format!("{EVIL_CF}X"))
        .replace("_assert1", "_evil")
}

/// XML signature wrapping variants XSW1–XSW8 (the SAML Raider catalogue) over a response
/// whose Response and Assertion are both signed, plus related attacks.
fn wrapping_cases() -> Vec<(&'static str, String)> {
    let signed = with(|f| f.sign_response = true).response();
    let (assertion, bare) = signed_assertion_of(&signed);
    let (rs, re) = span(&signed, "<ds:Signature", "</ds:Signature>");
    let response_sig = &signed[rs..re];
    let (a0, a1) = span(&signed, "<saml:Assertion", "</saml:Assertion>");
    let sig_close = "</ds:Signature>";
    let evil_response = |inner_sig: &str, after_sig: &str| {
        format!(
            "{}{}{}{}{}",
            signed[..rs].replace("ID=\"_resp1\"", "ID=\"_evilresp\""),
            after_sig,
            inner_sig,
            &signed[re..a0],
            evil(&bare) + &signed[a1..]
        )
    };
    let mut cases = vec![
        // XSW1: the original Response inside the copied Response signature.
        (
            "xsw1 original response inside the signature of an evil response",
            evil_response(
                &response_sig.replace(sig_close, &format!("{signed}{sig_close}")),
                "",
            ),
        ),
        // XSW2: the original Response as a sibling before the copied signature.
        (
            "xsw2 original response beside the signature of an evil response",
            evil_response(response_sig, &signed),
        ),
        // XSW3: an evil Assertion before the signed one.
        (
            "xsw3 evil assertion before the signed assertion",
            format!("{}{}{}", &signed[..a0], evil(&bare), &signed[a0..]),
        ),
        // XSW4: the signed Assertion inside the evil one.
        (
            "xsw4 signed assertion wrapped in an evil assertion",
            format!(
                "{}{}{}",
                &signed[..a0],
                evil(&bare).replace(
                    "</saml:Assertion>",
                    &format!("{assertion}</saml:Assertion>")
                ),
                &signed[a1..]
            ),
        ),
        // XSW5: the evil copy keeps the signature; the original, unsigned, at the end.
        (
            "xsw5 evil copy with the signature and the original appended",
            format!(
                "{}{}{}",
                &signed[..a0],
                evil(&assertion),
                signed[a1..].replace("</samlp:Response>", &format!("{bare}</samlp:Response>"))
            ),
        ),
        // XSW6: the original inside the signature of the evil copy.
        (
            "xsw6 original inside the signature of the evil copy",
            format!(
                "{}{}{}",
                &signed[..a0],
                evil(&assertion).replace(sig_close, &format!("{bare}{sig_close}")),
                &signed[a1..]
            ),
        ),
        // XSW7: the original in an Extensions element, the evil copy unsigned.
        (
            "xsw7 original in extensions and an unsigned evil assertion",
            format!(
                "{}<samlp:Extensions>{assertion}</samlp:Extensions>{}{}",
                &signed[..a0],
                evil(&bare),
                &signed[a1..]
            ),
        ),
        // XSW8: the original in a ds:Object of the evil copy's signature.
        (
            "xsw8 original in a ds object of the evil copy",
            format!(
                "{}{}{}",
                &signed[..a0],
                evil(&assertion).replace(
                    sig_close,
                    &format!("<ds:Object>{bare}</ds:Object>{sig_close}")
                ),
                &signed[a1..]
            ),
        ),
    ];

    // A signed foreign element before an unsigned Assertion.
    let ext = sign_enveloped(
        &format!(
            "<samlp:Extensions xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" ID=\"_ext\"><saml:Issuer>x</saml:Issuer>{}</samlp:Extensions>",
            signature_template("_ext", &idp_signer().cert)
        ),
        &idp_signer().key,
    )
    .unwrap();
    let unsigned = with(|f| f.sign_assertion = false).response();
    let (u0, _) = span(&unsigned, "<saml:Assertion", "</saml:Assertion>");
    cases.push((
        "signed foreign element before an unsigned assertion",
        format!("{}{ext}{}", &unsigned[..u0], &unsigned[u0..]),
    ));
    // Comments inside signed values: canonicalization drops them, the signature holds.
    let plain = valid().response();
    cases.push((
        "comment injected in the fiscal number",
        plain.replace("TINIT-RSSMRA80A01H501U", "TINIT-RSSMRA<!---->80A01H501U"),
    ));
    cases.push((
        "comment injected in the nameid",
        plain.replace(">_n1<", ">_n<!-- -->1<"),
    ));
    // Duplicate IDs: the Response takes the Assertion's ID.
    cases.push((
        "duplicate id on response and assertion",
        plain.replace("ID=\"_resp1\"", "ID=\"_assert1\""),
    ));
    // Content changed after signing.
    cases.push((
        "signed attribute value changed",
        plain.replace(">Mario<", ">Maria<"),
    ));
    // DTD and entities, refused before any parser.
    cases.push((
        "internal dtd with entity expansion",
        format!(
            "<!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;\">]>{}",
            plain.replace(">Mario<", ">&b;<")
        ),
    ));
    // UTF-7: libxml would decode `+ADw-` into markup that no check of the UTF-8 text saw.
    cases.push((
        "utf-7 encoding declaration hiding markup",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}",
            plain.replace(">Mario<", ">+ADw-x ID+AD0AIg-evil+ACI-/+AD4-<")
        ),
    ));
    cases.push((
        "external entity",
        format!(
            "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
            plain.replace(">Mario<", ">&x;<")
        ),
    ));
    cases
}

/// A SHA-1 signature (digest and method): refused by the allowed-algorithm list.
fn sha1_signed() -> String {
    let f = valid();
    let mut unsigned = f.clone();
    unsigned.sign_assertion = false;
    let xml = unsigned.response();
    let template = signature_template("_assert1", &idp_signer().cert)
        .replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        )
        .replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
    let (a0, _) = span(&xml, "<saml:Assertion", "</saml:Assertion>");
    let at = xml[a0..].find("</saml:Issuer>").unwrap() + a0 + "</saml:Issuer>".len();
    let with_template = format!("{}{template}{}", &xml[..at], &xml[at..]);
    // Sign the Assertion alone (xmlsec signs the first template of the document).
    sign_enveloped(&with_template, &idp_signer().key).unwrap()
}

/// Every case of the corpus: (name, xml, profile, expected outcome).
fn cases() -> Vec<(String, String, Profile, Result<(), SamlError>)> {
    let mut out = Vec::new();
    let spid = Profile::Spid;
    out.push((
        "valid spid response".into(),
        valid().response(),
        spid,
        Ok(()),
    ));
    for (name, f, err) in response_rule_cases() {
        out.push((format!("response {name}"), f.response(), spid, Err(err)));
    }
    for (name, f, err) in assertion_rule_cases() {
        // Without an ID the Assertion cannot carry a signature by reference.
        let err = if name.starts_with("ID ") {
            SamlError::Signature(SignatureError::Unsigned("Assertion"))
        } else {
            err
        };
        out.push((format!("assertion {name}"), f.response(), spid, Err(err)));
    }
    let sig = |e| Err(SamlError::Signature(e));
    out.push((
        "unsigned assertion with signed response".into(),
        with(|f| {
            f.sign_assertion = false;
            f.sign_response = true;
        })
        .response(),
        spid,
        sig(SignatureError::Unsigned("Assertion")),
    ));
    out.push((
        "nothing signed".into(),
        with(|f| f.sign_assertion = false).response(),
        spid,
        sig(SignatureError::Unsigned("Assertion")),
    ));
    out.push((
        "signed by a foreign key naming the idp certificate".into(),
        with(|f| f.foreign_key = true).response(),
        spid,
        sig(SignatureError::Invalid),
    ));
    let foreign = foreign_signer();
    let embedded = valid().response().replace(
        &base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            idp_signer().cert,
        ),
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &foreign.cert),
    );
    out.push((
        "embedded certificate not in metadata".into(),
        // Re-signed with the foreign key whose certificate the message now embeds.
        {
            let unsigned = with(|f| f.sign_assertion = false).response();
            let (a0, a1) = span(&unsigned, "<saml:Assertion", "</saml:Assertion>");
            let signed = sign_after_issuer(&unsigned[a0..a1], "_assert1", &foreign, &foreign.cert);
            assert!(embedded.contains("X509Certificate"));
            format!("{}{}{}", &unsigned[..a0], signed, &unsigned[a1..])
        },
        spid,
        sig(SignatureError::Invalid),
    ));
    out.push((
        "sha1 signature".into(),
        sha1_signed(),
        spid,
        sig(SignatureError::Invalid),
    ));
    for (name, xml) in wrapping_cases() {
        let expected = match name {
            n if n.starts_with("xsw") => Err(SamlError::AssertionCount(2)),
            n if n.starts_with("signed foreign") => sig(SignatureError::Unsigned("Assertion")),
            // Refused before any parser (messages carry no comments); the value rule
            // (SplitValue) is the second line, tested on its own in tests.rs.
            n if n.starts_with("comment") => Err(SamlError::Prefilter(
                crate::saml::prefilter::PrefilterError::Comment,
            )),
            n if n.starts_with("utf-7") => Err(SamlError::Prefilter(
                crate::saml::prefilter::PrefilterError::Encoding,
            )),
            n if n.starts_with("duplicate") => sig(SignatureError::DuplicateId("_assert1".into())),
            n if n.contains("changed") => sig(SignatureError::Invalid),
            _ => Err(SamlError::Prefilter(
                crate::saml::prefilter::PrefilterError::Doctype,
            )),
        };
        out.push((name.to_string(), xml, spid, expected));
    }
    // Accepted edge cases.
    let issued = t(-10);
    for (name, f, profile) in [
        (
            "ok response issuer without format",
            with(|f| f.response_issuer = format!("<saml:Issuer>{IDP}</saml:Issuer>")),
            spid,
        ),
        (
            "ok issue instant with milliseconds",
            with(|f| {
                f.response_attrs =
                    replace(&f.response_attrs, &issued, &issued.replace('Z', ".123Z"));
                f.assertion_attrs =
                    replace(&f.assertion_attrs, &issued, &issued.replace('Z', ".5Z"));
            }),
            spid,
        ),
        (
            "ok attributes without nameformat",
            with(|f| {
                f.attributes = f.attributes.replace(
                    " NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\"",
                    "",
                )
            }),
            spid,
        ),
        (
            "ok level higher than requested",
            with(|f| f.authn = replace(&f.authn, "SpidL2", "SpidL3")),
            spid,
        ),
        (
            "ok cie assertion issuer without format",
            with(|f| f.assertion_issuer = format!("<saml:Issuer>{IDP}</saml:Issuer>")),
            Profile::Cie,
        ),
        (
            "ok response and assertion both signed",
            with(|f| f.sign_response = true),
            spid,
        ),
    ] {
        out.push((name.to_string(), f.response(), profile, Ok(())));
    }
    out
}

fn outcome(r: &Result<(), SamlError>) -> String {
    match r {
        Ok(()) => "accepted".into(),
        Err(e) => format!("refused: {e}"),
    }
}

#[test]
fn every_case_of_the_corpus_has_its_outcome() {
    let write = std::env::var_os("VARCO_WRITE_FIXTURES").is_some();
    let mut manifest = String::from(
        "# file\tprofile\toutcome (generated by src/saml/response/corpus.rs; TEST ONLY)\n",
    );
    let mut names = std::collections::HashSet::new();
    for (name, xml, profile, expected) in cases() {
        let file = format!("{}.xml", slug(&name));
        assert!(names.insert(file.clone()), "two cases named {file}");
        let path = format!("{DIR}/{file}");
        if write {
            std::fs::write(&path, &xml).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("{path} missing: run VARCO_WRITE_FIXTURES=1 cargo test --lib corpus")
        });
        assert_eq!(on_disk, xml, "{file} is stale: regenerate the corpus");
        let got = run(&on_disk, profile).map(|_| ());
        assert_eq!(got, expected, "{file}");
        manifest.push_str(&format!("{file}\t{profile:?}\t{}\n", outcome(&got)));
    }
    let manifest_path = format!("{DIR}/MANIFEST");
    if write {
        std::fs::write(&manifest_path, &manifest).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&manifest_path).unwrap_or_default(),
        manifest
    );
}

#[test]
fn wrapped_data_never_becomes_the_identity() {
    for (name, xml) in wrapping_cases() {
        if let Ok((_, facts)) = run(&xml, Profile::Spid) {
            panic!(
                "{name} accepted: {:?}",
                facts.attributes.get("fiscalNumber")
            );
        }
        // The signature layer refuses them on its own too (not only the one-Assertion
        // rule of the envelope).
        if name.starts_with("xsw") {
            let r = crate::saml::xmldsig::verify_signed_element(
                &xml,
                ASSERTION_NS,
                "Assertion",
                &[idp_signer().cert],
            );
            assert!(r.is_err(), "{name}: signature layer accepted it");
        }
    }
}

/// One random edit (delete, insert or replace one byte at `pos`) of `original`: the result
/// either is refused or yields exactly the original facts.
fn edit_keeps_the_facts(
    original: &str,
    pos: usize,
    kind: u8,
    byte: u8,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let (_, facts) = run(original, Profile::Spid).unwrap();
    let mut bytes = original.as_bytes().to_vec();
    let pos = pos % bytes.len();
    match kind {
        0 => {
            bytes.remove(pos);
        }
        1 => bytes.insert(pos, byte),
        _ => bytes[pos] = byte,
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(());
    };
    if text == original {
        return Ok(());
    }
    if let Ok((_, got)) = run(&text, Profile::Spid) {
        proptest::prop_assert_eq!(got, facts);
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// A random edit of a valid signed response either is refused or yields exactly the
    /// original facts: no edit changes what is accepted.
    #[test]
    fn random_mutations_never_change_what_is_accepted(
        pos in 0usize..100_000,
        kind in 0u8..3,
        byte in proptest::prelude::any::<u8>(),
    ) {
        edit_keeps_the_facts(&valid().response(), pos, kind, byte)?;
    }

    /// The same over a response whose Response is signed too (verified in one pass over
    /// the whole document).
    #[test]
    fn random_mutations_of_a_doubly_signed_response_never_change_what_is_accepted(
        pos in 0usize..100_000,
        kind in 0u8..3,
        byte in proptest::prelude::any::<u8>(),
    ) {
        edit_keeps_the_facts(&with(|f| f.sign_response = true).response(), pos, kind, byte)?;
    }
}

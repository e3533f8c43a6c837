//! One valid SPID response and one variant per rule: each must fail with its own error;
//! the accepted edge cases must pass.

use super::*;
use crate::saml::xmldsig::{sign_enveloped, signature_template};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A test-only signer: the committed development keys of tests/fixtures/saml/.
pub(crate) struct Signer {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

fn load_signer(cert: &str, key: &str) -> Signer {
    Signer {
        cert: CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec(),
        key: PrivateKeyDer::from_pem_slice(key.as_bytes())
            .unwrap()
            .secret_der()
            .to_vec(),
    }
}

pub(crate) fn idp_signer() -> Signer {
    load_signer(
        include_str!("../../../tests/fixtures/saml/idp-test.crt.pem"),
        include_str!("../../../tests/fixtures/saml/idp-test.key.pem"),
    )
}

pub(crate) fn foreign_signer() -> Signer {
    load_signer(
        include_str!("../../../tests/fixtures/saml/foreign-test.crt.pem"),
        include_str!("../../../tests/fixtures/saml/foreign-test.key.pem"),
    )
}

/// Inserts a signature template after the first `</saml:Issuer>` of `xml` and signs it.
pub(crate) fn sign_after_issuer(
    xml: &str,
    id: &str,
    signer: &Signer,
    cert_in_keyinfo: &[u8],
) -> String {
    // After the Issuer; without one, right after the start tag.
    let at = xml
        .find("</saml:Issuer>")
        .map(|i| i + "</saml:Issuer>".len())
        .or_else(|| xml.find('>').map(|i| i + 1))
        .unwrap_or(0);
    let with_template = format!(
        "{}{}{}",
        &xml[..at],
        signature_template(id, cert_in_keyinfo),
        &xml[at..]
    );
    sign_enveloped(&with_template, &signer.key).unwrap()
}

fn attr_value<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let start = attrs.find(&format!("{name}=\""))? + name.len() + 2;
    attrs[start..].split('"').next()
}

fn check_assertion_root(xml: &str, exp: &Expected<'_>) -> Result<AssertionFacts, SamlError> {
    let doc = Document::parse(xml).map_err(|_| SamlError::Xml)?;
    check_assertion_element(doc.root_element(), exp)
}

pub(super) const NOW: i64 = 1_795_840_000; // 2026-11-28T04:26:40Z
pub(super) const IDP: &str = "https://idp.example/";
pub(super) const SP: &str = "https://sp.example.it/";
pub(super) const ACS: &str = "https://sp.example.it/_varco/saml/acs";
pub(super) const REQ: &str = "_req1";

pub(super) fn t(offset: i64) -> String {
    super::super::time::format_utc(NOW + offset)
}

pub(super) fn expected(profile: Profile) -> Expected<'static> {
    Expected {
        profile,
        idp_entity_id: IDP,
        sp_entity_id: SP,
        acs_url: ACS,
        request_id: REQ,
        request_issued_at: NOW - 30,
        requested_level: Level::SpidL2,
        now: NOW,
        skew: 5,
    }
}

/// The parts of a response, each replaceable by a test.
#[derive(Clone)]
pub(super) struct F {
    pub(super) response_attrs: String,
    pub(super) response_issuer: String,
    pub(super) status: String,
    pub(super) assertion_attrs: String,
    pub(super) assertion_issuer: String,
    pub(super) name_id: String,
    pub(super) confirmation: String,
    pub(super) conditions: String,
    pub(super) authn: String,
    pub(super) attributes: String,
    pub(super) extra_assertion: bool,
    pub(super) no_assertion: bool,
    pub(super) sign_assertion: bool,
    pub(super) sign_response: bool,
    /// Signs with the foreign key (while `KeyInfo` carries the IdP's certificate).
    pub(super) foreign_key: bool,
}

pub(super) fn valid() -> F {
    F {
        response_attrs: format!(
            "ID=\"_resp1\" Version=\"2.0\" IssueInstant=\"{}\" InResponseTo=\"{REQ}\" Destination=\"{ACS}\"",
            t(-10)
        ),
        response_issuer: format!(
            "<saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\">{IDP}</saml:Issuer>"
        ),
        status: "<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>".into(),
        assertion_attrs: format!("ID=\"_assert1\" Version=\"2.0\" IssueInstant=\"{}\"", t(-10)),
        assertion_issuer: format!(
            "<saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\">{IDP}</saml:Issuer>"
        ),
        name_id: format!(
            "<saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\" NameQualifier=\"{IDP}\">_n1</saml:NameID>"
        ),
        confirmation: format!(
            "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData Recipient=\"{ACS}\" InResponseTo=\"{REQ}\" NotOnOrAfter=\"{}\"/></saml:SubjectConfirmation>",
            t(300)
        ),
        conditions: format!(
            "<saml:Conditions NotBefore=\"{}\" NotOnOrAfter=\"{}\"><saml:AudienceRestriction><saml:Audience>{SP}</saml:Audience></saml:AudienceRestriction></saml:Conditions>",
            t(-10),
            t(300)
        ),
        authn: format!(
            "<saml:AuthnStatement AuthnInstant=\"{}\"><saml:AuthnContext><saml:AuthnContextClassRef>https://www.spid.gov.it/SpidL2</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
            t(-10)
        ),
        attributes: "<saml:AttributeStatement>\
<saml:Attribute Name=\"fiscalNumber\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\"><saml:AttributeValue>TINIT-RSSMRA80A01H501U</saml:AttributeValue></saml:Attribute>\
<saml:Attribute Name=\"name\"><saml:AttributeValue>Mario</saml:AttributeValue></saml:Attribute>\
<saml:Attribute Name=\"familyName\"><saml:AttributeValue>Rossi</saml:AttributeValue></saml:Attribute>\
</saml:AttributeStatement>".into(),
        extra_assertion: false,
        no_assertion: false,
        sign_assertion: true,
        sign_response: false,
        foreign_key: false,
    }
}

impl F {
    fn assertion(&self) -> String {
        format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" {}>{}<saml:Subject>{}{}</saml:Subject>{}{}{}</saml:Assertion>",
            self.assertion_attrs,
            self.assertion_issuer,
            self.name_id,
            self.confirmation,
            self.conditions,
            self.authn,
            self.attributes
        )
    }

    pub(super) fn signer(&self) -> Signer {
        if self.foreign_key {
            foreign_signer()
        } else {
            idp_signer()
        }
    }

    /// The Assertion, signed unless `sign_assertion` is off (or it has no ID to sign).
    fn signed_assertion(&self, id_suffix: &str) -> String {
        let xml = self
            .assertion()
            .replace("_assert1", &format!("_assert{id_suffix}"));
        match attr_value(&self.assertion_attrs, "ID") {
            Some(id) if self.sign_assertion && !id.is_empty() => {
                let id = id.replace("_assert1", &format!("_assert{id_suffix}"));
                sign_after_issuer(&xml, &id, &self.signer(), &idp_signer().cert)
            }
            _ => xml,
        }
    }

    pub(super) fn response(&self) -> String {
        let mut assertions = String::new();
        if !self.no_assertion {
            assertions.push_str(&self.signed_assertion("1"));
        }
        if self.extra_assertion {
            assertions.push_str(&self.signed_assertion("2"));
        }
        let xml = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" {}>{}{}{}</samlp:Response>",
            self.response_attrs, self.response_issuer, self.status, assertions
        );
        match attr_value(&self.response_attrs, "ID") {
            Some(id) if self.sign_response && !id.is_empty() => {
                sign_after_issuer(&xml, id, &self.signer(), &idp_signer().cert)
            }
            _ => xml,
        }
    }

    /// The whole pipeline: envelope, signature (trusting the IdP certificate), assertion.
    pub(super) fn check(&self, profile: Profile) -> Result<AssertionFacts, SamlError> {
        validate_response_xml(&self.response(), &expected(profile), &[idp_signer().cert])
            .map(|(_, facts)| facts)
    }
}

pub(super) fn with(f: impl FnOnce(&mut F)) -> F {
    let mut v = valid();
    f(&mut v);
    v
}

pub(super) fn replace(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "fixture lacks {from}");
    s.replacen(from, to, 1)
}

#[test]
fn the_valid_response_passes() {
    let facts = valid().check(Profile::Spid).unwrap();
    assert_eq!(facts.assertion_id, "_assert1");
    assert_eq!(facts.level, Level::SpidL2);
    assert_eq!(facts.attributes["fiscalNumber"], "TINIT-RSSMRA80A01H501U");
    assert_eq!(facts.remember_until, NOW + 300);
}

pub(super) fn response_rule_cases() -> Vec<(&'static str, F, SamlError)> {
    use SamlError::*;
    let ra =
        |from: &str, to: &str| with(|f| f.response_attrs = replace(&f.response_attrs, from, to));
    let issued = t(-10);
    vec![
        (
            "ID missing",
            ra("ID=\"_resp1\" ", ""),
            MissingId("Response"),
        ),
        (
            "ID empty",
            ra("ID=\"_resp1\"", "ID=\"\""),
            MissingId("Response"),
        ),
        (
            "Version wrong",
            ra("Version=\"2.0\"", "Version=\"1.1\""),
            Version("Response"),
        ),
        (
            "Version missing",
            ra("Version=\"2.0\" ", ""),
            Version("Response"),
        ),
        (
            "IssueInstant missing",
            ra(&format!("IssueInstant=\"{issued}\" "), ""),
            IssueInstant("Response"),
        ),
        (
            "IssueInstant malformed",
            ra(&issued, "2026-11-28 04:26:30"),
            IssueInstant("Response"),
        ),
        (
            "IssueInstant before the request",
            ra(&issued, &t(-60)),
            IssueInstantOutOfRange {
                element: "Response",
                seconds: -30,
                skew: 5,
            },
        ),
        (
            "IssueInstant in the future",
            ra(&issued, &t(60)),
            IssueInstantOutOfRange {
                element: "Response",
                seconds: 60,
                skew: 5,
            },
        ),
        (
            "InResponseTo missing",
            ra(&format!("InResponseTo=\"{REQ}\" "), ""),
            Unsolicited,
        ),
        (
            "InResponseTo wrong",
            ra(REQ, "_other"),
            InResponseTo("Response"),
        ),
        (
            "Destination missing",
            ra(&format!("Destination=\"{ACS}\""), ""),
            Destination,
        ),
        (
            "Destination wrong",
            ra(ACS, "https://evil.example/acs"),
            Destination,
        ),
        ("Status missing", with(|f| f.status.clear()), MissingStatus),
        (
            "StatusCode missing",
            with(|f| f.status = "<samlp:Status></samlp:Status>".into()),
            MissingStatus,
        ),
        (
            "Issuer missing",
            with(|f| f.response_issuer.clear()),
            Issuer("Response"),
        ),
        (
            "Issuer wrong",
            with(|f| f.response_issuer = replace(&f.response_issuer, IDP, "https://other/")),
            Issuer("Response"),
        ),
        (
            "Issuer Format wrong",
            with(|f| {
                f.response_issuer = replace(
                    &f.response_issuer,
                    "nameid-format:entity",
                    "nameid-format:transient",
                )
            }),
            IssuerFormat("Response"),
        ),
        (
            "no Assertion",
            with(|f| f.no_assertion = true),
            AssertionCount(0),
        ),
        (
            "two Assertions",
            with(|f| f.extra_assertion = true),
            AssertionCount(2),
        ),
    ]
}

#[test]
fn every_response_rule_has_its_failure() {
    let cases = response_rule_cases();
    for (name, f, err) in cases {
        assert_eq!(
            check_envelope(&f.response(), &expected(Profile::Spid)),
            Err(err),
            "{name}"
        );
    }
}

#[test]
fn idp_error_codes_become_refusals_with_their_code() {
    for (code, err) in [
        ("19", IdpError::WrongCredentials),
        ("20", IdpError::NoCredentialsAtLevel),
        ("21", IdpError::Timeout),
        ("22", IdpError::ConsentDenied),
        ("23", IdpError::IdentityLocked),
        ("25", IdpError::Cancelled),
        ("30", IdpError::WrongIdentityType),
    ] {
        let f = with(|f| {
            f.status = format!(
                "<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Responder\"><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:AuthnFailed\"/></samlp:StatusCode><samlp:StatusMessage>ErrorCode nr{code}</samlp:StatusMessage></samlp:Status>"
            );
            f.no_assertion = true;
        });
        assert_eq!(
            check_envelope(&f.response(), &expected(Profile::Spid)),
            Err(SamlError::IdpRefused(err)),
            "nr{code}"
        );
    }
}

pub(super) fn assertion_rule_cases() -> Vec<(&'static str, F, SamlError)> {
    use SamlError::*;
    let issued = t(-10);
    let aa =
        |from: &str, to: &str| with(|f| f.assertion_attrs = replace(&f.assertion_attrs, from, to));
    let nid = |from: &str, to: &str| with(|f| f.name_id = replace(&f.name_id, from, to));
    let conf = |from: &str, to: &str| with(|f| f.confirmation = replace(&f.confirmation, from, to));
    let cond = |from: &str, to: &str| with(|f| f.conditions = replace(&f.conditions, from, to));
    let authn = |from: &str, to: &str| with(|f| f.authn = replace(&f.authn, from, to));
    vec![
        (
            "ID missing",
            aa("ID=\"_assert1\" ", ""),
            MissingId("Assertion"),
        ),
        (
            "Version wrong",
            aa("Version=\"2.0\"", "Version=\"2\""),
            Version("Assertion"),
        ),
        (
            "IssueInstant malformed",
            aa(&issued, "yesterday"),
            IssueInstant("Assertion"),
        ),
        (
            "IssueInstant in the future",
            aa(&issued, &t(30)),
            IssueInstantOutOfRange {
                element: "Assertion",
                seconds: 30,
                skew: 5,
            },
        ),
        ("NameID missing", with(|f| f.name_id.clear()), NameId),
        ("NameID empty", nid(">_n1<", "><"), NameId),
        (
            "NameID Format",
            nid("nameid-format:transient", "nameid-format:persistent"),
            NameIdFormat,
        ),
        (
            "NameQualifier missing",
            nid(&format!(" NameQualifier=\"{IDP}\""), ""),
            NameQualifier,
        ),
        (
            "SubjectConfirmation missing",
            with(|f| f.confirmation.clear()),
            SubjectConfirmation,
        ),
        (
            "Method not bearer",
            conf("cm:bearer", "cm:holder-of-key"),
            SubjectConfirmation,
        ),
        (
            "SubjectConfirmationData missing",
            with(|f| {
                f.confirmation =
                    "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"/>"
                        .into()
            }),
            SubjectConfirmationData,
        ),
        (
            "Recipient missing",
            conf(&format!("Recipient=\"{ACS}\" "), ""),
            Recipient,
        ),
        (
            "Recipient wrong",
            conf(ACS, "https://evil.example/acs"),
            Recipient,
        ),
        (
            "InResponseTo missing",
            conf(&format!("InResponseTo=\"{REQ}\" "), ""),
            InResponseTo("SubjectConfirmationData"),
        ),
        (
            "InResponseTo wrong",
            conf(REQ, "_x"),
            InResponseTo("SubjectConfirmationData"),
        ),
        (
            "NotOnOrAfter missing",
            conf(&format!(" NotOnOrAfter=\"{}\"", t(300)), ""),
            ConfirmationExpired,
        ),
        (
            "NotOnOrAfter malformed",
            conf(&t(300), "soon"),
            ConfirmationExpired,
        ),
        (
            "NotOnOrAfter passed",
            conf(&t(300), &t(-60)),
            ConfirmationExpired,
        ),
        (
            "Issuer missing",
            with(|f| f.assertion_issuer.clear()),
            Issuer("Assertion"),
        ),
        (
            "Issuer wrong",
            with(|f| f.assertion_issuer = replace(&f.assertion_issuer, IDP, "https://other/")),
            Issuer("Assertion"),
        ),
        (
            "Issuer Format missing (SPID)",
            with(|f| {
                f.assertion_issuer = replace(
                    &f.assertion_issuer,
                    " Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\"",
                    "",
                )
            }),
            IssuerFormat("Assertion"),
        ),
        (
            "Conditions missing",
            with(|f| f.conditions.clear()),
            Conditions,
        ),
        (
            "NotBefore missing",
            cond(&format!("NotBefore=\"{}\" ", t(-10)), ""),
            NotBefore,
        ),
        (
            "NotBefore malformed",
            cond(&format!("NotBefore=\"{}\"", t(-10)), "NotBefore=\"x\""),
            NotBefore,
        ),
        (
            "NotBefore in the future",
            cond(
                &format!("NotBefore=\"{}\"", t(-10)),
                &format!("NotBefore=\"{}\"", t(60)),
            ),
            NotBefore,
        ),
        (
            "Conditions NotOnOrAfter passed",
            cond(&t(300), &t(-60)),
            NotOnOrAfter,
        ),
        (
            "Conditions NotOnOrAfter missing",
            cond(&format!(" NotOnOrAfter=\"{}\"", t(300)), ""),
            NotOnOrAfter,
        ),
        (
            "Audience missing",
            cond(&format!("<saml:Audience>{SP}</saml:Audience>"), ""),
            Audience,
        ),
        ("Audience wrong", cond(SP, "https://other-sp/"), Audience),
        (
            "AuthnContextClassRef missing",
            with(|f| f.authn.clear()),
            MissingAuthnContext,
        ),
        (
            "old-style level URI",
            authn(
                "https://www.spid.gov.it/SpidL2",
                "urn:oasis:names:tc:SAML:2.0:ac:classes:SpidL2",
            ),
            UnknownLevel,
        ),
        (
            "level below the requested",
            authn("SpidL2", "SpidL1"),
            LevelTooLow {
                got: Level::SpidL1,
                requested: Level::SpidL2,
            },
        ),
        (
            "empty AttributeStatement",
            with(|f| f.attributes = "<saml:AttributeStatement></saml:AttributeStatement>".into()),
            EmptyAttributeStatement,
        ),
        (
            "attribute without value",
            with(|f| {
                f.attributes = replace(
                    &f.attributes,
                    "<saml:AttributeValue>Mario</saml:AttributeValue>",
                    "<saml:AttributeValue></saml:AttributeValue>",
                )
            }),
            EmptyAttribute("name".into()),
        ),
    ]
}

#[test]
fn every_assertion_rule_has_its_failure() {
    let cases = assertion_rule_cases();
    for (name, f, err) in cases {
        assert_eq!(
            check_assertion_root(&f.assertion(), &expected(Profile::Spid)),
            Err(err),
            "{name}"
        );
    }
}

#[test]
fn accepted_edge_cases_pass() {
    // Issuer Format omitted on the Response.
    let f = with(|f| {
        f.response_issuer = format!("<saml:Issuer>{IDP}</saml:Issuer>");
    });
    assert!(f.check(Profile::Spid).is_ok());
    // Attributes without NameFormat (the fixture's `name`) and IssueInstant with ms.
    let f = with(|f| {
        let issued = t(-10);
        f.response_attrs = replace(&f.response_attrs, &issued, &issued.replace('Z', ".123Z"));
        f.assertion_attrs = replace(&f.assertion_attrs, &issued, &issued.replace('Z', ".5Z"));
    });
    assert!(f.check(Profile::Spid).is_ok());
    // A higher level than requested.
    let f = with(|f| f.authn = replace(&f.authn, "SpidL2", "SpidL3"));
    assert_eq!(f.check(Profile::Spid).unwrap().level, Level::SpidL3);
    // CIE: the Assertion Issuer's Format may be absent.
    let f = with(|f| {
        f.assertion_issuer = format!("<saml:Issuer>{IDP}</saml:Issuer>");
    });
    assert!(f.check(Profile::Cie).is_ok());
    assert!(f.check(Profile::Spid).is_err());
    // Clock skew within the allowance.
    let f = with(|f| {
        let issued = t(-10);
        f.response_attrs = replace(&f.response_attrs, &issued, &t(4));
    });
    assert!(f.check(Profile::Spid).is_ok());
}

#[test]
fn malformed_xml_and_other_roots_are_refused() {
    let exp = expected(Profile::Spid);
    assert_eq!(check_envelope("<unclosed", &exp), Err(SamlError::Xml));
    assert_eq!(
        check_envelope(
            "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>",
            &exp
        ),
        Err(SamlError::NotAResponse)
    );
    // A Response element in the wrong namespace.
    assert_eq!(
        check_envelope("<Response ID=\"_1\"/>", &exp),
        Err(SamlError::NotAResponse)
    );
}

#[test]
fn identity_comes_from_the_verified_attributes() {
    use crate::identity::Method;
    let facts = valid().check(Profile::Spid).unwrap();
    let id = facts.clone().into_identity(Profile::Spid, IDP, 7).unwrap();
    assert_eq!(id.subject.as_str(), "RSSMRA80A01H501U");
    assert_eq!(
        (id.given_name.as_str(), id.family_name.as_str()),
        ("Mario", "Rossi")
    );
    assert_eq!(id.method, Method::Spid);
    assert_eq!(id.level, Level::SpidL2);
    assert_eq!(id.idp, IDP);
    let cie = facts.clone().into_identity(Profile::Cie, IDP, 7).unwrap();
    assert_eq!(cie.method, Method::Cie);

    let mut bad = facts.clone();
    bad.attributes
        .insert("fiscalNumber".into(), "TINIT-RSSMRA80A01H501X".into());
    assert!(matches!(
        bad.into_identity(Profile::Spid, IDP, 7),
        Err(SamlError::InvalidFiscalNumber(_))
    ));
    let mut none = facts;
    none.attributes.remove("fiscalNumber");
    assert_eq!(
        none.into_identity(Profile::Spid, IDP, 7),
        Err(SamlError::MissingFiscalNumber)
    );
}

#[test]
fn values_split_by_comments_are_refused() {
    let exp = expected(Profile::Spid);
    let f = valid();
    let split = f
        .assertion()
        .replace("TINIT-RSSMRA80A01H501U", "TINIT-RSSMRA<!---->80A01H501U");
    assert_eq!(
        check_assertion_root(&split, &exp),
        Err(SamlError::SplitValue("AttributeValue"))
    );
    let split = f.assertion().replace(">_n1<", ">_n<!-- -->1<");
    assert_eq!(
        check_assertion_root(&split, &exp),
        Err(SamlError::SplitValue("NameID"))
    );
    let split = f
        .assertion()
        .replace(&format!(">{SP}<"), &format!("><!---->{SP}<"));
    assert_eq!(
        check_assertion_root(&split, &exp),
        Err(SamlError::SplitValue("Audience"))
    );
}

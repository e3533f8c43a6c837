//! The SAML Response rules of spec/saml-spid-cie.md ("Response ... Reject unless ALL
//! hold"), as pure checks over parsed XML. Signature verification is a separate step: it
//! yields the **verified** Assertion (only the signed element, reduced by xmlsec), and
//! identity data is read from that element alone; the Response envelope (status, ids,
//! destination) is read from the received document after its own checks.
//!
//! Every rule has its own [`SamlError`] variant, so the audit log and the tests can tell
//! them apart. Errors never contain the raw XML.

use std::collections::BTreeMap;

use roxmltree::{Document, Node};

use super::authn_request::Profile;
use super::status::IdpError;
use super::time::parse_utc;
use crate::identity::Level;

pub const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";
const TRANSIENT_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// What the response must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub profile: Profile,
    pub idp_entity_id: &'a str,
    pub sp_entity_id: &'a str,
    /// The ACS URL that received the response.
    pub acs_url: &'a str,
    /// The id of the request we issued (and have not consumed yet).
    pub request_id: &'a str,
    /// When our request was issued (seconds since the epoch).
    pub request_issued_at: i64,
    pub requested_level: Level,
    /// Now (seconds since the epoch).
    pub now: i64,
    /// Allowed clock difference, seconds.
    pub skew: i64,
}

/// Why a response is refused. The element named is where the rule failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error(transparent)]
    Prefilter(#[from] super::prefilter::PrefilterError),
    #[error("Assertion signature: {0}")]
    Signature(#[from] super::xmldsig::SignatureError),
    #[error("the XML is not well formed")]
    Xml,
    #[error("{0}: a value is split by a comment or markup")]
    SplitValue(&'static str),
    #[error("the root element is not a SAML Response")]
    NotAResponse,
    #[error("{0}: ID missing or empty")]
    MissingId(&'static str),
    #[error("{0}: Version is not 2.0")]
    Version(&'static str),
    #[error("{0}: IssueInstant missing or malformed")]
    IssueInstant(&'static str),
    #[error(
        "{element}: IssueInstant is {seconds} s outside the allowed window (clock skew {skew} s)"
    )]
    IssueInstantOutOfRange {
        element: &'static str,
        seconds: i64,
        skew: i64,
    },
    #[error("Response: InResponseTo missing (unsolicited responses are refused)")]
    Unsolicited,
    #[error("{0}: InResponseTo does not match our request")]
    InResponseTo(&'static str),
    #[error("Response: Destination missing or not this ACS")]
    Destination,
    #[error("Response: Status/StatusCode missing")]
    MissingStatus,
    #[error("the identity provider refused the login ({0:?})")]
    IdpRefused(IdpError),
    #[error("{0}: Issuer missing or not the identity provider")]
    Issuer(&'static str),
    #[error("{0}: Issuer Format is not entity")]
    IssuerFormat(&'static str),
    #[error("Response: {0} assertions (exactly one is required)")]
    AssertionCount(usize),
    #[error("Assertion: Subject/NameID missing")]
    NameId,
    #[error("Assertion: NameID Format is not transient")]
    NameIdFormat,
    #[error("Assertion: NameID NameQualifier missing")]
    NameQualifier,
    #[error("Assertion: SubjectConfirmation missing or its Method is not bearer")]
    SubjectConfirmation,
    #[error("Assertion: SubjectConfirmationData missing")]
    SubjectConfirmationData,
    #[error("Assertion: SubjectConfirmationData Recipient is not this ACS")]
    Recipient,
    #[error("Assertion: SubjectConfirmationData NotOnOrAfter missing, malformed or passed")]
    ConfirmationExpired,
    #[error("Assertion: Conditions missing")]
    Conditions,
    #[error("Assertion: Conditions NotBefore missing, malformed or in the future")]
    NotBefore,
    #[error("Assertion: Conditions NotOnOrAfter missing, malformed or passed")]
    NotOnOrAfter,
    #[error("Assertion: AudienceRestriction/Audience missing or not this service provider")]
    Audience,
    #[error("Assertion: AuthnContextClassRef missing")]
    MissingAuthnContext,
    #[error("Assertion: AuthnContextClassRef is not a SPID level")]
    UnknownLevel,
    #[error("Assertion: level {got} is below the requested {requested}")]
    LevelTooLow { got: Level, requested: Level },
    #[error("Assertion: attribute `{0}` has no value")]
    EmptyAttribute(String),
    #[error("Assertion: attribute `{0}` appears more than once")]
    DuplicateAttribute(String),
    #[error("Assertion: AttributeStatement has no attributes")]
    EmptyAttributeStatement,
    #[error("Assertion: no fiscalNumber attribute")]
    MissingFiscalNumber,
    #[error("Assertion: fiscalNumber is not a valid fiscal code ({0})")]
    InvalidFiscalNumber(crate::identity::FiscalCodeError),
}

/// The envelope facts of an accepted response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeFacts {
    pub response_id: String,
}

/// What an accepted Assertion says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFacts {
    pub assertion_id: String,
    pub name_id: String,
    pub level: Level,
    /// Seconds since the epoch until which the assertion id must be remembered (replay).
    pub remember_until: i64,
    pub attributes: BTreeMap<String, String>,
    /// `NameID/@NameQualifier` and `AuthnStatement/@SessionIndex` (Single Logout).
    pub name_qualifier: String,
    pub session_index: Option<String>,
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

fn text<'a>(n: Node<'a, '_>) -> &'a str {
    n.text().unwrap_or("").trim()
}

/// The text of an element that carries a value the gateway consumes: one text node and
/// nothing else. A comment inside (`TINIT-AAA<!---->BBB`) is refused: canonicalization
/// drops comments, so the signature would still verify while parsers disagree on the
/// value.
fn value<'a>(n: Node<'a, '_>, element: &'static str) -> Result<&'a str, SamlError> {
    let mut children = n.children();
    match (children.next(), children.next()) {
        (None, _) => Ok(""),
        (Some(t), None) if t.is_text() => Ok(t.text().unwrap_or("").trim()),
        _ => Err(SamlError::SplitValue(element)),
    }
}

fn check_common(
    n: Node<'_, '_>,
    element: &'static str,
    exp: &Expected<'_>,
) -> Result<String, SamlError> {
    let id = n.attribute("ID").filter(|v| !v.trim().is_empty());
    let id = id.ok_or(SamlError::MissingId(element))?;
    if n.attribute("Version") != Some("2.0") {
        return Err(SamlError::Version(element));
    }
    let issued = n
        .attribute("IssueInstant")
        .and_then(parse_utc)
        .ok_or(SamlError::IssueInstant(element))?;
    if issued < exp.request_issued_at - exp.skew {
        return Err(SamlError::IssueInstantOutOfRange {
            element,
            seconds: issued - exp.request_issued_at,
            skew: exp.skew,
        });
    }
    if issued > exp.now + exp.skew {
        return Err(SamlError::IssueInstantOutOfRange {
            element,
            seconds: issued - exp.now,
            skew: exp.skew,
        });
    }
    Ok(id.to_string())
}

fn check_issuer(
    parent: Node<'_, '_>,
    element: &'static str,
    exp: &Expected<'_>,
    format_required: bool,
) -> Result<(), SamlError> {
    let issuer = child(parent, ASSERTION_NS, "Issuer").ok_or(SamlError::Issuer(element))?;
    if value(issuer, element)? != exp.idp_entity_id {
        return Err(SamlError::Issuer(element));
    }
    match issuer.attribute("Format") {
        Some(f) if f != ENTITY_FORMAT => Err(SamlError::IssuerFormat(element)),
        None if format_required => Err(SamlError::IssuerFormat(element)),
        _ => Ok(()),
    }
}

/// Checks the Response envelope of the received document. A non-success status becomes
/// [`SamlError::IdpRefused`] with the IdP's error code.
pub fn check_envelope(xml: &str, exp: &Expected<'_>) -> Result<EnvelopeFacts, SamlError> {
    let doc = Document::parse(xml).map_err(|_| SamlError::Xml)?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" || root.tag_name().namespace() != Some(PROTOCOL_NS) {
        return Err(SamlError::NotAResponse);
    }
    let response_id = check_common(root, "Response", exp)?;
    match root.attribute("InResponseTo") {
        None => return Err(SamlError::Unsolicited),
        Some(v) if v != exp.request_id => return Err(SamlError::InResponseTo("Response")),
        Some(_) => {}
    }
    if root.attribute("Destination") != Some(exp.acs_url) {
        return Err(SamlError::Destination);
    }
    // The Response Issuer's Format may be absent (accepted edge case), never another.
    check_issuer(root, "Response", exp, false)?;
    let status = child(root, PROTOCOL_NS, "Status").ok_or(SamlError::MissingStatus)?;
    let code = child(status, PROTOCOL_NS, "StatusCode")
        .and_then(|c| c.attribute("Value"))
        .ok_or(SamlError::MissingStatus)?;
    if code != SUCCESS {
        let message = child(status, PROTOCOL_NS, "StatusMessage").map_or("", text);
        return Err(SamlError::IdpRefused(IdpError::from_status_message(
            message,
        )));
    }
    let assertions = root
        .descendants()
        .filter(|n| {
            n.is_element()
                && n.tag_name().namespace() == Some(ASSERTION_NS)
                && matches!(n.tag_name().name(), "Assertion" | "EncryptedAssertion")
        })
        .count();
    if assertions != 1 {
        return Err(SamlError::AssertionCount(assertions));
    }
    Ok(EnvelopeFacts { response_id })
}

/// Validates a `SAMLResponse` form value (base64, HTTP-POST binding): the pre-filter,
/// the envelope, the Assertion's signature by one of `trusted` (the IdP's metadata
/// certificates, DER), then the rules over the verified Assertion only.
pub fn validate_response(
    saml_response: &str,
    exp: &Expected<'_>,
    trusted: &[Vec<u8>],
) -> Result<(EnvelopeFacts, AssertionFacts), SamlError> {
    let xml = super::prefilter::decode_post(saml_response)?;
    validate_response_xml(&xml, exp, trusted)
}

/// [`validate_response`] for decoded XML text that passed the pre-filter.
pub fn validate_response_xml(
    xml: &str,
    exp: &Expected<'_>,
    trusted: &[Vec<u8>],
) -> Result<(EnvelopeFacts, AssertionFacts), SamlError> {
    let envelope = check_envelope(xml, exp)?;
    let verified = super::xmldsig::verify_signed_element(xml, ASSERTION_NS, "Assertion", trusted)?;
    let facts = check_assertion(&verified.xml, &verified.id, exp)?;
    Ok((envelope, facts))
}

/// Checks the verified Assertion: `xml` is what signature verification kept, `id` the
/// verified Assertion's ID (the root, or the one Assertion with that ID under a signed
/// Response).
pub fn check_assertion(
    xml: &str,
    id: &str,
    exp: &Expected<'_>,
) -> Result<AssertionFacts, SamlError> {
    let doc = Document::parse(xml).map_err(|_| SamlError::Xml)?;
    let found = doc
        .descendants()
        .filter(|n| {
            n.is_element()
                && n.tag_name().name() == "Assertion"
                && n.tag_name().namespace() == Some(ASSERTION_NS)
                && n.attribute("ID") == Some(id)
        })
        .collect::<Vec<_>>();
    let [a] = found[..] else {
        return Err(SamlError::AssertionCount(found.len()));
    };
    check_assertion_element(a, exp)
}

fn check_assertion_element(
    a: Node<'_, '_>,
    exp: &Expected<'_>,
) -> Result<AssertionFacts, SamlError> {
    let assertion_id = check_common(a, "Assertion", exp)?;
    check_issuer(a, "Assertion", exp, exp.profile == Profile::Spid)?;

    let subject = child(a, ASSERTION_NS, "Subject").ok_or(SamlError::NameId)?;
    let name_id = child(subject, ASSERTION_NS, "NameID").ok_or(SamlError::NameId)?;
    let name_id_value = value(name_id, "NameID")?;
    if name_id_value.is_empty() {
        return Err(SamlError::NameId);
    }
    if name_id.attribute("Format") != Some(TRANSIENT_FORMAT) {
        return Err(SamlError::NameIdFormat);
    }
    if name_id
        .attribute("NameQualifier")
        .is_none_or(|q| q.trim().is_empty())
    {
        return Err(SamlError::NameQualifier);
    }
    let confirmation = child(subject, ASSERTION_NS, "SubjectConfirmation")
        .filter(|c| c.attribute("Method") == Some(BEARER))
        .ok_or(SamlError::SubjectConfirmation)?;
    let data = child(confirmation, ASSERTION_NS, "SubjectConfirmationData")
        .ok_or(SamlError::SubjectConfirmationData)?;
    if data.attribute("Recipient") != Some(exp.acs_url) {
        return Err(SamlError::Recipient);
    }
    if data.attribute("InResponseTo") != Some(exp.request_id) {
        return Err(SamlError::InResponseTo("SubjectConfirmationData"));
    }
    let confirmation_until = data
        .attribute("NotOnOrAfter")
        .and_then(parse_utc)
        .filter(|t| exp.now < t + exp.skew)
        .ok_or(SamlError::ConfirmationExpired)?;

    let conditions = child(a, ASSERTION_NS, "Conditions").ok_or(SamlError::Conditions)?;
    conditions
        .attribute("NotBefore")
        .and_then(parse_utc)
        .filter(|t| *t <= exp.now + exp.skew)
        .ok_or(SamlError::NotBefore)?;
    let conditions_until = conditions
        .attribute("NotOnOrAfter")
        .and_then(parse_utc)
        .filter(|t| exp.now < t + exp.skew)
        .ok_or(SamlError::NotOnOrAfter)?;
    let audience_ok = child(conditions, ASSERTION_NS, "AudienceRestriction")
        .and_then(|r| child(r, ASSERTION_NS, "Audience"))
        .map(|aud| value(aud, "Audience"))
        .transpose()?
        .is_some_and(|aud| aud == exp.sp_entity_id);
    if !audience_ok {
        return Err(SamlError::Audience);
    }

    let authn_statement = child(a, ASSERTION_NS, "AuthnStatement");
    let session_index = authn_statement
        .and_then(|s| s.attribute("SessionIndex"))
        .map(str::to_string);
    let class_ref = authn_statement
        .and_then(|s| child(s, ASSERTION_NS, "AuthnContext"))
        .and_then(|c| child(c, ASSERTION_NS, "AuthnContextClassRef"))
        .ok_or(SamlError::MissingAuthnContext)?;
    let level = Level::from_uri(value(class_ref, "AuthnContextClassRef")?)
        .ok_or(SamlError::UnknownLevel)?;
    if level < exp.requested_level {
        return Err(SamlError::LevelTooLow {
            got: level,
            requested: exp.requested_level,
        });
    }

    let mut attributes = BTreeMap::new();
    if let Some(statement) = child(a, ASSERTION_NS, "AttributeStatement") {
        let mut any = false;
        for attr in statement
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Attribute")
        {
            any = true;
            let name = attr.attribute("Name").unwrap_or("").to_string();
            let v = attr
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == "AttributeValue")
                .map(|v| value(v, "AttributeValue"))
                .transpose()?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| SamlError::EmptyAttribute(name.clone()))?;
            if attributes.insert(name.clone(), v.to_string()).is_some() {
                return Err(SamlError::DuplicateAttribute(name));
            }
        }
        if !any {
            return Err(SamlError::EmptyAttributeStatement);
        }
    }
    Ok(AssertionFacts {
        assertion_id,
        name_id: name_id_value.to_string(),
        name_qualifier: name_id.attribute("NameQualifier").unwrap_or("").to_string(),
        session_index,
        level,
        remember_until: confirmation_until.max(conditions_until),
        attributes,
    })
}

impl AssertionFacts {
    /// The gateway's identity: subject from `fiscalNumber` (`TINIT-` removed, upper-cased,
    /// checksum-validated), names from `name`/`familyName`, every attribute kept in `extra`.
    pub fn into_identity(
        self,
        profile: Profile,
        idp_entity_id: &str,
        auth_time: u64,
    ) -> Result<crate::identity::Identity, SamlError> {
        use crate::identity::{FiscalCode, Identity, Method};
        let raw = self
            .attributes
            .get("fiscalNumber")
            .ok_or(SamlError::MissingFiscalNumber)?;
        let subject = FiscalCode::parse(raw).map_err(SamlError::InvalidFiscalNumber)?;
        let attr = |k: &str| self.attributes.get(k).cloned().unwrap_or_default();
        Ok(Identity {
            subject,
            given_name: attr("name"),
            family_name: attr("familyName"),
            level: self.level,
            method: match profile {
                Profile::Cie => Method::Cie,
                Profile::Spid | Profile::Generic => Method::Spid,
            },
            idp: idp_entity_id.to_string(),
            roles: Vec::new(),
            patronato: None,
            auth_time,
            extra: self.attributes,
        })
    }
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;

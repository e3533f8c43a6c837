//! The identity-provider side of a SAML login, for the development IdP of `varco demo`
//! and for tests: parsing our own AuthnRequest and building a SPID-conformant Response
//! whose Assertion (and the Response) are signed with SHA-256. Never used to accept
//! anything: the gateway only validates.

use std::fmt::Write as _;

use roxmltree::Document;

use super::authn_request::Profile;
use super::response::{ASSERTION_NS, PROTOCOL_NS};
use super::time::format_utc;
use super::xmldsig::{SignatureError, sign_enveloped, signature_template};
use crate::identity::Level;
use crate::pages::escape_html as esc;

/// What an AuthnRequest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequestFacts {
    pub id: String,
    pub issuer: String,
    pub destination: String,
    pub level: Level,
    /// `ForceAuthn="true"` (CIE always; SPID above level 1).
    pub force_authn: bool,
}

/// Reads our AuthnRequest (after its signature was checked by the caller).
pub fn parse_authn_request(xml: &str) -> Option<AuthnRequestFacts> {
    let doc = Document::parse(xml).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "AuthnRequest" || root.tag_name().namespace() != Some(PROTOCOL_NS)
    {
        return None;
    }
    let issuer = root
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "Issuer")?
        .text()?
        .trim()
        .to_string();
    let level = root
        .descendants()
        .find(|c| c.is_element() && c.tag_name().name() == "AuthnContextClassRef")
        .and_then(|c| c.text())
        .and_then(|t| Level::from_uri(t.trim()))?;
    Some(AuthnRequestFacts {
        id: root.attribute("ID")?.to_string(),
        issuer,
        destination: root.attribute("Destination").unwrap_or("").to_string(),
        level,
        force_authn: root.attribute("ForceAuthn") == Some("true"),
    })
}

/// The answer to build.
pub struct ResponseParams<'a> {
    pub profile: Profile,
    pub idp_entity_id: &'a str,
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    pub in_response_to: &'a str,
    pub level: Level,
    pub now: i64,
    /// `Some("nr25")`: a failure response with that SPID error code, no Assertion.
    pub error_code: Option<&'a str>,
    /// Attributes (name, value), e.g. `fiscalNumber` = `TINIT-...`.
    pub attributes: &'a [(&'a str, String)],
    /// A fixed Assertion ID (tests of the replay cache); random when `None`.
    pub assertion_id: Option<&'a str>,
}

fn new_id() -> String {
    format!("_{:032x}", rand::random::<u128>())
}

/// A signed Response (Assertion signed, then the Response) for `p`.
pub fn signed_response(
    p: &ResponseParams<'_>,
    key_der: &[u8],
    cert_der: &[u8],
) -> Result<String, SignatureError> {
    let response_id = new_id();
    let instant = format_utc(p.now);
    let issuer = format!(
        "<saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\">{}</saml:Issuer>",
        esc(p.idp_entity_id)
    );
    let head = format!(
        "<samlp:Response xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
ID=\"{response_id}\" Version=\"2.0\" IssueInstant=\"{instant}\" InResponseTo=\"{irt}\" \
Destination=\"{acs}\">{issuer}",
        irt = esc(p.in_response_to),
        acs = esc(p.acs_url),
    );
    if let Some(code) = p.error_code {
        let xml = format!(
            "{head}<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Responder\">\
<samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:AuthnFailed\"/></samlp:StatusCode>\
<samlp:StatusMessage>ErrorCode {}</samlp:StatusMessage></samlp:Status></samlp:Response>",
            esc(code)
        );
        return sign_after_issuer(&xml, &response_id, key_der, cert_der);
    }
    let assertion_id = p.assertion_id.map_or_else(new_id, str::to_string);
    let until = format_utc(p.now + 300);
    let assertion_issuer = if p.profile == Profile::Cie {
        format!("<saml:Issuer>{}</saml:Issuer>", esc(p.idp_entity_id))
    } else {
        issuer.clone()
    };
    let mut attrs = String::new();
    for (name, value) in p.attributes {
        let _ = write!(
            attrs,
            "<saml:Attribute Name=\"{}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">\
<saml:AttributeValue>{}</saml:AttributeValue></saml:Attribute>",
            esc(name),
            esc(value)
        );
    }
    let assertion = format!(
        "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"{assertion_id}\" Version=\"2.0\" IssueInstant=\"{instant}\">\
{assertion_issuer}<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\" \
NameQualifier=\"{idp}\">{name_id}</saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
<saml:SubjectConfirmationData Recipient=\"{acs}\" InResponseTo=\"{irt}\" NotOnOrAfter=\"{until}\"/>\
</saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore=\"{instant}\" NotOnOrAfter=\"{until}\">\
<saml:AudienceRestriction><saml:Audience>{sp}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
<saml:AuthnStatement AuthnInstant=\"{instant}\" SessionIndex=\"{session}\"><saml:AuthnContext>\
<saml:AuthnContextClassRef>{level}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
<saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>",
        idp = esc(p.idp_entity_id),
        name_id = new_id(),
        acs = esc(p.acs_url),
        irt = esc(p.in_response_to),
        sp = esc(p.sp_entity_id),
        session = new_id(),
        level = p.level.uri(),
    );
    let signed_assertion = sign_after_issuer(&assertion, &assertion_id, key_der, cert_der)?;
    let xml = format!(
        "{head}<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>\
{signed_assertion}</samlp:Response>"
    );
    sign_after_issuer(&xml, &response_id, key_der, cert_der)
}

/// Inserts a signature template after the first `Issuer` and signs it.
fn sign_after_issuer(
    xml: &str,
    id: &str,
    key_der: &[u8],
    cert_der: &[u8],
) -> Result<String, SignatureError> {
    let at = xml
        .find("</saml:Issuer>")
        .map_or(0, |i| i + "</saml:Issuer>".len());
    let template = signature_template(id, cert_der);
    sign_enveloped(&format!("{}{template}{}", &xml[..at], &xml[at..]), key_der)
}

/// A minimal IdP metadata document (for the development IdP and tests).
pub fn idp_metadata(
    entity_id: &str,
    sso_url: &str,
    slo_url: &str,
    cert_der: &[u8],
    name: &str,
) -> String {
    use base64::Engine as _;
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{eid}\">\
<md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\" WantAuthnRequestsSigned=\"true\">\
<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>\
</ds:X509Data></ds:KeyInfo></md:KeyDescriptor>\
<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{slo}\"/>\
<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:transient</md:NameIDFormat>\
<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{sso}\"/>\
<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"{sso}\"/>\
</md:IDPSSODescriptor><md:Organization><md:OrganizationName xml:lang=\"it\">{name}</md:OrganizationName>\
<md:OrganizationDisplayName xml:lang=\"it\">{name}</md:OrganizationDisplayName>\
<md:OrganizationURL xml:lang=\"it\">{eid}</md:OrganizationURL></md:Organization></md:EntityDescriptor>",
        eid = esc(entity_id),
        sso = esc(sso_url),
        slo = esc(slo_url),
        cert = base64::engine::general_purpose::STANDARD.encode(cert_der),
        name = esc(name),
    )
}

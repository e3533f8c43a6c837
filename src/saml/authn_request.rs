//! Building the SPID/CIE `AuthnRequest` (spec/saml-spid-cie.md, "AuthnRequest"): a pure
//! function from values to XML text. Everything interpolated is XML-escaped. For the
//! HTTP-Redirect binding the signature travels in the query string
//! ([`super::redirect::sign_query`]), so the XML itself carries none.

use std::fmt::Write as _;

use crate::escape::xml as escape;
use crate::identity::Level;

/// The federation profile: SPID and CIE differ in a few rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Spid,
    Cie,
    Generic,
}

/// `RequestedAuthnContext/@Comparison`: only the two values SPID and CIE both accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Minimum,
    Exact,
}

/// What one AuthnRequest says.
#[derive(Debug, Clone)]
pub struct AuthnRequestParams<'a> {
    pub profile: Profile,
    /// Request id; must not start with a digit (see [`new_request_id`]).
    pub id: &'a str,
    /// `IssueInstant`, UTC, `YYYY-MM-DDThh:mm:ssZ` or with milliseconds.
    pub issue_instant: &'a str,
    /// The IdP's SingleSignOnService location for the binding used.
    pub destination: &'a str,
    /// Our entityID.
    pub sp_entity_id: &'a str,
    pub level: Level,
    pub comparison: Comparison,
    /// Index of our HTTP-POST ACS in our metadata.
    pub acs_index: u16,
    /// Index of the attribute set in our metadata, if any.
    pub attribute_set_index: Option<u16>,
}

/// A fresh request id: `_` followed by 32 hex digits (never starts with a digit).
pub fn new_request_id() -> String {
    format!("_{:032x}", rand::random::<u128>())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnRequestError {
    #[error("the request id must be non-empty and must not start with a digit")]
    BadId,
}

/// The AuthnRequest XML.
pub fn build_authn_request(p: &AuthnRequestParams<'_>) -> Result<String, AuthnRequestError> {
    let first = p.id.chars().next().ok_or(AuthnRequestError::BadId)?;
    if first.is_ascii_digit()
        || !p
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(AuthnRequestError::BadId);
    }
    // ForceAuthn whenever L2 or L3 is requested; CIE always.
    let force = p.profile == Profile::Cie || p.level > Level::SpidL1;
    let comparison = match p.comparison {
        Comparison::Minimum => "minimum",
        Comparison::Exact => "exact",
    };
    let mut x = String::with_capacity(1024);
    let _ = write!(
        x,
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" \
IssueInstant=\"{ii}\" Destination=\"{dest}\"{force} AssertionConsumerServiceIndex=\"{acs}\"",
        id = escape(p.id),
        ii = escape(p.issue_instant),
        dest = escape(p.destination),
        force = if force { " ForceAuthn=\"true\"" } else { "" },
        acs = p.acs_index,
    );
    if let Some(i) = p.attribute_set_index {
        let _ = write!(x, " AttributeConsumingServiceIndex=\"{i}\"");
    }
    let _ = write!(
        x,
        "><saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\" \
NameQualifier=\"{sp}\">{sp}</saml:Issuer>\
<samlp:NameIDPolicy Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\"/>\
<samlp:RequestedAuthnContext Comparison=\"{comparison}\">\
<saml:AuthnContextClassRef>{level}</saml:AuthnContextClassRef>\
</samlp:RequestedAuthnContext></samlp:AuthnRequest>",
        sp = escape(p.sp_entity_id),
        level = p.level.uri(),
    );
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(profile: Profile, level: Level) -> AuthnRequestParams<'static> {
        AuthnRequestParams {
            profile,
            id: "_0123abcd",
            issue_instant: "2026-11-28T10:00:00Z",
            destination: "https://idp.example/sso?x=1&y=2",
            sp_entity_id: "https://sp.example.it/",
            level,
            comparison: Comparison::Minimum,
            acs_index: 0,
            attribute_set_index: Some(1),
        }
    }

    #[test]
    fn spid_request_follows_the_rules() {
        let x = build_authn_request(&params(Profile::Spid, Level::SpidL2)).unwrap();
        for needle in [
            "ID=\"_0123abcd\"",
            "Version=\"2.0\"",
            "IssueInstant=\"2026-11-28T10:00:00Z\"",
            "Destination=\"https://idp.example/sso?x=1&amp;y=2\"",
            "ForceAuthn=\"true\"",
            "AssertionConsumerServiceIndex=\"0\"",
            "AttributeConsumingServiceIndex=\"1\"",
            "Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\" NameQualifier=\"https://sp.example.it/\">https://sp.example.it/</saml:Issuer>",
            "<samlp:NameIDPolicy Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\"/>",
            "Comparison=\"minimum\"",
            "<saml:AuthnContextClassRef>https://www.spid.gov.it/SpidL2</saml:AuthnContextClassRef>",
        ] {
            assert!(x.contains(needle), "missing {needle} in {x}");
        }
        for absent in ["AllowCreate", "IsPassive", "Scoping", "RequesterID"] {
            assert!(!x.contains(absent), "{absent} in {x}");
        }
        assert_eq!(x.matches("AuthnContextClassRef>").count(), 2);
    }

    #[test]
    fn force_authn_only_above_l1_except_for_cie() {
        let l1 = build_authn_request(&params(Profile::Spid, Level::SpidL1)).unwrap();
        assert!(!l1.contains("ForceAuthn"));
        let cie = build_authn_request(&params(Profile::Cie, Level::SpidL1)).unwrap();
        assert!(cie.contains("ForceAuthn=\"true\""));
    }

    #[test]
    fn ids_are_checked_and_generated_safely() {
        let mut p = params(Profile::Spid, Level::SpidL2);
        p.id = "1abc";
        assert_eq!(build_authn_request(&p), Err(AuthnRequestError::BadId));
        p.id = "_a\"><x";
        assert_eq!(build_authn_request(&p), Err(AuthnRequestError::BadId));
        let id = new_request_id();
        assert!(id.starts_with('_') && id.len() == 33);
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn the_xml_passes_the_prefilter() {
        let x = build_authn_request(&params(Profile::Spid, Level::SpidL3)).unwrap();
        assert!(super::super::prefilter::check_xml(x.into_bytes()).is_ok());
    }
}

//! A provider's discovery document (OpenID Connect Discovery 1.0, §3–4), checked before
//! anything from it is used: the `issuer` is exactly the configured one (§4.3: a document
//! served for another issuer is refused), the endpoints are absolute `https` URLs (plain
//! `http` only on loopback, for development and tests), the code flow and PKCE S256 are
//! supported, and the signing algorithms offered include an asymmetric one. Pure: the
//! fetching, caching and refresh (last good copy kept) belong to the login method.

use serde::Deserialize;

/// Largest discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What varco uses of a discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Where the keys are; `None` when the metadata carries them inline (`jwks`, as
    /// federation metadata may).
    pub jwks_uri: Option<String>,
    /// Keys given inline (federation metadata).
    pub jwks: Option<jsonwebtoken::jwk::JwkSet>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub backchannel_logout_supported: bool,
    pub backchannel_logout_session_supported: bool,
    /// RFC 9207: the provider puts `iss` in every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: Option<String>,
    #[serde(default)]
    jwks: Option<jsonwebtoken::jwk::JwkSet>,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    #[serde(default)]
    response_types_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
    /// Discovery's default when absent (§3).
    #[serde(default = "default_auth_methods")]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    backchannel_logout_supported: bool,
    #[serde(default)]
    backchannel_logout_session_supported: bool,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

fn default_auth_methods() -> Vec<String> {
    vec!["client_secret_basic".into()]
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("the discovery document is for issuer `{got}`, not the configured `{expected}`")]
    Issuer { expected: String, got: String },
    #[error("`{0}` is not an absolute https URL")]
    Url(&'static str),
    #[error("the provider does not offer the authorization code flow")]
    NoCodeFlow,
    #[error("the provider does not offer PKCE with S256")]
    NoPkce,
    #[error("the provider offers no asymmetric ID token signature")]
    NoAsymmetricSignature,
}

/// Whether `url` is an absolute `https` URL, or `http` on a loopback host.
pub fn acceptable_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Parses and checks the document served for `expected_issuer`.
pub fn parse(bytes: &[u8], expected_issuer: &str) -> Result<Provider, DiscoveryError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DiscoveryError::Malformed("too large".into()));
    }
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| DiscoveryError::Malformed(e.to_string().chars().take(200).collect()))?;
    if doc.issuer != expected_issuer {
        return Err(DiscoveryError::Issuer {
            expected: expected_issuer.into(),
            got: doc.issuer.chars().take(200).collect(),
        });
    }
    for (name, url) in [
        ("issuer", Some(&doc.issuer)),
        ("authorization_endpoint", Some(&doc.authorization_endpoint)),
        ("token_endpoint", Some(&doc.token_endpoint)),
        ("jwks_uri", doc.jwks_uri.as_ref()),
        ("userinfo_endpoint", doc.userinfo_endpoint.as_ref()),
        ("end_session_endpoint", doc.end_session_endpoint.as_ref()),
    ] {
        if let Some(u) = url
            && !acceptable_url(u)
        {
            return Err(DiscoveryError::Url(name));
        }
    }
    if doc.jwks_uri.is_none() && doc.jwks.is_none() {
        return Err(DiscoveryError::Malformed(
            "neither jwks_uri nor jwks is given".into(),
        ));
    }
    if !doc.response_types_supported.iter().any(|r| r == "code") {
        return Err(DiscoveryError::NoCodeFlow);
    }
    if !doc
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        return Err(DiscoveryError::NoPkce);
    }
    let asymmetric = |a: &String| {
        matches!(
            a.as_str(),
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
        )
    };
    if !doc
        .id_token_signing_alg_values_supported
        .iter()
        .any(asymmetric)
    {
        return Err(DiscoveryError::NoAsymmetricSignature);
    }
    Ok(Provider {
        issuer: doc.issuer,
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        jwks_uri: doc.jwks_uri,
        jwks: doc.jwks,
        userinfo_endpoint: doc.userinfo_endpoint,
        end_session_endpoint: doc.end_session_endpoint,
        id_token_signing_alg_values_supported: doc
            .id_token_signing_alg_values_supported
            .into_iter()
            .filter(asymmetric)
            .collect(),
        token_endpoint_auth_methods_supported: doc.token_endpoint_auth_methods_supported,
        backchannel_logout_supported: doc.backchannel_logout_supported,
        backchannel_logout_session_supported: doc.backchannel_logout_session_supported,
        authorization_response_iss_parameter_supported: doc
            .authorization_response_iss_parameter_supported,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const ISS: &str = "https://kc.example/realms/staff";

    fn doc() -> Value {
        json!({
            "issuer": ISS,
            "authorization_endpoint": "https://kc.example/realms/staff/auth",
            "token_endpoint": "https://kc.example/realms/staff/token",
            "jwks_uri": "https://kc.example/realms/staff/certs",
            "userinfo_endpoint": "https://kc.example/realms/staff/userinfo",
            "end_session_endpoint": "https://kc.example/realms/staff/logout",
            "response_types_supported": ["code", "id_token"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "id_token_signing_alg_values_supported": ["HS256", "RS256", "ES256", "none"],
            "backchannel_logout_supported": true,
        })
    }

    fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
        let mut d = doc();
        f(d.as_object_mut().unwrap());
        d.to_string().into_bytes()
    }

    #[test]
    fn a_good_document_keeps_what_varco_uses() {
        let p = parse(&with(|_| {}), ISS).unwrap();
        assert_eq!(p.token_endpoint, "https://kc.example/realms/staff/token");
        // Only the asymmetric algorithms are kept.
        assert_eq!(p.id_token_signing_alg_values_supported, ["RS256", "ES256"]);
        // Discovery's default client authentication.
        assert_eq!(
            p.token_endpoint_auth_methods_supported,
            ["client_secret_basic"]
        );
        assert!(p.backchannel_logout_supported);
        // Development: http on loopback only.
        let local = with(|d| {
            d.insert("issuer".into(), json!("http://127.0.0.1:9000"));
            d.insert(
                "token_endpoint".into(),
                json!("http://localhost:9000/token"),
            );
            d.insert("jwks_uri".into(), json!("http://[::1]:9000/jwks"));
        });
        assert!(parse(&local, "http://127.0.0.1:9000").is_ok());
    }

    #[test]
    fn a_document_that_does_not_fit_is_refused() {
        assert_eq!(
            parse(&with(|_| {}), "https://kc.example/realms/other"),
            Err(DiscoveryError::Issuer {
                expected: "https://kc.example/realms/other".into(),
                got: ISS.into()
            })
        );
        let http = with(|d| {
            d.insert("token_endpoint".into(), json!("http://kc.example/token"));
        });
        assert_eq!(
            parse(&http, ISS),
            Err(DiscoveryError::Url("token_endpoint"))
        );
        let relative = with(|d| {
            d.insert("jwks_uri".into(), json!("/certs"));
        });
        assert_eq!(parse(&relative, ISS), Err(DiscoveryError::Url("jwks_uri")));
        let implicit = with(|d| {
            d.insert("response_types_supported".into(), json!(["id_token"]));
        });
        assert_eq!(parse(&implicit, ISS), Err(DiscoveryError::NoCodeFlow));
        let no_pkce = with(|d| {
            d.remove("code_challenge_methods_supported");
        });
        assert_eq!(parse(&no_pkce, ISS), Err(DiscoveryError::NoPkce));
        let hs_only = with(|d| {
            d.insert(
                "id_token_signing_alg_values_supported".into(),
                json!(["HS256", "none"]),
            );
        });
        assert_eq!(
            parse(&hs_only, ISS),
            Err(DiscoveryError::NoAsymmetricSignature)
        );
        assert!(matches!(
            parse(b"<html>", ISS),
            Err(DiscoveryError::Malformed(_))
        ));
        let missing = with(|d| {
            d.remove("token_endpoint");
        });
        assert!(matches!(
            parse(&missing, ISS),
            Err(DiscoveryError::Malformed(_))
        ));
    }
}

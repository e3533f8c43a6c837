//! `[oidc]`: varco as an OpenID Connect relying party, and the providers it trusts
//! (`[[oidc.provider]]`). The redirect URI every provider registers is
//! `<base_url><reserved_prefix>oidc/callback/<name>`; the back-channel logout URI
//! `<base_url><reserved_prefix>oidc/backchannel-logout`; for `private_key_jwt` our public
//! keys are at `<base_url><reserved_prefix>oidc/jwks`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::assertion::KeyConfig;
use crate::identity::Level;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The public origin browsers reach the gateway at (`https://host[:port]`).
    pub base_url: String,
    /// Our client-authentication keys for `private_key_jwt` (published at
    /// `<prefix>oidc/jwks`). Distinct from the identity header's keys.
    #[serde(default)]
    pub key: Vec<KeyConfig>,
    /// The `kid` of `key` that signs client assertions (required with several keys).
    #[serde(default)]
    pub active_kid: Option<String>,
    /// Logins a client address may start per `login_rate_window`.
    #[serde(default = "default_max_logins")]
    pub max_logins_per_address: u32,
    #[serde(default = "default_login_window", with = "humantime_serde")]
    pub login_rate_window: Duration,
    /// RSA keys UserInfo responses are encrypted to (the SPID/CIE profile), published in
    /// our relying-party metadata with `use: enc`.
    #[serde(default)]
    pub encryption_key: Vec<EncryptionKeyConfig>,
    /// OpenID Federation (SPID/CIE): our entity, its keys, anchors and trust marks.
    #[serde(default)]
    pub federation: Option<FederationConfig>,
    #[serde(default)]
    pub provider: Vec<ProviderConfig>,
}

/// `[[oidc.encryption_key]]`: an RSA private key (PKCS#8 PEM, 2048 bits or more).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKeyConfig {
    pub kid: String,
    pub private_key: PathBuf,
}

/// `[oidc.federation]`: varco as a relying party of the SPID/CIE OpenID Connect
/// Federation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Our entity id, which is also our `client_id` at federation providers.
    pub entity_id: String,
    /// Our superiors (the intermediate or the trust anchor that registered us).
    pub authority_hints: Vec<String>,
    /// Federation signing keys (the Entity Configuration's), distinct from `[[oidc.key]]`.
    pub key: Vec<KeyConfig>,
    #[serde(default)]
    pub active_kid: Option<String>,
    /// The trust anchors providers are trusted through.
    pub trust_anchor: Vec<TrustAnchorConfig>,
    /// Trust marks issued to us, published in our Entity Configuration.
    #[serde(default)]
    pub trust_mark: Vec<TrustMarkConfig>,
    /// Trust marks (by id) a provider must carry, issued by its trust anchor.
    #[serde(default)]
    pub required_trust_marks: Vec<String>,
    pub organization_name: String,
    #[serde(default)]
    pub client_name: Option<String>,
    pub contacts: Vec<String>,
    #[serde(default)]
    pub homepage_uri: Option<String>,
    #[serde(default)]
    pub policy_uri: Option<String>,
    #[serde(default)]
    pub logo_uri: Option<String>,
    /// How long our Entity Configuration is valid (`exp` - `iat`).
    #[serde(default = "default_configuration_ttl", with = "humantime_serde")]
    pub configuration_ttl: Duration,
}

fn default_configuration_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// `[[oidc.federation.trust_anchor]]`: an anchor's entity id and its federation keys (a
/// JWKS file: from configuration, never from the network).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchorConfig {
    pub entity_id: String,
    pub jwks_file: PathBuf,
}

/// `[[oidc.federation.trust_mark]]`: a trust mark issued to us (a JWT in a file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustMarkConfig {
    pub id: String,
    pub file: PathBuf,
}

fn default_max_logins() -> u32 {
    30
}

fn default_login_window() -> Duration {
    Duration::from_secs(60)
}

/// How varco authenticates at a provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A JWT signed with our `[[oidc.key]]` (RFC 7523; Core §9).
    PrivateKeyJwt,
}

/// Which rules a provider follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderProfile {
    /// An ordinary provider (Keycloak, Entra ID, a regional IdP): logins are method `oidc`.
    #[default]
    Generic,
    /// SPID over OpenID Connect: method `spid`, the SpidL `acr` URIs, the eID claims.
    Spid,
    /// CIE over OpenID Connect: method `cie`.
    Cie,
}

/// `[[oidc.provider]]`: one OpenID Provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short name, used in URLs, logs and metrics (`[a-z0-9-]`).
    pub name: String,
    /// What the chooser shows.
    #[serde(default)]
    pub label: Option<String>,
    /// The issuer identifier; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuth,
    /// The client secret for `client_secret_basic`, from a file (first line)...
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// ... or from an environment variable.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub profile: ProviderProfile,
    /// Scopes requested (`openid` is always sent).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimNames,
    /// `acr` value → level. Default: the SpidL URIs.
    #[serde(default)]
    pub acr: BTreeMap<String, Level>,
    /// The level of an ID token without `acr`; unset refuses such tokens.
    #[serde(default)]
    pub acr_absent: Option<Level>,
    /// Send `acr_values` for the route's level (the values of `acr` mapped to it and above).
    #[serde(default = "yes")]
    pub send_acr_values: bool,
    /// Fetch UserInfo after the token request and merge it (same `sub` only).
    #[serde(default)]
    pub userinfo: bool,
    /// CA bundle (PEM) for the provider's TLS; default the public web roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Allowed clock difference with the provider.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How often discovery and the JWKS are fetched again (the last good copy is kept when
    /// a fetch fails).
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Timeout of each request to the provider.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// End the provider's session too on logout (RP-initiated logout), when it has an
    /// `end_session_endpoint`.
    #[serde(default = "yes")]
    pub end_session: bool,
    /// Where the last good copies of the provider's documents are kept (discovery, JWKS,
    /// entity statements), used when the provider cannot be reached — also at start-up.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// SPID/CIE profiles: the trust anchor this provider is trusted through (its entity
    /// id; default the first `[[oidc.federation.trust_anchor]]`). With a federation, the
    /// provider's metadata comes from its trust chain, not from discovery.
    #[serde(default)]
    pub trust_anchor: Option<String>,
}

fn default_client_auth() -> ClientAuth {
    ClientAuth::ClientSecretBasic
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn yes() -> bool {
    true
}

fn default_skew() -> Duration {
    Duration::from_secs(30)
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[oidc.provider.claims]`: which claims hold the identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    /// The fiscal code (`TINIT-` forms accepted).
    pub fiscal_code: String,
    pub given_name: String,
    pub family_name: String,
    /// An array (or space-separated string) of role names; unset takes roles from the
    /// directory only.
    pub roles: Option<String>,
}

impl Default for ClaimNames {
    fn default() -> ClaimNames {
        ClaimNames {
            fiscal_code: crate::oidc::claims::EID_FISCAL_NUMBER.into(),
            given_name: "given_name".into(),
            family_name: "family_name".into(),
            roles: None,
        }
    }
}

impl ProviderConfig {
    /// The method logins through this provider count as.
    pub fn method(&self) -> crate::identity::Method {
        use crate::identity::Method;
        match self.profile {
            ProviderProfile::Generic => Method::Oidc,
            ProviderProfile::Spid => Method::Spid,
            ProviderProfile::Cie => Method::Cie,
        }
    }

    /// The acr map: the configured one, or the SpidL URIs.
    pub fn acr_map(&self) -> crate::oidc::id_token::AcrMap {
        let mut map = if self.acr.is_empty() {
            crate::oidc::id_token::AcrMap::spid()
        } else {
            crate::oidc::id_token::AcrMap {
                values: self.acr.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                absent: None,
            }
        };
        map.absent = self.acr_absent;
        map
    }

    pub fn claim_map(&self) -> crate::oidc::claims::ClaimMap {
        crate::oidc::claims::ClaimMap {
            fiscal_code: self.claims.fiscal_code.clone(),
            given_name: self.claims.given_name.clone(),
            family_name: self.claims.family_name.clone(),
            roles: self.claims.roles.clone(),
        }
    }
}

impl OidcConfig {
    /// Problems of `[oidc]` alone, each with its key.
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let base = self.base_url.as_str();
        let origin_only = base.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "https" | "http") && !rest.is_empty() && !rest.contains('/')
        });
        if !origin_only {
            bad(
                "oidc.base_url".into(),
                "must be an origin like `https://gateway.example.it` (no path, no trailing /)"
                    .into(),
            );
        }
        if self.max_logins_per_address == 0
            || self.login_rate_window.is_zero()
            || self.login_rate_window > Duration::from_secs(86_400)
        {
            bad(
                "oidc.max_logins_per_address".into(),
                "a limit above zero per login_rate_window (1s to 1d)".into(),
            );
        }
        let mut kids = std::collections::HashSet::new();
        for (i, k) in self.key.iter().enumerate() {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                bad(
                    format!("oidc.key[{i}].kid"),
                    "must be present and unique".into(),
                );
            }
            if !k.private_key.is_file() {
                bad(
                    format!("oidc.key[{i}].private_key"),
                    format!("file `{}` does not exist", k.private_key.display()),
                );
            }
        }
        match &self.active_kid {
            Some(kid) if !self.key.iter().any(|k| &k.kid == kid) => bad(
                "oidc.active_kid".into(),
                format!("no key with kid `{kid}` in oidc.key"),
            ),
            None if self.key.len() > 1 => bad(
                "oidc.active_kid".into(),
                "must name the signing key when several keys are configured".into(),
            ),
            _ => {}
        }
        for (i, k) in self.encryption_key.iter().enumerate() {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                bad(
                    format!("oidc.encryption_key[{i}].kid"),
                    "must be present and unique among the OIDC keys".into(),
                );
            }
            if !k.private_key.is_file() {
                bad(
                    format!("oidc.encryption_key[{i}].private_key"),
                    format!("file `{}` does not exist", k.private_key.display()),
                );
            }
        }
        if let Some(f) = &self.federation {
            f.validate(bad);
        }
        if self.provider.is_empty() {
            bad(
                "oidc.provider".into(),
                "at least one [[oidc.provider]] is needed".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.provider.iter().enumerate() {
            let key = |k: &str| format!("oidc.provider[{i}].{k}");
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 40
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok || !names.insert(p.name.as_str()) {
                bad(
                    key("name"),
                    "must be unique, 1-40 characters of a-z, 0-9 and -".into(),
                );
            }
            if !crate::oidc::discovery::acceptable_url(&p.issuer) || p.issuer.contains(['?', '#']) {
                bad(
                    key("issuer"),
                    "must be an https URL without query or fragment (http only on loopback)".into(),
                );
            }
            if p.client_id.is_empty() {
                bad(key("client_id"), "must not be empty".into());
            }
            match p.client_auth {
                ClientAuth::ClientSecretBasic => {
                    match (&p.client_secret_file, &p.client_secret_env) {
                        (Some(f), None) if !f.is_file() => bad(
                            key("client_secret_file"),
                            format!("file `{}` does not exist", f.display()),
                        ),
                        (None, Some(v)) if std::env::var_os(v).is_none() => bad(
                            key("client_secret_env"),
                            format!("the environment variable `{v}` is not set"),
                        ),
                        (Some(_), None) | (None, Some(_)) => {}
                        _ => bad(
                            key("client_secret_file"),
                            "client_secret_basic needs exactly one of client_secret_file and client_secret_env".into(),
                        ),
                    }
                }
                ClientAuth::PrivateKeyJwt => {
                    if self.key.is_empty() {
                        bad(
                            key("client_auth"),
                            "private_key_jwt needs a signing key in [[oidc.key]]".into(),
                        );
                    }
                    if p.client_secret_file.is_some() || p.client_secret_env.is_some() {
                        bad(
                            key("client_secret_file"),
                            "a client secret is not used with private_key_jwt".into(),
                        );
                    }
                }
            }
            if p.profile != ProviderProfile::Generic && p.client_auth != ClientAuth::PrivateKeyJwt {
                bad(
                    key("client_auth"),
                    "the SPID and CIE profiles authenticate with private_key_jwt".into(),
                );
            }
            if p.acr.values().any(|l| *l == Level::Legacy) || p.acr_absent == Some(Level::Legacy) {
                bad(
                    key("acr"),
                    "Legacy is the PIN's level, not a provider's".into(),
                );
            }
            if p.claims.fiscal_code.is_empty() {
                bad(key("claims.fiscal_code"), "must name a claim".into());
            }
            if p.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                bad(key("scopes"), "each scope is one non-empty word".into());
            }
            if p.refresh_interval < Duration::from_secs(60) {
                bad(key("refresh_interval"), "must be at least 60s".into());
            }
            if p.timeout.is_zero() || p.timeout > Duration::from_secs(60) {
                bad(key("timeout"), "must be between 1s and 60s".into());
            }
            if p.clock_skew > Duration::from_secs(300) {
                bad(key("clock_skew"), "must be at most 300s".into());
            }
            if let Some(ca) = &p.ca
                && !ca.is_file()
            {
                bad(key("ca"), format!("file `{}` does not exist", ca.display()));
            }
            if let Some(dir) = &p.cache_dir
                && !dir.is_dir()
            {
                bad(
                    key("cache_dir"),
                    format!("`{}` is not a directory", dir.display()),
                );
            }
        }
    }
}

impl FederationConfig {
    fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let url_ok = |u: &str| crate::oidc::discovery::acceptable_url(u) && !u.contains(['?', '#']);
        if !url_ok(&self.entity_id) {
            bad(
                "oidc.federation.entity_id".into(),
                "must be an https URL without query or fragment".into(),
            );
        }
        if self.authority_hints.is_empty() || !self.authority_hints.iter().all(|h| url_ok(h)) {
            bad(
                "oidc.federation.authority_hints".into(),
                "at least one superior's entity id (an https URL)".into(),
            );
        }
        if self.key.is_empty() {
            bad(
                "oidc.federation.key".into(),
                "the Entity Configuration needs a federation signing key".into(),
            );
        }
        for (i, k) in self.key.iter().enumerate() {
            if !k.private_key.is_file() {
                bad(
                    format!("oidc.federation.key[{i}].private_key"),
                    format!("file `{}` does not exist", k.private_key.display()),
                );
            }
        }
        if self.key.len() > 1 && self.active_kid.is_none() {
            bad(
                "oidc.federation.active_kid".into(),
                "must name the signing key when several keys are configured".into(),
            );
        }
        if self.trust_anchor.is_empty() {
            bad(
                "oidc.federation.trust_anchor".into(),
                "at least one trust anchor is needed".into(),
            );
        }
        for (i, a) in self.trust_anchor.iter().enumerate() {
            if !url_ok(&a.entity_id) {
                bad(
                    format!("oidc.federation.trust_anchor[{i}].entity_id"),
                    "must be an https URL".into(),
                );
            }
            if !a.jwks_file.is_file() {
                bad(
                    format!("oidc.federation.trust_anchor[{i}].jwks_file"),
                    format!("file `{}` does not exist", a.jwks_file.display()),
                );
            }
        }
        for (i, m) in self.trust_mark.iter().enumerate() {
            if !m.file.is_file() {
                bad(
                    format!("oidc.federation.trust_mark[{i}].file"),
                    format!("file `{}` does not exist", m.file.display()),
                );
            }
        }
        if self.contacts.is_empty() || self.organization_name.is_empty() {
            bad(
                "oidc.federation.contacts".into(),
                "organization_name and at least one contact are required".into(),
            );
        }
        if self.configuration_ttl < Duration::from_secs(300)
            || self.configuration_ttl > Duration::from_secs(7 * 86_400)
        {
            bad(
                "oidc.federation.configuration_ttl".into(),
                "must be between 5m and 7d".into(),
            );
        }
    }
}

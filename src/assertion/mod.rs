//! The signed upstream header (DESIGN.md, "The header contract with backends"): a JWT the
//! gateway mints for every request it forwards on a protected route, and that backends
//! verify against the JWKS the gateway publishes.
//!
//! Keys come from PEM files, each with a `kid`; one `active_kid` signs and every configured
//! key is published, so rotation is: add the new key, switch `active_kid`, keep the old one
//! until its last token expired. Signing uses jsonwebtoken's aws-lc backend; the signer for
//! a key is built once per thread (not per request), the JOSE header is encoded once per
//! key, and the claims that stay the same for a session are serialized once per session
//! ([`SessionClaims`]), so a request adds only its own few claims.

pub mod fetch;
pub mod verify;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::crypto::JwtSigner;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// Signature algorithms the gateway signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    ES256,
    EdDSA,
    RS256,
}

impl SigningAlgorithm {
    pub fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::RS256 => Algorithm::RS256,
        }
    }
}

/// `[[assertion.key]]`: one signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    #[serde(default = "default_alg")]
    pub alg: SigningAlgorithm,
    /// PEM file with the private key (PKCS#8; SEC1 for EC; PKCS#1 for RSA).
    pub private_key: PathBuf,
}

fn default_alg() -> SigningAlgorithm {
    SigningAlgorithm::ES256
}

/// `[assertion]`: the header contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionConfig {
    /// Header that carries the JWT upstream; default `<identity_header_prefix>assertion`
    /// (`x-varco-assertion`). It must carry the identity prefix, so clients cannot send it.
    pub header: Option<String>,
    /// The `iss` claim: this gateway's identifier (a URL by convention).
    pub issuer: String,
    /// Lifetime of a minted header (`exp - iat`); at most 300 s.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The key that signs; must be one of `key`.
    pub active_kid: Option<String>,
    pub key: Vec<KeyConfig>,
    /// Also publish the JWKS at `/.well-known/jwks.json`.
    pub well_known_jwks: bool,
    /// What a header is bound to on routes that do not say (`route.header_binding`):
    /// `request` (default) or `session`.
    pub binding: HeaderBinding,
}

/// What the identity header is bound to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderBinding {
    /// One header per request, bound to its method and URL (`htm`, `htu`) with its own
    /// `jti`: it cannot be replayed on another request.
    #[default]
    Request,
    /// One header per (session, upstream), without `htm`/`htu`, reused until shortly
    /// before it expires (at most 60 s): cheaper for the gateway and cacheable by the
    /// backend, but whoever sees it can replay it on other URLs of the same upstream until
    /// it expires. Requests with unsafe methods keep request binding unless the route
    /// says `session_binding_unsafe_methods = true`.
    Session,
}

impl AssertionConfig {
    /// Problems of `[assertion]` alone (whether the header carries the identity prefix is
    /// `Config::validate`'s), each with its key.
    pub fn validate(&self, bad: &mut impl FnMut(String, String)) {
        let a = self;
        if a.ttl.is_zero() || a.ttl > Duration::from_secs(300) {
            bad("assertion.ttl".into(), "must be between 1s and 300s".into());
        }
        let mut kids = std::collections::HashSet::new();
        for (i, k) in a.key.iter().enumerate() {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                bad(
                    format!("assertion.key[{i}].kid"),
                    "must be present and unique".into(),
                );
            }
            if !k.private_key.is_file() {
                bad(
                    format!("assertion.key[{i}].private_key"),
                    format!("file `{}` does not exist", k.private_key.display()),
                );
            }
        }
        match &a.active_kid {
            Some(kid) if !a.key.iter().any(|k| &k.kid == kid) => bad(
                "assertion.active_kid".into(),
                format!("no key with kid `{kid}` in assertion.key"),
            ),
            None if a.key.len() > 1 => bad(
                "assertion.active_kid".into(),
                "must name the signing key when several keys are configured".into(),
            ),
            _ => {}
        }
    }
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            header: None,
            issuer: "varco".into(),
            ttl: Duration::from_secs(60),
            active_kid: None,
            key: Vec::new(),
            well_known_jwks: false,
            binding: HeaderBinding::Request,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("key `{kid}`: cannot read `{path}`: {reason}")]
    KeyFile {
        kid: String,
        path: String,
        reason: String,
    },
    #[error("key `{kid}`: not a usable {alg:?} private key")]
    KeyFormat { kid: String, alg: SigningAlgorithm },
    #[error("no signing key: set assertion.active_kid to one of assertion.key")]
    NoActiveKey,
    #[error("signing failed")]
    Signing,
    #[error("claims could not be encoded")]
    Encoding,
}

struct KeyEntry {
    kid: String,
    alg: SigningAlgorithm,
    encoding: EncodingKey,
    /// base64url of the JOSE header, ready to be joined with the payload.
    header_b64: String,
}

/// The configured keys: the active signer and the published JWKS.
pub struct KeySet {
    keys: Vec<KeyEntry>,
    active: usize,
    jwks: Bytes,
    /// Distinguishes key sets for the per-thread signer cache.
    id: u64,
}

fn encoding_key(alg: SigningAlgorithm, pem: &[u8]) -> Option<EncodingKey> {
    match alg {
        SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem).ok(),
        SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem).ok(),
        SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem).ok(),
    }
}

/// The public JWK for a private key. jsonwebtoken derives it, except for Ed25519 keys in
/// PKCS#8 v2 form (with the public key embedded, as OpenSSL and rcgen write them), which
/// it does not accept there; for those aws-lc derives the public key.
fn public_jwk(alg: SigningAlgorithm, key: &EncodingKey) -> Option<Jwk> {
    if let Ok(jwk) = Jwk::from_encoding_key(key, alg.jwt()) {
        return Some(jwk);
    }
    if alg != SigningAlgorithm::EdDSA {
        return None;
    }
    use aws_lc_rs::signature::KeyPair as _;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(key.as_bytes()).ok()?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    serde_json::from_value(serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x })).ok()
}

fn new_signer(alg: SigningAlgorithm, key: &EncodingKey) -> Option<Box<dyn JwtSigner>> {
    (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(&alg.jwt(), key).ok()
}

impl KeySet {
    /// Loads every key and checks that it can sign. Errors name the `kid`, never key bytes.
    pub fn load(cfg: &AssertionConfig) -> Result<KeySet, AssertionError> {
        Self::from_configs(&cfg.key, cfg.active_kid.as_deref())
    }

    /// Loads `keys` (the OIDC client keys use the same `[[...key]]` shape).
    pub fn from_configs(
        configs: &[KeyConfig],
        active_kid: Option<&str>,
    ) -> Result<KeySet, AssertionError> {
        let mut keys = Vec::with_capacity(configs.len());
        for k in configs {
            let pem = std::fs::read(&k.private_key).map_err(|e| AssertionError::KeyFile {
                kid: k.kid.clone(),
                path: k.private_key.display().to_string(),
                reason: e.kind().to_string(),
            })?;
            keys.push((k.kid.clone(), k.alg, pem));
        }
        Self::from_pems(keys, active_kid)
    }

    /// Builds a key set from PEM texts `(kid, alg, pem)`.
    pub fn from_pems(
        keys: Vec<(String, SigningAlgorithm, Vec<u8>)>,
        active_kid: Option<&str>,
    ) -> Result<KeySet, AssertionError> {
        let mut entries = Vec::with_capacity(keys.len());
        let mut jwks = JwkSet { keys: Vec::new() };
        for (kid, alg, pem) in keys {
            let encoding = encoding_key(alg, &pem).ok_or_else(|| AssertionError::KeyFormat {
                kid: kid.clone(),
                alg,
            })?;
            // Refuse at start-up a key that cannot sign, rather than at the first request.
            new_signer(alg, &encoding).ok_or_else(|| AssertionError::KeyFormat {
                kid: kid.clone(),
                alg,
            })?;
            let mut jwk = public_jwk(alg, &encoding).ok_or_else(|| AssertionError::KeyFormat {
                kid: kid.clone(),
                alg,
            })?;
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(match alg {
                SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
                SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
                SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
            });
            jwks.keys.push(jwk);
            let header = serde_json::json!({ "alg": alg.jwt(), "kid": kid, "typ": "JWT" });
            let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
            entries.push(KeyEntry {
                kid,
                alg,
                encoding,
                header_b64,
            });
        }
        let active = match active_kid {
            Some(kid) => entries.iter().position(|e| e.kid == kid),
            None if entries.len() == 1 => Some(0),
            None => None,
        }
        .ok_or(AssertionError::NoActiveKey)?;
        let jwks = serde_json::to_vec(&jwks).map_err(|_| AssertionError::Encoding)?;
        Ok(KeySet {
            keys: entries,
            active,
            jwks: Bytes::from(jwks),
            id: rand::random(),
        })
    }

    /// A fresh ES256 key, for the demo and tests when no key is configured.
    pub fn ephemeral(kid: &str) -> Result<KeySet, AssertionError> {
        let pair = rcgen::KeyPair::generate().map_err(|_| AssertionError::Signing)?;
        Self::from_pems(
            vec![(
                kid.to_string(),
                SigningAlgorithm::ES256,
                pair.serialize_pem().into_bytes(),
            )],
            Some(kid),
        )
    }

    /// The JWKS document (`{"keys":[...]}`) with every configured public key.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    pub fn active_kid(&self) -> &str {
        &self.keys[self.active].kid
    }

    pub fn active_alg(&self) -> SigningAlgorithm {
        self.keys[self.active].alg
    }

    /// A JWT of `claims` signed with the active key, with `typ` in its header (client
    /// assertions and request objects; the identity header uses the faster [`Minter`]).
    pub fn sign_json(
        &self,
        typ: &str,
        claims: &serde_json::Value,
    ) -> Result<String, AssertionError> {
        let entry = &self.keys[self.active];
        let mut header = jsonwebtoken::Header::new(entry.alg.jwt());
        header.kid = Some(entry.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &entry.encoding).map_err(|_| AssertionError::Signing)
    }

    /// Signs `header_b64.payload_b64` with the active key and returns the whole JWT.
    fn sign(&self, payload_b64: &str) -> Result<String, AssertionError> {
        thread_local! {
            static SIGNERS: RefCell<HashMap<(u64, usize), Box<dyn JwtSigner>>> =
                RefCell::new(HashMap::new());
        }
        let entry = &self.keys[self.active];
        let mut jwt = String::with_capacity(entry.header_b64.len() + payload_b64.len() + 90);
        jwt.push_str(&entry.header_b64);
        jwt.push('.');
        jwt.push_str(payload_b64);
        let signature = SIGNERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let key = (self.id, self.active);
            let signer = match cache.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(new_signer(entry.alg, &entry.encoding).ok_or(AssertionError::Signing)?)
                }
            };
            signer
                .try_sign(jwt.as_bytes())
                .map_err(|_| AssertionError::Signing)
        })?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

/// The claims that stay the same for a whole session, serialized once (without braces).
#[derive(Debug, Clone)]
pub struct SessionClaims {
    json_members: Arc<str>,
}

/// Equal when they would sign the same claims (the same encoding, or equal text).
impl PartialEq for SessionClaims {
    fn eq(&self, other: &SessionClaims) -> bool {
        Arc::ptr_eq(&self.json_members, &other.json_members)
            || self.json_members == other.json_members
    }
}

#[derive(Serialize)]
struct ConstantClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    acr: &'a str,
    amr: &'a str,
    idp: &'a str,
    given_name: &'a str,
    family_name: &'a str,
    roles: Vec<&'a str>,
    sid: &'a str,
}

impl SessionClaims {
    /// `sid` is a hash of the session id, never the id itself.
    pub fn new(
        issuer: &str,
        identity: &Identity,
        sid: &str,
    ) -> Result<SessionClaims, AssertionError> {
        let c = ConstantClaims {
            iss: issuer,
            sub: identity.subject.as_str(),
            acr: identity.level.uri(),
            amr: identity.method.as_str(),
            idp: &identity.idp,
            given_name: &identity.given_name,
            family_name: &identity.family_name,
            roles: identity.roles.iter().map(|r| r.0.as_str()).collect(),
            sid,
        };
        let json = serde_json::to_string(&c).map_err(|_| AssertionError::Encoding)?;
        // Strip the braces: the per-request claims are joined in front.
        let inner = json
            .strip_prefix('{')
            .and_then(|j| j.strip_suffix('}'))
            .ok_or(AssertionError::Encoding)?;
        Ok(SessionClaims {
            json_members: inner.into(),
        })
    }
}

/// What one request contributes to its header.
pub struct RequestBinding<'a> {
    /// The route's upstream id (`aud`).
    pub audience: &'a str,
    /// `htm`: the HTTP method.
    pub method: &'a str,
    /// `htu`: the URL the upstream receives (its scheme, the Host sent, the request target).
    pub url: &'a str,
}

/// Mints identity headers.
pub struct Minter {
    keys: Arc<KeySet>,
    ttl: Duration,
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    if let Ok(q) = serde_json::to_string(s) {
        out.push_str(&q);
    }
}

impl Minter {
    pub fn new(keys: Arc<KeySet>, ttl: Duration) -> Minter {
        Minter { keys, ttl }
    }

    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// A session-bound JWT for `audience` at time `now` (no `htm`/`htu`; its own `jti`),
    /// and when it expires.
    pub fn mint_session(
        &self,
        session: &SessionClaims,
        audience: &str,
        now: SystemTime,
    ) -> Result<(String, u64), AssertionError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let exp = iat + self.ttl.as_secs();
        let jti = crate::ids::random_hex128_string();
        let mut json = String::with_capacity(session.json_members.len() + 120);
        json.push_str("{\"aud\":");
        push_json_str(&mut json, audience);
        json.push_str(&format!(",\"iat\":{iat},\"exp\":{exp},\"jti\":\"{jti}\","));
        json.push_str(&session.json_members);
        json.push('}');
        let payload = URL_SAFE_NO_PAD.encode(json.as_bytes());
        Ok((self.keys.sign(&payload)?, exp))
    }

    /// The lifetime of a minted header.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The JWT for one request at time `now`.
    pub fn mint(
        &self,
        session: &SessionClaims,
        binding: &RequestBinding<'_>,
        now: SystemTime,
    ) -> Result<String, AssertionError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let exp = iat + self.ttl.as_secs();
        let jti = crate::ids::random_hex128_string();
        let mut json = String::with_capacity(session.json_members.len() + binding.url.len() + 160);
        json.push_str("{\"aud\":");
        push_json_str(&mut json, binding.audience);
        {
            use std::fmt::Write as _;
            let _ = write!(
                json,
                ",\"iat\":{iat},\"exp\":{exp},\"jti\":\"{jti}\",\"htm\":"
            );
        }
        push_json_str(&mut json, binding.method);
        json.push_str(",\"htu\":");
        push_json_str(&mut json, binding.url);
        json.push(',');
        json.push_str(&session.json_members);
        json.push('}');
        let payload = URL_SAFE_NO_PAD.encode(json.as_bytes());
        self.keys.sign(&payload)
    }
}

/// Reads a PEM key file (used by `varco verify` tests and tools).
pub fn read_pem(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

#[cfg(test)]
pub(crate) mod tests;

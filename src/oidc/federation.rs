//! OpenID Federation at run time (the SPID/CIE OpenID Connect profile): our Entity
//! Configuration (`/.well-known/openid-federation`, signed with the federation keys), the
//! collection of a provider's trust chain over HTTP (its Entity Configuration, then up its
//! `authority_hints`, each superior's Subordinate Statement from its
//! `federation_fetch_endpoint`, until a configured trust anchor; loops and overlong paths
//! stop the walk), the chain's verification and metadata policy (`trust_chain`), and the
//! provider's trust marks, verified against the anchor's keys.

use std::collections::HashSet;
use std::future::Future;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value, json};

use super::config::FederationConfig;
use super::id_token::asymmetric;
use super::jwe::DecryptionKey;
use super::trust_chain::{self, ChainError, MAX_CHAIN_LEN, Resolved, Statement, TrustAnchor};
use crate::assertion::KeySet;

pub const ENTITY_STATEMENT_TYPE: &str = "application/entity-statement+jwt";
/// Largest entity statement fetched.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{0} has no federation_fetch_endpoint")]
    NoFetchEndpoint(String),
    #[error("no path from {leaf} to the trust anchor {anchor} (authority hints tried: {tried})")]
    NoPath {
        leaf: String,
        anchor: String,
        tried: String,
    },
    #[error("trust chain: {0}")]
    Chain(#[from] ChainError),
    #[error("trust mark `{0}`: {1}")]
    TrustMark(String, String),
    #[error("the resolved provider metadata is unusable: {0}")]
    Metadata(String),
}

/// How statements are fetched (HTTP in the gateway, maps in unit tests): the body of a GET.
pub trait Fetch {
    fn get(&self, url: String) -> impl Future<Output = Result<String, String>> + Send;
}

/// `<entity>/.well-known/openid-federation`.
pub fn configuration_url(entity_id: &str) -> String {
    format!(
        "{}/.well-known/openid-federation",
        entity_id.trim_end_matches('/')
    )
}

/// The superior's fetch endpoint from its (unverified) Entity Configuration: the keys
/// that verify what it says come from the chain, not from here.
fn fetch_endpoint(config: &Statement) -> Option<String> {
    config
        .claims
        .get("metadata")?
        .get("federation_entity")?
        .get("federation_fetch_endpoint")?
        .as_str()
        .map(str::to_string)
}

/// Collects the chain `[leaf configuration, statement about the leaf, ..., statement by
/// the anchor]` for `leaf`, walking authority hints depth first. An entity met twice (a
/// loop in `authority_hints`) or a path longer than [`MAX_CHAIN_LEN`] is not followed.
pub async fn collect<F: Fetch + Sync>(
    leaf: &str,
    anchor: &str,
    fetch: &F,
) -> Result<Vec<String>, FederationError> {
    let get = |url: String| async move {
        let body = fetch
            .get(url.clone())
            .await
            .map_err(|reason| FederationError::Fetch {
                url: url.clone(),
                reason,
            })?;
        if body.len() > MAX_STATEMENT_BYTES {
            return Err(FederationError::Fetch {
                url,
                reason: "too large".into(),
            });
        }
        Ok(body.trim().to_string())
    };
    let leaf_token = get(configuration_url(leaf)).await?;
    let leaf_statement = Statement::unverified(&leaf_token)?;
    // Depth-first: (entity, its configuration, statements so far).
    let mut stack: Vec<(String, Statement, Vec<String>)> =
        vec![(leaf.to_string(), leaf_statement, vec![leaf_token])];
    let mut seen: HashSet<String> = HashSet::from([leaf.to_string()]);
    let mut tried = Vec::new();
    while let Some((entity, config, chain)) = stack.pop() {
        if chain.len() >= MAX_CHAIN_LEN {
            continue;
        }
        for hint in config.authority_hints.iter().rev() {
            tried.push(hint.clone());
            if !seen.insert(hint.clone()) {
                continue;
            }
            let Ok(superior_token) = get(configuration_url(hint)).await else {
                continue;
            };
            let Ok(superior) = Statement::unverified(&superior_token) else {
                continue;
            };
            if superior.iss != *hint || superior.sub != *hint {
                continue;
            }
            let Some(endpoint) = fetch_endpoint(&superior) else {
                continue;
            };
            let url = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("sub", &entity);
                let sep = if endpoint.contains('?') { '&' } else { '?' };
                format!("{endpoint}{sep}{}", q.finish())
            };
            let Ok(statement) = get(url).await else {
                continue;
            };
            let mut next = chain.clone();
            next.push(statement);
            if hint == anchor {
                return Ok(next);
            }
            stack.push((hint.clone(), superior, next));
        }
    }
    Err(FederationError::NoPath {
        leaf: leaf.into(),
        anchor: anchor.into(),
        tried: if tried.is_empty() {
            "none".into()
        } else {
            tried.join(", ")
        },
    })
}

/// Verifies a trust mark the leaf lists: a JWT signed by the anchor, about `subject`,
/// with the expected id (`id`, or `trust_mark_type` in later drafts), not expired.
pub fn verify_trust_mark(
    token: &str,
    expected_id: &str,
    subject: &str,
    anchor: &TrustAnchor,
    now: u64,
) -> Result<(), FederationError> {
    let fail = |why: &str| FederationError::TrustMark(expected_id.into(), why.into());
    let header = jsonwebtoken::decode_header(token).map_err(|_| fail("not a JWT"))?;
    if !asymmetric(header.alg) {
        return Err(fail("not signed with an asymmetric algorithm"));
    }
    let typ_ok = header
        .typ
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case("trust-mark+jwt") || t.eq_ignore_ascii_case("JWT"));
    if !typ_ok {
        return Err(fail("wrong typ"));
    }
    let jwk = match &header.kid {
        Some(k) => anchor.jwks.find(k),
        None => None,
    }
    .ok_or_else(|| fail("not signed by the trust anchor"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| fail("the anchor's key is unusable"))?;
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.set_required_spec_claims(&["iss", "sub", "iat"]);
    v.set_issuer(&[&anchor.entity_id]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map_err(|_| fail("the signature or the issuer does not verify"))?;
    let c = data.claims;
    let id = c
        .get("id")
        .or_else(|| c.get("trust_mark_type"))
        .and_then(Value::as_str);
    if id != Some(expected_id) {
        return Err(fail("another trust mark"));
    }
    if c.get("sub").and_then(Value::as_str) != Some(subject) {
        return Err(fail("issued to another entity"));
    }
    if c.get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|e| e <= now)
    {
        return Err(fail("expired"));
    }
    Ok(())
}

/// A provider's chain resolved: its `openid_provider` metadata after the policies, the
/// chain's expiry, and the required trust marks checked.
pub async fn resolve_provider<F: Fetch + Sync>(
    entity_id: &str,
    anchor: &TrustAnchor,
    required_marks: &[String],
    fetch: &F,
    now: u64,
    skew: u64,
) -> Result<Resolved, FederationError> {
    let chain = collect(entity_id, &anchor.entity_id, fetch).await?;
    let tokens: Vec<&str> = chain.iter().map(String::as_str).collect();
    let resolved = trust_chain::resolve(&tokens, anchor, "openid_provider", now, skew)?;
    for id in required_marks {
        let found = resolved.trust_marks.iter().any(|m| {
            let listed_id = m
                .get("id")
                .or_else(|| m.get("trust_mark_type"))
                .and_then(Value::as_str);
            listed_id == Some(id.as_str())
                && m.get("trust_mark")
                    .and_then(Value::as_str)
                    .is_some_and(|t| verify_trust_mark(t, id, entity_id, anchor, now).is_ok())
        });
        if !found {
            return Err(FederationError::TrustMark(
                id.clone(),
                "missing, expired or not issued by the trust anchor".into(),
            ));
        }
    }
    Ok(resolved)
}

/// Our side of the federation: the entity, its keys, anchors, trust marks, and the
/// UserInfo decryption keys.
pub struct Federation {
    pub cfg: FederationConfig,
    keys: KeySet,
    pub anchors: Vec<TrustAnchor>,
    trust_marks: Vec<(String, String)>,
    pub decryption_keys: Vec<DecryptionKey>,
    /// The public halves of the decryption keys, for our metadata.
    encryption_jwks: Vec<Jwk>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("entity_id", &self.cfg.entity_id)
            .finish_non_exhaustive()
    }
}

/// Loads `[[oidc.encryption_key]]`: each RSA key as a decryptor and as a public JWK.
pub fn load_encryption_keys(
    keys: &[super::config::EncryptionKeyConfig],
) -> Result<(Vec<DecryptionKey>, Vec<Jwk>), String> {
    let mut decryptors = Vec::new();
    let mut jwks = Vec::new();
    for k in keys {
        let err = |why: String| format!("oidc.encryption_key `{}`: {why}", k.kid);
        let der = crate::pem::load_key(&k.private_key).map_err(|e| err(e.to_string()))?;
        decryptors.push(
            DecryptionKey::from_pkcs8(Some(k.kid.clone()), der.secret_der())
                .map_err(|_| err("not an RSA PKCS#8 key".into()))?,
        );
        let pem = std::fs::read(&k.private_key).map_err(|e| err(e.kind().to_string()))?;
        let enc = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
            .map_err(|_| err("not an RSA key".into()))?;
        let mut jwk = Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::RS256)
            .map_err(|_| err("not an RSA key".into()))?;
        jwk.common.key_id = Some(k.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Encryption);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RSA_OAEP_256);
        jwks.push(jwk);
    }
    Ok((decryptors, jwks))
}

impl Federation {
    pub fn load(
        cfg: &FederationConfig,
        encryption: &[super::config::EncryptionKeyConfig],
    ) -> Result<Federation, String> {
        let keys = KeySet::from_configs(&cfg.key, cfg.active_kid.as_deref())
            .map_err(|e| format!("oidc.federation.key: {e}"))?;
        let mut anchors = Vec::new();
        for a in &cfg.trust_anchor {
            let text = std::fs::read(&a.jwks_file).map_err(|e| {
                format!(
                    "oidc.federation.trust_anchor `{}`: cannot read {}: {}",
                    a.entity_id,
                    a.jwks_file.display(),
                    e.kind()
                )
            })?;
            let jwks: JwkSet = serde_json::from_slice(&text).map_err(|_| {
                format!(
                    "oidc.federation.trust_anchor `{}`: {} is not a JWKS",
                    a.entity_id,
                    a.jwks_file.display()
                )
            })?;
            anchors.push(TrustAnchor {
                entity_id: a.entity_id.clone(),
                jwks,
            });
        }
        let mut trust_marks = Vec::new();
        for m in &cfg.trust_mark {
            let text = std::fs::read_to_string(&m.file).map_err(|e| {
                format!(
                    "oidc.federation.trust_mark `{}`: cannot read {}: {}",
                    m.id,
                    m.file.display(),
                    e.kind()
                )
            })?;
            trust_marks.push((m.id.clone(), text.trim().to_string()));
        }
        let (decryption_keys, encryption_jwks) = load_encryption_keys(encryption)?;
        Ok(Federation {
            cfg: cfg.clone(),
            keys,
            anchors,
            trust_marks,
            decryption_keys,
            encryption_jwks,
        })
    }

    pub fn anchor(&self, entity_id: Option<&str>) -> Option<&TrustAnchor> {
        match entity_id {
            Some(id) => self.anchors.iter().find(|a| a.entity_id == id),
            None => self.anchors.first(),
        }
    }

    /// Our relying-party metadata (`metadata.openid_relying_party`).
    pub fn rp_metadata(&self, redirect_uris: &[String], oidc_keys: Option<&KeySet>) -> Value {
        let mut keys: Vec<Value> = oidc_keys
            .and_then(|k| serde_json::from_slice::<Value>(&k.jwks_json()).ok())
            .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        keys.extend(
            self.encryption_jwks
                .iter()
                .filter_map(|j| serde_json::to_value(j).ok()),
        );
        let signing_alg = oidc_keys.map_or("ES256", |k| match k.active_alg() {
            crate::assertion::SigningAlgorithm::ES256 => "ES256",
            crate::assertion::SigningAlgorithm::EdDSA => "EdDSA",
            crate::assertion::SigningAlgorithm::RS256 => "RS256",
        });
        let mut md = json!({
            "client_id": self.cfg.entity_id,
            "client_registration_types": ["automatic"],
            "application_type": "web",
            "redirect_uris": redirect_uris,
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": signing_alg,
            "request_object_signing_alg": signing_alg,
            "id_token_signed_response_alg": "RS256",
            "userinfo_signed_response_alg": "RS256",
            "userinfo_encrypted_response_alg": "RSA-OAEP-256",
            "userinfo_encrypted_response_enc": "A256CBC-HS512",
            "jwks": { "keys": keys },
            "client_name": self.cfg.client_name.as_deref().unwrap_or(&self.cfg.organization_name),
            "contacts": self.cfg.contacts,
        });
        if let Some(o) = md.as_object_mut() {
            for (k, v) in [
                ("policy_uri", &self.cfg.policy_uri),
                ("logo_uri", &self.cfg.logo_uri),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), json!(v));
                }
            }
        }
        md
    }

    /// Our Entity Configuration, signed with the active federation key.
    pub fn entity_configuration(
        &self,
        redirect_uris: &[String],
        oidc_keys: Option<&KeySet>,
        now: u64,
    ) -> Result<String, String> {
        let federation_jwks: Value =
            serde_json::from_slice(&self.keys.jwks_json()).map_err(|e| e.to_string())?;
        let mut entity = json!({
            "organization_name": self.cfg.organization_name,
            "contacts": self.cfg.contacts,
        });
        if let (Some(o), Some(h)) = (entity.as_object_mut(), &self.cfg.homepage_uri) {
            o.insert("homepage_uri".into(), json!(h));
        }
        let claims = json!({
            "iss": self.cfg.entity_id,
            "sub": self.cfg.entity_id,
            "iat": now,
            "exp": now + self.cfg.configuration_ttl.as_secs(),
            "jwks": federation_jwks,
            "authority_hints": self.cfg.authority_hints,
            "metadata": {
                "openid_relying_party": self.rp_metadata(redirect_uris, oidc_keys),
                "federation_entity": entity,
            },
            "trust_marks": self.trust_marks.iter()
                .map(|(id, jwt)| json!({ "id": id, "trust_mark": jwt }))
                .collect::<Vec<_>>(),
        });
        self.keys
            .sign_json("entity-statement+jwt", &claims)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;

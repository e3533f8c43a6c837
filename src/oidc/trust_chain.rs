//! Trust chains of OpenID Federation 1.0 (§4, §10), as the SPID/CIE OIDC profile uses
//! them: verifying a chain already collected — the leaf's Entity Configuration, then each
//! superior's Subordinate Statement about the one below, up to a statement issued by a
//! configured trust anchor — and resolving the leaf's metadata through the chain's
//! policies. Pure: fetching the statements (`/.well-known/openid-federation`, each
//! superior's `federation_fetch_endpoint`) is the caller's; nothing here touches the
//! network.
//!
//! Every statement is an `entity-statement+jwt` signed with an asymmetric algorithm; each
//! is verified with the keys its superior states (the last with the anchor's configured
//! keys), each must be valid now, the `constraints` (`max_path_length`, `naming_constraints`,
//! `allowed_entity_types`) are honoured, and the chain
//! expires with its earliest statement.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::metadata_policy::{self, PolicyError};

/// Largest entity statement accepted.
const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Longest chain followed (statements).
pub const MAX_CHAIN_LEN: usize = 8;

/// A configured trust anchor: its entity id and federation keys (from configuration, never
/// from the network).
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    pub entity_id: String,
    pub jwks: JwkSet,
}

/// An entity statement's claims, not yet verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub iss: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jwks: JwkSet,
    pub authority_hints: Vec<String>,
    pub claims: Map<String, Value>,
}

impl Statement {
    /// Reads a statement's payload without verifying it (to learn whom to ask for the
    /// keys that verify it).
    pub fn unverified(token: &str) -> Result<Statement, ChainError> {
        if token.len() > MAX_STATEMENT_BYTES {
            return Err(ChainError::Malformed("too large".into()));
        }
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ChainError::Malformed("not a JWS".into()));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ChainError::Malformed("payload not base64url".into()))?;
        let claims: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| ChainError::Malformed("payload not a JSON object".into()))?;
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ChainError::Malformed(format!("no `{k}`")))
        };
        let number = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| ChainError::Malformed(format!("no `{k}`")))
        };
        let jwks: JwkSet = match claims.get("jwks") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| ChainError::Malformed("`jwks` is not a JWK set".into()))?,
            None => JwkSet { keys: Vec::new() },
        };
        let authority_hints = match claims.get("authority_hints") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|h| h.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ChainError::Malformed("`authority_hints` not strings".into()))?,
            Some(_) => return Err(ChainError::Malformed("`authority_hints` not a list".into())),
        };
        Ok(Statement {
            iss: text("iss")?,
            sub: text("sub")?,
            iat: number("iat")?,
            exp: number("exp")?,
            jwks,
            authority_hints,
            claims,
        })
    }

    fn object(&self, claim: &str, entity_type: &str) -> Option<&Map<String, Value>> {
        self.claims
            .get(claim)
            .and_then(|m| m.get(entity_type))
            .and_then(Value::as_object)
    }

    fn constraint(&self, name: &str) -> Option<&Value> {
        self.claims.get("constraints").and_then(|c| c.get(name))
    }

    fn max_path_length(&self) -> Option<u64> {
        self.claims
            .get("constraints")
            .and_then(|c| c.get("max_path_length"))
            .and_then(Value::as_u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("an entity statement is malformed: {0}")]
    Malformed(String),
    #[error("the statement issued by `{0}` is not an asymmetrically signed entity-statement+jwt")]
    Type(String),
    #[error("the statement issued by `{0}` does not verify with its superior's keys")]
    Signature(String),
    #[error("the statement issued by `{0}` has expired")]
    Expired(String),
    #[error("the statement issued by `{0}` is issued in the future")]
    NotYetValid(String),
    #[error("the chain is broken at `{0}`: a statement is not about the entity below it")]
    Broken(String),
    #[error("the leaf's entity configuration is not self-issued")]
    NotSelfIssued,
    #[error("the chain does not end at the trust anchor `{0}`")]
    NotAnchored(String),
    #[error("the chain is longer than `{0}` allows (max_path_length)")]
    PathTooLong(String),
    #[error("the chain has no statements, or more than the limit")]
    Length,
    #[error("the leaf has no `{0}` metadata")]
    NoMetadata(String),
    #[error("metadata policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("{by}'s constraints exclude {what}")]
    Constraint { by: String, what: String },
}

/// The host of an entity id (`https://op.example.it/oidc` → `op.example.it`).
fn host_of(entity_id: &str) -> Option<String> {
    let uri: http::Uri = entity_id.parse().ok()?;
    uri.host().map(|h| h.to_ascii_lowercase())
}

/// Whether `host` matches a naming constraint: the host itself, or, for `.example.it`,
/// any host below it (as X.509 name constraints read DNS names).
fn host_matches(host: &str, constraint: &str) -> bool {
    let c = constraint.to_ascii_lowercase();
    match c.strip_prefix('.') {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == c,
    }
}

/// A resolved chain: the leaf's metadata for one entity type after every policy, and when
/// that resolution stops being valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub entity_id: String,
    pub metadata: Map<String, Value>,
    /// The lowest `exp` of the chain.
    pub expires: u64,
    /// The leaf's `trust_marks`, as it lists them (verified separately).
    pub trust_marks: Vec<Value>,
}

/// Verifies `token`'s signature with one of `keys` (by `kid`), as an entity statement.
fn verify_signature(token: &str, keys: &JwkSet, issuer: &str) -> Result<(), ChainError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| ChainError::Type(issuer.into()))?;
    let typ_ok = header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("entity-statement+jwt"));
    let asymmetric = matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    );
    if !typ_ok || !asymmetric {
        return Err(ChainError::Type(issuer.into()));
    }
    let kid = header
        .kid
        .ok_or_else(|| ChainError::Signature(issuer.into()))?;
    let jwk = keys
        .find(&kid)
        .ok_or_else(|| ChainError::Signature(issuer.into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| ChainError::Signature(issuer.into()))?;
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.set_required_spec_claims(&["iss", "sub", "iat", "exp"]);
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map(|_| ())
        .map_err(|_| ChainError::Signature(issuer.into()))
}

/// Verifies a collected chain — `[leaf entity configuration, statement about the leaf by
/// its superior, ..., statement by the trust anchor]`, optionally followed by the anchor's
/// own entity configuration — and resolves the leaf's `entity_type` metadata.
pub fn resolve(
    chain: &[&str],
    anchor: &TrustAnchor,
    entity_type: &str,
    now: u64,
    skew: u64,
) -> Result<Resolved, ChainError> {
    if chain.len() < 2 || chain.len() > MAX_CHAIN_LEN {
        return Err(ChainError::Length);
    }
    let mut statements = chain
        .iter()
        .map(|t| Statement::unverified(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tokens: Vec<&str> = chain.to_vec();
    // The anchor's own configuration at the end adds nothing the configured keys do not
    // already say: checked, then set aside.
    if let Some(last) = statements.last()
        && last.iss == last.sub
        && last.iss == anchor.entity_id
        && statements.len() > 2
    {
        verify_signature(tokens[tokens.len() - 1], &anchor.jwks, &last.iss)?;
        statements.pop();
        tokens.pop();
    }
    for s in &statements {
        if s.exp.saturating_add(skew) <= now {
            return Err(ChainError::Expired(s.iss.clone()));
        }
        if s.iat > now.saturating_add(skew) {
            return Err(ChainError::NotYetValid(s.iss.clone()));
        }
    }
    let leaf = &statements[0];
    if leaf.iss != leaf.sub {
        return Err(ChainError::NotSelfIssued);
    }
    // The leaf names its superior among its authority hints.
    if !leaf.authority_hints.contains(&statements[1].iss) {
        return Err(ChainError::Broken(statements[1].iss.clone()));
    }
    // The leaf's configuration is signed with its own keys, which its superior vouches for.
    verify_signature(tokens[0], &leaf.jwks, &leaf.iss)?;
    for j in 0..statements.len() - 1 {
        let (below, above) = (&statements[j], &statements[j + 1]);
        // Each statement j+1 is about the entity that issued statement j.
        if above.sub != below.iss || above.iss == above.sub {
            return Err(ChainError::Broken(above.iss.clone()));
        }
        verify_signature(tokens[j], &above.jwks, &below.iss)?;
    }
    let top = &statements[statements.len() - 1];
    if top.iss != anchor.entity_id {
        return Err(ChainError::NotAnchored(anchor.entity_id.clone()));
    }
    verify_signature(tokens[tokens.len() - 1], &anchor.jwks, &top.iss)?;
    // max_path_length in the statement at position j (issued above the j-1 intermediates
    // between it and the leaf).
    for (j, s) in statements.iter().enumerate().skip(1) {
        if let Some(max) = s.max_path_length()
            && (j as u64 - 1) > max
        {
            return Err(ChainError::PathTooLong(s.iss.clone()));
        }
    }
    // `naming_constraints` and `allowed_entity_types` of a statement about an entity bind
    // the entities below that entity (as X.509 name constraints bind the certificates a CA
    // issues): in statement j, the issuers of statements 0..j-1 below its subject.
    for (j, s) in statements.iter().enumerate().skip(2) {
        if let Some(names) = s.constraint("naming_constraints") {
            let list = |k: &str| -> Vec<String> {
                names
                    .get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (permitted, excluded) = (list("permitted"), list("excluded"));
            for below in &statements[..j - 1] {
                let host = host_of(&below.iss).unwrap_or_default();
                let allowed = (permitted.is_empty()
                    || permitted.iter().any(|c| host_matches(&host, c)))
                    && !excluded.iter().any(|c| host_matches(&host, c));
                if !allowed {
                    return Err(ChainError::Constraint {
                        by: s.iss.clone(),
                        what: below.iss.clone(),
                    });
                }
            }
        }
    }
    for s in statements.iter().skip(1) {
        if let Some(types) = s
            .constraint("allowed_entity_types")
            .and_then(Value::as_array)
            && !types.iter().any(|t| t.as_str() == Some(entity_type))
        {
            return Err(ChainError::Constraint {
                by: s.iss.clone(),
                what: format!("the entity type {entity_type}"),
            });
        }
    }
    // The leaf's metadata, with what its immediate superior states replacing it, then the
    // policies merged from the anchor down, applied.
    let mut metadata = leaf
        .object("metadata", entity_type)
        .cloned()
        .ok_or_else(|| ChainError::NoMetadata(entity_type.into()))?;
    if let Some(over) = statements[1].object("metadata", entity_type) {
        for (k, v) in over {
            metadata.insert(k.clone(), v.clone());
        }
    }
    let mut policy = Map::new();
    for s in statements.iter().skip(1).rev() {
        if let Some(p) = s.object("metadata_policy", entity_type) {
            policy = metadata_policy::merge(&policy, p)?;
        }
    }
    let metadata = metadata_policy::apply(&policy, &metadata)?;
    let trust_marks = match leaf.claims.get("trust_marks") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    Ok(Resolved {
        entity_id: leaf.sub.clone(),
        metadata,
        expires: statements.iter().map(|s| s.exp).min().unwrap_or(0),
        trust_marks,
    })
}

#[cfg(test)]
mod tests;

//! OpenID Connect, the relying party's protocol side: `[oidc]` ([`config`]), a provider's
//! discovery document checked ([`discovery`]), each provider's documents and keys at run
//! time and the requests we send it ([`provider`]), what an ID token must be to be believed
//! ([`id_token`]), back-channel logout tokens ([`logout_token`]), how claims become an
//! [`Identity`] ([`claims`]), OpenID Federation: our Entity Configuration and trust chains
//! collected over HTTP ([`federation`]), verified and resolved ([`trust_chain`]) through
//! metadata policies ([`metadata_policy`]), the SPID/CIE UserInfo JWE ([`jwe`]), and the
//! one-time values of an authorization request ([`pkce`]). The login method that drives
//! the flow through the gateway is `gateway::login::oidc`.
//!
//! The JWE decryptor is a small module on aws-lc-rs rather than `josekit`: the profile
//! needs two key encryptions and two content encryptions, aws-lc-rs (already the JWT
//! backend) has constant-time RSA-OAEP, AES-CBC and HMAC, and a decryptor that knows only
//! those cannot be talked into another algorithm; `josekit` would add a second crypto
//! stack (OpenSSL bindings) to the JOSE path.
//!
//! ID tokens are validated here with `jsonwebtoken` rather than `openidconnect`'s
//! verifier: the SPID/CIE federation profile needs the same checks over keys that come
//! from a trust chain rather than discovery, with its own algorithm list, and each rule
//! that fails has a variant of its own (as the SAML rules do) for the audit line and the
//! page.
//!
//! [`Identity`]: crate::identity::Identity

pub mod claims;
pub mod config;
pub mod discovery;
pub mod federation;
pub mod id_token;
pub mod jwe;
pub mod logout_token;
pub mod metadata_policy;
pub mod pkce;
pub mod provider;
pub mod trust_chain;

//! The service provider at run time: our keys, the federations with their current IdP
//! lists (replaced whole on a metadata refresh, never edited in place), and the
//! messages we send (AuthnRequest, LogoutRequest, LogoutResponse) and receive.
//!
//! Metadata sources: local files (read at start-up; a bad file stops the start), and a URL
//! fetched on a schedule whose aggregate must be signed by a pinned certificate. The last
//! good copy of a fetched aggregate is kept in `cache_dir` and used when a fetch fails —
//! also at start-up — and the state says so (logs and `varco_saml_metadata_*` metrics).

use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roxmltree::Document;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::authn_request::{
    AuthnRequestParams, Comparison, Profile, build_authn_request, new_request_id,
};
use super::config::{Binding, FederationConfig, SamlConfig};
use super::metadata::{self, IdpDescriptor, MetadataError};
use super::redirect::{self, MessageKind, RedirectError};
use super::response::{ASSERTION_NS, PROTOCOL_NS};
use super::sp_metadata::{self, SpDescription};
use super::time::format_utc;
use super::xmldsig;
use crate::identity::Level;
use crate::pages::escape_html as esc;

#[derive(Debug, thiserror::Error)]
pub enum SpError {
    #[error("saml.{key}: {reason}")]
    Key { key: &'static str, reason: String },
    #[error("saml.federation `{federation}`: {source_name}: {error}")]
    Metadata {
        federation: String,
        source_name: String,
        error: MetadataError,
    },
    #[error("saml.federation `{federation}`: cannot read {path}: {reason}")]
    Read {
        federation: String,
        path: String,
        reason: String,
    },
    #[error(
        "saml.federation `{federation}`: {url} could not be fetched ({reason}) and no last good copy exists in {cache}"
    )]
    NoMetadata {
        federation: String,
        url: String,
        reason: String,
        cache: String,
    },
    #[error("signing our metadata failed: {0}")]
    Signing(#[from] xmldsig::SignatureError),
}

/// The IdPs a federation trusts right now, and where they came from.
#[derive(Debug, Clone)]
pub struct IdpList {
    pub idps: Vec<IdpDescriptor>,
    /// `files`, `url`, or `cache` (the last good copy, after a failed fetch).
    pub source: &'static str,
    /// When this list was loaded (seconds).
    pub loaded_at: i64,
    /// The fetched aggregate's `validUntil` (seconds), when it has one: after it the
    /// fetched IdPs are no longer trusted, and an older copy is never installed.
    pub valid_until: Option<i64>,
}

pub struct Federation {
    pub cfg: FederationConfig,
    pub profile: Profile,
    /// Local-file IdPs (fixed) are merged with the fetched ones.
    file_idps: Vec<IdpDescriptor>,
    current: RwLock<Arc<IdpList>>,
    pinned: Vec<Vec<u8>>,
    /// Our signed metadata for this federation's profile.
    pub sp_metadata: String,
}

impl Federation {
    pub fn idps(&self) -> Arc<IdpList> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn replace(&self, list: IdpList) {
        let list = Arc::new(list);
        match self.current.write() {
            Ok(mut g) => *g = list,
            Err(p) => *p.into_inner() = list,
        }
    }

    fn cache_file(&self) -> Option<std::path::PathBuf> {
        self.cfg
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-metadata.xml", self.cfg.name)))
    }
}

/// What the browser is sent to the IdP with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// `302 Found` to this URL (HTTP-Redirect binding).
    Redirect(String),
    /// An HTML page that POSTs the form to the IdP (HTTP-POST binding).
    PostForm(String),
}

/// A request we sent and must find again when the answer arrives.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub id: String,
    pub issued_at: i64,
    pub outgoing: Outgoing,
}

pub struct ServiceProvider {
    pub entity_id: String,
    pub acs_url: String,
    pub slo_url: String,
    pub binding: Binding,
    pub skew: i64,
    key: RsaKeyPair,
    key_der: Vec<u8>,
    pub federations: Vec<Arc<Federation>>,
}

fn read_pem_cert(path: &Path) -> Result<Vec<u8>, String> {
    CertificateDer::from_pem_file(path)
        .map(|c| c.to_vec())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Our signed SP metadata for one federation of `cfg`, from the key files alone (the
/// `varco saml metadata` command; no IdP metadata is read).
pub fn sp_metadata_for(
    cfg: &SamlConfig,
    reserved_prefix: &str,
    federation: Option<&str>,
) -> Result<String, SpError> {
    let fc = match federation {
        Some(name) => cfg.federation.iter().find(|f| f.name == name),
        None => cfg.federation.first(),
    }
    .ok_or(SpError::Key {
        key: "federation",
        reason: "no such federation".into(),
    })?;
    let (cert_der, key_der, _) = load_keys(cfg)?;
    let base = format!("{}{}saml", cfg.base_url, reserved_prefix);
    let desc = SpDescription {
        entity_id: &cfg.entity_id,
        acs_url: &format!("{base}/acs"),
        slo_url: &format!("{base}/slo"),
        cert_der: &cert_der,
        service_name: &cfg.service_name,
        organization: &cfg.organization,
        contact: &cfg.contact,
        attribute_sets: &cfg.attribute_set,
    };
    Ok(sp_metadata::signed(
        &desc,
        Profile::from(fc.profile),
        &key_der,
    )?)
}

/// Our certificate (DER), key (DER) and the RSA key pair; RSA >= 2048 bits required.
fn load_keys(cfg: &SamlConfig) -> Result<(Vec<u8>, Vec<u8>, RsaKeyPair), SpError> {
    let cert_der = read_pem_cert(&cfg.cert).map_err(|reason| SpError::Key {
        key: "cert",
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_file(&cfg.key)
        .map(|k| k.secret_der().to_vec())
        .map_err(|_| SpError::Key {
            key: "key",
            reason: format!("{}: not a PEM private key", cfg.key.display()),
        })?;
    let key = RsaKeyPair::from_pkcs8(&key_der)
        .or_else(|_| RsaKeyPair::from_der(&key_der))
        .map_err(|_| SpError::Key {
            key: "key",
            reason: "not an RSA private key (SPID and CIE require RSA)".into(),
        })?;
    if key.public_modulus_len() * 8 < 2048 {
        return Err(SpError::Key {
            key: "key",
            reason: "RSA keys below 2048 bits are refused".into(),
        });
    }
    if metadata::key_bits(&cert_der).is_none() {
        return Err(SpError::Key {
            key: "cert",
            reason: "the certificate cannot be read".into(),
        });
    }
    Ok((cert_der, key_der, key))
}

impl ServiceProvider {
    /// Loads keys and metadata. Every problem stops the start with the key that causes it.
    pub async fn load(cfg: &SamlConfig, reserved_prefix: &str, now: i64) -> Result<Self, SpError> {
        let (cert_der, key_der, key) = load_keys(cfg)?;
        if cfg
            .federation
            .iter()
            .any(|f| f.profile == super::config::ProfileName::Spid)
        {
            let gaps = metadata::avviso29_gaps(&cert_der, &cfg.entity_id, cfg.contact.public);
            if !gaps.is_empty() {
                tracing::warn!(
                    missing = %gaps.join("; "),
                    "the SP certificate does not follow the SPID profile (AgID Avviso 29): SPID identity providers may refuse our requests; `varco saml certificate --kind public|private ...` makes a key and certificate that do"
                );
            }
        }
        let base = format!("{}{}saml", cfg.base_url, reserved_prefix);
        let acs_url = format!("{base}/acs");
        let slo_url = format!("{base}/slo");
        let mut federations = Vec::new();
        for fc in &cfg.federation {
            let profile = Profile::from(fc.profile);
            let desc = SpDescription {
                entity_id: &cfg.entity_id,
                acs_url: &acs_url,
                slo_url: &slo_url,
                cert_der: &cert_der,
                service_name: &cfg.service_name,
                organization: &cfg.organization,
                contact: &cfg.contact,
                attribute_sets: &cfg.attribute_set,
            };
            let sp_metadata = sp_metadata::signed(&desc, profile, &key_der)?;
            let mut file_idps = Vec::new();
            for path in &fc.metadata_files {
                let bytes = std::fs::read(path).map_err(|e| SpError::Read {
                    federation: fc.name.clone(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let idps = metadata::load(bytes, None, fc.min_rsa_bits, now).map_err(|error| {
                    SpError::Metadata {
                        federation: fc.name.clone(),
                        source_name: path.display().to_string(),
                        error,
                    }
                })?;
                file_idps.extend(idps);
            }
            let mut pinned = Vec::new();
            for p in &fc.metadata_signing_certs {
                pinned.push(read_pem_cert(p).map_err(|reason| SpError::Read {
                    federation: fc.name.clone(),
                    path: p.display().to_string(),
                    reason,
                })?);
            }
            let fed = Federation {
                cfg: fc.clone(),
                profile,
                current: RwLock::new(Arc::new(IdpList {
                    idps: file_idps.clone(),
                    source: "files",
                    loaded_at: now,
                    valid_until: None,
                })),
                file_idps,
                pinned,
                sp_metadata,
            };
            if let Some(url) = fc.metadata_url.clone() {
                // First fetch; on failure the last good copy, else the start fails.
                if let Err(reason) = fed_fetch(&fed, &url, now).await {
                    let cached = fed.cache_file().and_then(|f| std::fs::read(f).ok());
                    let used = cached.and_then(|bytes| {
                        let until = metadata::valid_until(&bytes);
                        metadata::load(bytes, Some(&fed.pinned), fc.min_rsa_bits, now)
                            .ok()
                            .map(|idps| (idps, until))
                    });
                    match used {
                        Some((idps, until)) => {
                            tracing::warn!(
                                federation = %fc.name, url = %url, reason = %reason,
                                "IdP metadata fetch failed at start-up: using the last good copy"
                            );
                            fed.install(idps, "cache", now, until);
                        }
                        None => {
                            return Err(SpError::NoMetadata {
                                federation: fc.name.clone(),
                                url,
                                reason,
                                cache: fed
                                    .cfg
                                    .cache_dir
                                    .as_ref()
                                    .map_or("(none)".into(), |d| d.display().to_string()),
                            });
                        }
                    }
                }
            }
            federations.push(Arc::new(fed));
        }
        Ok(ServiceProvider {
            entity_id: cfg.entity_id.clone(),
            acs_url,
            slo_url,
            binding: cfg.binding,
            skew: i64::try_from(cfg.clock_skew.as_secs()).unwrap_or(5),
            key,
            key_der,
            federations,
        })
    }

    pub fn federation(&self, name: &str) -> Option<&Arc<Federation>> {
        self.federations.iter().find(|f| f.cfg.name == name)
    }

    /// The federation and IdP for an entityID (the first federation that lists it).
    pub fn find_idp(&self, entity_id: &str) -> Option<(Arc<Federation>, IdpDescriptor)> {
        self.federations.iter().find_map(|f| {
            f.idps()
                .idps
                .iter()
                .find(|i| i.entity_id == entity_id)
                .map(|i| (Arc::clone(f), i.clone()))
        })
    }

    /// A signed AuthnRequest for `idp` at `level`.
    pub fn authn_request(
        &self,
        fed: &Federation,
        idp: &IdpDescriptor,
        level: Level,
        relay_state: &str,
        now: i64,
    ) -> Result<SentRequest, RedirectError> {
        let id = new_request_id();
        let instant = format_utc(now);
        // The configured binding when the IdP offers it, else the other one.
        let (binding, destination) = match (self.binding, &idp.sso_redirect, &idp.sso_post) {
            (Binding::Redirect, Some(r), _) | (Binding::Post, Some(r), None) => {
                (Binding::Redirect, r)
            }
            (Binding::Post, _, Some(p)) | (Binding::Redirect, None, Some(p)) => (Binding::Post, p),
            (_, None, None) => return Err(RedirectError::Signing),
        };
        let params = AuthnRequestParams {
            profile: fed.profile,
            id: &id,
            issue_instant: &instant,
            destination,
            sp_entity_id: &self.entity_id,
            level,
            comparison: Comparison::Minimum,
            acs_index: 0,
            attribute_set_index: Some(if fed.profile == Profile::Cie {
                0
            } else {
                fed.cfg.attribute_set
            }),
        };
        let xml = build_authn_request(&params).map_err(|_| RedirectError::Signing)?;
        let outgoing = match binding {
            Binding::Redirect => {
                let q =
                    redirect::sign_query(MessageKind::Request, &xml, Some(relay_state), &self.key)?;
                let sep = if destination.contains('?') { '&' } else { '?' };
                Outgoing::Redirect(format!("{destination}{sep}{q}"))
            }
            Binding::Post => {
                let signed = self
                    .sign_after_issuer(&xml, &id)
                    .map_err(|_| RedirectError::Signing)?;
                Outgoing::PostForm(post_form(destination, "SAMLRequest", &signed, relay_state))
            }
        };
        Ok(SentRequest {
            id,
            issued_at: now,
            outgoing,
        })
    }

    fn sign_after_issuer(&self, xml: &str, id: &str) -> Result<String, xmldsig::SignatureError> {
        let cert = self.cert_der();
        let at = xml
            .find("</saml:Issuer>")
            .map_or(0, |i| i + "</saml:Issuer>".len());
        let template = xmldsig::signature_template(id, &cert);
        xmldsig::sign_enveloped(
            &format!("{}{template}{}", &xml[..at], &xml[at..]),
            &self.key_der,
        )
    }

    fn cert_der(&self) -> Vec<u8> {
        // The metadata carries it; take it back from the first federation's document.
        self.federations
            .first()
            .and_then(|f| {
                let doc = Document::parse(&f.sp_metadata).ok()?;
                let c = doc
                    .descendants()
                    .find(|n| n.tag_name().name() == "X509Certificate")?;
                STANDARD.decode(c.text()?.trim()).ok()
            })
            .unwrap_or_default()
    }

    /// A signed LogoutRequest (HTTP-Redirect) for the session's NameID.
    pub fn logout_request(
        &self,
        idp: &IdpDescriptor,
        name_id: &str,
        name_qualifier: &str,
        session_index: Option<&str>,
        relay_state: &str,
        now: i64,
    ) -> Result<Option<SentRequest>, RedirectError> {
        let Some(slo) = &idp.slo_redirect else {
            return Ok(None);
        };
        let id = new_request_id();
        let index = session_index.map_or(String::new(), |s| {
            format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", esc(s))
        });
        let xml = format!(
            "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\">\
<saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\" NameQualifier=\"{sp}\">{sp}</saml:Issuer>\
<saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\" NameQualifier=\"{}\">{}</saml:NameID>\
{index}</samlp:LogoutRequest>",
            format_utc(now),
            esc(slo),
            esc(name_qualifier),
            esc(name_id),
            sp = esc(&self.entity_id),
        );
        let q = redirect::sign_query(MessageKind::Request, &xml, Some(relay_state), &self.key)?;
        let sep = if slo.contains('?') { '&' } else { '?' };
        Ok(Some(SentRequest {
            id,
            issued_at: now,
            outgoing: Outgoing::Redirect(format!("{slo}{sep}{q}")),
        }))
    }

    /// A signed LogoutResponse (HTTP-Redirect) answering an IdP's LogoutRequest.
    pub fn logout_response(
        &self,
        idp: &IdpDescriptor,
        in_response_to: &str,
        relay_state: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, RedirectError> {
        let Some(slo) = &idp.slo_redirect else {
            return Ok(None);
        };
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\">\
<saml:Issuer Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:entity\" NameQualifier=\"{sp}\">{sp}</saml:Issuer>\
<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>\
</samlp:LogoutResponse>",
            new_request_id(),
            format_utc(now),
            esc(slo),
            esc(in_response_to),
            sp = esc(&self.entity_id),
        );
        let q = redirect::sign_query(MessageKind::Response, &xml, relay_state, &self.key)?;
        let sep = if slo.contains('?') { '&' } else { '?' };
        Ok(Some(format!("{slo}{sep}{q}")))
    }

    /// Fetches every URL-sourced federation's metadata once; failures keep the current
    /// list (and say so). Returns (federation, outcome) pairs for logs and metrics.
    pub async fn refresh_all(&self, now: i64) -> Vec<(String, Result<(), String>)> {
        let mut out = Vec::new();
        for fed in &self.federations {
            if let Some(url) = &fed.cfg.metadata_url {
                let r = fed_fetch(fed, url, now).await;
                match &r {
                    Ok(()) => tracing::info!(federation = %fed.cfg.name, "IdP metadata refreshed"),
                    Err(reason) => {
                        let current = fed.idps();
                        if current.valid_until.is_some_and(|t| t <= now) {
                            // The last good copy has expired: its IdPs are trusted no more.
                            tracing::error!(
                                federation = %fed.cfg.name, url = %url, reason = %reason,
                                "IdP metadata refresh failed and the last good copy has expired: its identity providers are no longer accepted"
                            );
                            fed.install(Vec::new(), "expired", now, None);
                        } else {
                            tracing::warn!(
                                federation = %fed.cfg.name, url = %url, reason = %reason,
                                "IdP metadata refresh failed: keeping the last good copy"
                            );
                        }
                    }
                }
                out.push((fed.cfg.name.clone(), r));
            }
        }
        out
    }
}

impl Federation {
    fn install(
        &self,
        fetched: Vec<IdpDescriptor>,
        source: &'static str,
        now: i64,
        valid_until: Option<i64>,
    ) {
        let mut idps = self.file_idps.clone();
        for i in fetched {
            if !idps.iter().any(|f| f.entity_id == i.entity_id) {
                idps.push(i);
            }
        }
        self.replace(IdpList {
            idps,
            source,
            loaded_at: now,
            valid_until,
        });
    }
}

/// Fetches, verifies and installs a federation's URL metadata; keeps a copy on disk.
async fn fed_fetch(fed: &Federation, url: &str, now: i64) -> Result<(), String> {
    let bytes = crate::assertion::fetch::get_with(
        url,
        fed.cfg.metadata_ca.as_deref(),
        "application/samlmetadata+xml, application/xml",
        metadata::MAX_METADATA_BYTES,
    )
    .await
    .map_err(|e| e.to_string())?;
    let idps = metadata::load(bytes.to_vec(), Some(&fed.pinned), fed.cfg.min_rsa_bits, now)
        .map_err(|e| e.to_string())?;
    // A signed but older aggregate (an attacker replaying an old copy with a rotated-out
    // certificate) is not installed over a newer one.
    let until = metadata::valid_until(&bytes);
    if let (Some(new), Some(current)) = (until, fed.idps().valid_until)
        && new < current
    {
        return Err("the aggregate is older than the copy in use (validUntil)".into());
    }
    if let Some(file) = fed.cache_file() {
        let tmp = file.with_extension("xml.tmp");
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            tracing::warn!(federation = %fed.cfg.name, error = %e, "cannot keep a copy of the IdP metadata");
        }
    }
    fed.install(idps, "url", now, until);
    Ok(())
}

/// The auto-submitting HTML form of the HTTP-POST binding, every value escaped. The
/// button makes it work without JavaScript.
pub fn post_form(action: &str, field: &str, xml: &str, relay_state: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\"><title>SAML</title></head>\
<body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">\
<input type=\"hidden\" name=\"{}\" value=\"{}\">\
<input type=\"hidden\" name=\"RelayState\" value=\"{}\">\
<noscript><p>Premi il pulsante per continuare. <span lang=\"en\">Press the button to continue.</span></p></noscript>\
<button type=\"submit\">Continua / Continue</button></form></body></html>\n",
        esc(action),
        esc(field),
        STANDARD.encode(xml),
        esc(relay_state)
    )
}

/// The `InResponseTo` of a received message's root (before any other check: it finds the
/// pending request), or `None`.
pub fn in_response_to(xml: &str) -> Option<String> {
    let doc = Document::parse(xml).ok()?;
    doc.root_element()
        .attribute("InResponseTo")
        .map(str::to_string)
}

/// What an IdP's LogoutRequest says (after its Redirect signature was verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequestFacts {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    /// Seconds since the epoch.
    pub issue_instant: i64,
}

/// Parses a verified LogoutRequest: ID, Issuer, NameID; `Destination` must be our SLO URL.
pub fn parse_logout_request(xml: &str, slo_url: &str) -> Option<LogoutRequestFacts> {
    let doc = Document::parse(xml).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "LogoutRequest" || root.tag_name().namespace() != Some(PROTOCOL_NS)
    {
        return None;
    }
    if root.attribute("Destination") != Some(slo_url) || root.attribute("Version") != Some("2.0") {
        return None;
    }
    let issue_instant = root
        .attribute("IssueInstant")
        .and_then(super::time::parse_utc)?;
    let text = |name: &str| {
        root.children()
            .find(|c| {
                c.is_element()
                    && c.tag_name().name() == name
                    && c.tag_name().namespace() == Some(ASSERTION_NS)
            })
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    Some(LogoutRequestFacts {
        id: root.attribute("ID")?.to_string(),
        issuer: text("Issuer")?,
        name_id: text("NameID").unwrap_or_default(),
        issue_instant,
    })
}

/// A verified LogoutResponse: `(InResponseTo, issuer, success)`.
pub fn parse_logout_response(xml: &str, slo_url: &str) -> Option<(String, String, bool)> {
    let doc = Document::parse(xml).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "LogoutResponse"
        || root.tag_name().namespace() != Some(PROTOCOL_NS)
    {
        return None;
    }
    if root.attribute("Destination").is_some_and(|d| d != slo_url) {
        return None;
    }
    let issuer = root
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "Issuer")
        .and_then(|c| c.text())?
        .trim()
        .to_string();
    let success = root
        .descendants()
        .find(|c| c.is_element() && c.tag_name().name() == "StatusCode")
        .and_then(|c| c.attribute("Value"))
        == Some("urn:oasis:names:tc:SAML:2.0:status:Success");
    Some((root.attribute("InResponseTo")?.to_string(), issuer, success))
}

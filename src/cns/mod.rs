//! CNS (Carta Nazionale dei Servizi) smart-card certificates (issue 6, groundwork): the
//! pure validation of a client certificate chain into an identity. The chain must lead to
//! a configured CA (rustls-webpki, client-auth usage, validity dates), the end-entity
//! certificate must not be revoked by the configured CRLs (a CRL for its issuer is
//! required when CRLs are configured), must carry one of the allowed certificate policies
//! (CNS: 1.3.76.16.2.1), and its subject CN must be `<fiscal code>/<serial>.<hash>`: the
//! first 16 characters are the fiscal code, checksum-validated; names from G and SN.
//!
//! [`CnsStore`] holds the trust built from the configured files and rebuilds it when the
//! CA bundle or a CRL file changes (ops drop in a fresh CRL; no restart).

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{
    EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::FiscalCode;

mod config;
pub use config::CnsConfig;

/// The CNS certificate policy.
pub const CNS_POLICY: &str = "1.3.76.16.2.1";

/// What CNS certificates are checked against.
pub struct CnsTrust {
    pub anchors: Vec<TrustAnchor<'static>>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub crls: Vec<webpki::CertRevocationList<'static>>,
    /// Accepted certificate policy OIDs (dotted), e.g. [`CNS_POLICY`].
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CnsError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("the certificate cannot be read")]
    Malformed,
    #[error("the certificate has expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate was revoked")]
    Revoked,
    #[error("the revocation status of the certificate is unknown (no current CRL for its issuer)")]
    RevocationUnknown,
    #[error("the certificate was not issued by a trusted CNS authority")]
    UntrustedIssuer,
    #[error("the certificate is not for client authentication")]
    Usage,
    #[error("the certificate chain is not valid")]
    Chain,
    #[error("the certificate has none of the accepted CNS policies")]
    Policy,
    #[error("the certificate's common name is not `fiscal code/serial.hash`")]
    CommonName,
    #[error("the certificate's fiscal code is not valid")]
    FiscalCode,
}

/// Who a valid CNS certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnsIdentity {
    pub subject: FiscalCode,
    pub given_name: String,
    pub family_name: String,
}

impl CnsTrust {
    /// Builds the trust from DER CA certificates and DER CRLs.
    pub fn new(
        ca_der: &[CertificateDer<'_>],
        intermediates: Vec<CertificateDer<'static>>,
        crl_der: &[Vec<u8>],
        policies: Vec<String>,
    ) -> Result<CnsTrust, CnsError> {
        let anchors = ca_der
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|_| CnsError::Malformed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let crls = crl_der
            .iter()
            .map(|d| {
                OwnedCertRevocationList::from_der(d)
                    .map(webpki::CertRevocationList::from)
                    .map_err(|_| CnsError::Malformed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CnsTrust {
            anchors,
            intermediates,
            crls,
            policies,
        })
    }
}

/// The trust from `[cns]`'s files, rebuilt when one of them changes.
pub struct CnsStore {
    cfg: CnsConfig,
    /// The earliest nextUpdate of the loaded CRLs (Unix seconds; 0 when none says).
    next_update: std::sync::atomic::AtomicI64,
    trust: std::sync::RwLock<std::sync::Arc<CnsTrust>>,
    stamps: std::sync::Mutex<Vec<Option<std::time::SystemTime>>>,
}

impl CnsStore {
    fn stamps(cfg: &CnsConfig) -> Vec<Option<std::time::SystemTime>> {
        std::iter::once(&cfg.ca)
            .chain(cfg.crls.iter())
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn build(cfg: &CnsConfig) -> Result<(CnsTrust, i64), String> {
        use rustls::pki_types::pem::PemObject as _;
        let cas = crate::pem::load_certs(&cfg.ca).map_err(|e| format!("cns.ca: {e}"))?;
        let mut crls = Vec::new();
        for p in &cfg.crls {
            let der = match rustls::pki_types::CertificateRevocationListDer::from_pem_file(p) {
                Ok(d) => d.to_vec(),
                Err(_) => std::fs::read(p).map_err(|e| format!("cns.crls {}: {e}", p.display()))?,
            };
            crls.push(der);
        }
        let next_update = crls
            .iter()
            .filter_map(|der| {
                x509_parser::revocation_list::CertificateRevocationList::from_der(der)
                    .ok()
                    .and_then(|(_, crl)| crl.next_update())
                    .map(|t| t.timestamp())
            })
            .min()
            .unwrap_or(0);
        let trust = CnsTrust::new(&cas, Vec::new(), &crls, cfg.policies.clone())
            .map_err(|e| format!("cns: {e}"))?;
        Ok((trust, next_update))
    }

    /// The earliest nextUpdate of the loaded CRLs (Unix seconds; 0 when none says).
    pub fn crl_next_update(&self) -> i64 {
        self.next_update.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Loads the files (a bad one stops the start).
    pub fn load(cfg: &CnsConfig) -> Result<CnsStore, String> {
        let stamps = Self::stamps(cfg);
        let (trust, next_update) = Self::build(cfg)?;
        Ok(CnsStore {
            cfg: cfg.clone(),
            next_update: std::sync::atomic::AtomicI64::new(next_update),
            trust: std::sync::RwLock::new(std::sync::Arc::new(trust)),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    pub fn current(&self) -> std::sync::Arc<CnsTrust> {
        match self.trust.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn reload_interval(&self) -> std::time::Duration {
        self.cfg.reload_interval
    }

    /// Rebuilds the trust when a file changed. A file that does not load keeps the
    /// previous trust (and is retried at the next check). Whether a new trust is in place.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = Self::stamps(&self.cfg);
        let Ok(mut stamps) = self.stamps.lock() else {
            return Ok(false);
        };
        if *stamps == now {
            return Ok(false);
        }
        let (trust, next_update) = Self::build(&self.cfg)?;
        if let Ok(mut g) = self.trust.write() {
            *g = std::sync::Arc::new(trust);
        }
        self.next_update
            .store(next_update, std::sync::atomic::Ordering::Release);
        *stamps = now;
        Ok(true)
    }
}

fn map_webpki(e: webpki::Error) -> CnsError {
    use webpki::Error::*;
    match e {
        CertExpired { .. } => CnsError::Expired,
        CertNotValidYet { .. } => CnsError::NotYetValid,
        CertRevoked => CnsError::Revoked,
        UnknownRevocationStatus | CrlExpired { .. } => CnsError::RevocationUnknown,
        UnknownIssuer => CnsError::UntrustedIssuer,
        RequiredEkuNotFoundContext(_) => CnsError::Usage,
        _ => CnsError::Chain,
    }
}

/// Validates a client certificate chain (end entity first) at `now`.
pub fn validate(
    chain: &[CertificateDer<'_>],
    trust: &CnsTrust,
    now: UnixTime,
) -> Result<CnsIdentity, CnsError> {
    let (ee_der, presented) = chain.split_first().ok_or(CnsError::NoCertificate)?;
    let ee = EndEntityCert::try_from(ee_der).map_err(|_| CnsError::Malformed)?;
    let mut intermediates: Vec<CertificateDer<'_>> = presented.to_vec();
    intermediates.extend(trust.intermediates.iter().cloned());
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = trust.crls.iter().collect();
    // A CRL past its nextUpdate no longer says anything: the status is unknown, refused.
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
        b.with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build()
    });
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust.anchors,
        &intermediates,
        now,
        KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(map_webpki)?;

    let (_, cert) = X509Certificate::from_der(ee_der).map_err(|_| CnsError::Malformed)?;
    let has_policy = cert
        .extensions()
        .iter()
        .any(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::CertificatePolicies(p) => p.iter().any(|i| {
                let oid = i.policy_id.to_id_string();
                trust.policies.contains(&oid)
            }),
            _ => false,
        });
    if !has_policy {
        return Err(CnsError::Policy);
    }
    let attr = |oid: &str| {
        cert.subject()
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == oid)
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
    };
    let cn = attr("2.5.4.3").ok_or(CnsError::CommonName)?;
    let (code, rest) = cn.split_once('/').ok_or(CnsError::CommonName)?;
    if code.len() != 16 || rest.is_empty() {
        return Err(CnsError::CommonName);
    }
    let subject = FiscalCode::parse(code).map_err(|_| CnsError::FiscalCode)?;
    Ok(CnsIdentity {
        subject,
        given_name: attr("2.5.4.42").unwrap_or_default(),
        family_name: attr("2.5.4.4").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;

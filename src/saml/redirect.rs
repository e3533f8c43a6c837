//! The SAML HTTP-Redirect binding (SAML Bindings §3.4): the message is DEFLATEd, base64-
//! and URL-encoded into `SAMLRequest`/`SAMLResponse`; the signature covers the octets
//! `SAMLRequest=…&RelayState=…&SigAlg=…` **exactly as they appear in the query string**,
//! so verification works on the raw query (never on re-encoded values), and signing
//! produces the query the signature covers.
//!
//! Refused: a missing or unknown `SigAlg` (SHA-1 included), a missing signature, repeated
//! parameters, both or neither message parameter, an inflated message over the size cap
//! or with an implausible compression ratio, and anything the prefilter refuses.

use std::io::Read as _;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::SignatureVerificationAlgorithm;

use super::prefilter::{MAX_MESSAGE_BYTES, PrefilterError, check_xml};

/// What query values are encoded as: everything but unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest accepted inflate ratio (output / compressed input).
const MAX_INFLATE_RATIO: usize = 100;

/// Signature algorithms accepted in `SigAlg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    RsaSha256,
    RsaSha384,
    RsaSha512,
    EcdsaSha256,
}

impl SigAlg {
    pub fn uri(self) -> &'static str {
        match self {
            SigAlg::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            SigAlg::RsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            SigAlg::RsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            SigAlg::EcdsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        }
    }

    /// Only SHA-256 and stronger; `rsa-sha1` and unknown URIs are refused.
    pub fn from_uri(uri: &str) -> Option<SigAlg> {
        [
            SigAlg::RsaSha256,
            SigAlg::RsaSha384,
            SigAlg::RsaSha512,
            SigAlg::EcdsaSha256,
        ]
        .into_iter()
        .find(|a| a.uri() == uri)
    }

    fn verifiers(self) -> Vec<&'static dyn SignatureVerificationAlgorithm> {
        use webpki::aws_lc_rs as alg;
        match self {
            SigAlg::RsaSha256 => vec![alg::RSA_PKCS1_2048_8192_SHA256],
            SigAlg::RsaSha384 => vec![alg::RSA_PKCS1_2048_8192_SHA384],
            SigAlg::RsaSha512 => vec![alg::RSA_PKCS1_2048_8192_SHA512],
            SigAlg::EcdsaSha256 => vec![alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        }
    }
}

/// Which message a query carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
}

impl MessageKind {
    fn param(self) -> &'static str {
        match self {
            MessageKind::Request => "SAMLRequest",
            MessageKind::Response => "SAMLResponse",
        }
    }
}

/// A verified Redirect-binding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectMessage {
    pub kind: MessageKind,
    pub xml: String,
    pub relay_state: Option<String>,
    pub sig_alg: SigAlg,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("parameter `{0}` appears more than once")]
    Duplicate(&'static str),
    #[error("the query carries no SAMLRequest or SAMLResponse, or more than one")]
    NoMessage,
    #[error("the message is not signed (SigAlg or Signature missing)")]
    Unsigned,
    #[error("signature algorithm not accepted: {0}")]
    Algorithm(String),
    #[error("the signature is not valid base64")]
    SignatureEncoding,
    #[error("the signature does not verify with any certificate of the sender's metadata")]
    BadSignature,
    #[error("the message could not be inflated")]
    Inflate,
    #[error("the message inflates beyond the allowed size or ratio")]
    InflateBomb,
    #[error(transparent)]
    Prefilter(#[from] PrefilterError),
    #[error("signing failed")]
    Signing,
}

/// A sender-chosen value made safe for logs and error pages: printable ASCII, 80 chars.
pub(crate) fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(80)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// DEFLATE (raw) + base64: the value of `SAMLRequest` before URL-encoding.
pub fn deflate_base64(xml: &str) -> String {
    use std::io::Write as _;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(xml.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    STANDARD.encode(bytes)
}

/// Base64 + inflate with the size and ratio caps, then the prefilter.
pub fn inflate_base64(b64: &str) -> Result<String, RedirectError> {
    let compressed = STANDARD
        .decode(b64.trim())
        .map_err(|_| RedirectError::Inflate)?;
    if compressed.is_empty() {
        return Err(RedirectError::Inflate);
    }
    let limit = MAX_MESSAGE_BYTES.min(compressed.len().saturating_mul(MAX_INFLATE_RATIO).max(4096));
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(compressed.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| RedirectError::Inflate)?;
    if out.len() > limit {
        return Err(RedirectError::InflateBomb);
    }
    Ok(check_xml(out)?)
}

/// Builds the signed query string for `xml` (our AuthnRequest or LogoutRequest/Response)
/// with RSA-SHA256, signing the exact octets that are sent.
pub fn sign_query(
    kind: MessageKind,
    xml: &str,
    relay_state: Option<&str>,
    key: &RsaKeyPair,
) -> Result<String, RedirectError> {
    let mut query = format!(
        "{}={}",
        kind.param(),
        utf8_percent_encode(&deflate_base64(xml), QUERY_VALUE)
    );
    if let Some(rs) = relay_state {
        query.push_str("&RelayState=");
        query.push_str(&utf8_percent_encode(rs, QUERY_VALUE).to_string());
    }
    query.push_str("&SigAlg=");
    query.push_str(&utf8_percent_encode(SigAlg::RsaSha256.uri(), QUERY_VALUE).to_string());
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        query.as_bytes(),
        &mut sig,
    )
    .map_err(|_| RedirectError::Signing)?;
    query.push_str("&Signature=");
    query.push_str(&utf8_percent_encode(&STANDARD.encode(sig), QUERY_VALUE).to_string());
    Ok(query)
}

fn decode_value(raw: &str) -> Result<String, RedirectError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RedirectError::Inflate)
}

/// Verifies a Redirect-binding query (as received, without the leading `?`) against the
/// sender's metadata certificates and returns the message.
pub fn verify_query(
    raw_query: &str,
    certs: &[CertificateDer<'_>],
) -> Result<RedirectMessage, RedirectError> {
    let mut message: Option<(MessageKind, &str)> = None;
    let mut relay: Option<&str> = None;
    let mut sig_alg: Option<&str> = None;
    let mut signature: Option<&str> = None;
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        let slot: (&mut Option<&str>, &'static str) = match name {
            "SAMLRequest" | "SAMLResponse" => {
                if message.is_some() {
                    // Two messages (repeated, or a request and a response): ambiguous.
                    return Err(RedirectError::NoMessage);
                }
                let kind = if name == "SAMLRequest" {
                    MessageKind::Request
                } else {
                    MessageKind::Response
                };
                message = Some((kind, pair));
                continue;
            }
            "RelayState" => (&mut relay, "RelayState"),
            "SigAlg" => (&mut sig_alg, "SigAlg"),
            "Signature" => (&mut signature, "Signature"),
            _ => continue,
        };
        if slot.0.is_some() {
            return Err(RedirectError::Duplicate(slot.1));
        }
        *slot.0 = Some(pair);
    }
    let (kind, message_pair) = message.ok_or(RedirectError::NoMessage)?;
    let (Some(sig_alg_pair), Some(signature_pair)) = (sig_alg, signature) else {
        return Err(RedirectError::Unsigned);
    };
    let value = |pair: &str| pair.split_once('=').map_or("", |(_, v)| v).to_string();

    let alg_uri = decode_value(&value(sig_alg_pair))?;
    let alg =
        SigAlg::from_uri(&alg_uri).ok_or_else(|| RedirectError::Algorithm(sanitize(&alg_uri)))?;
    let sig = STANDARD
        .decode(decode_value(&value(signature_pair))?)
        .map_err(|_| RedirectError::SignatureEncoding)?;

    // The signed octets, in the order the binding defines, as received.
    let mut signed = String::with_capacity(raw_query.len());
    signed.push_str(message_pair);
    if let Some(r) = relay {
        signed.push('&');
        signed.push_str(r);
    }
    signed.push('&');
    signed.push_str(sig_alg_pair);

    let verified = certs.iter().any(|der| {
        webpki::EndEntityCert::try_from(der).is_ok_and(|cert| {
            alg.verifiers()
                .into_iter()
                .any(|v| cert.verify_signature(v, signed.as_bytes(), &sig).is_ok())
        })
    });
    if !verified {
        return Err(RedirectError::BadSignature);
    }
    let xml = inflate_base64(&decode_value(&value(message_pair))?)?;
    let relay_state = relay.map(|r| decode_value(&value(r))).transpose()?;
    Ok(RedirectMessage {
        kind,
        xml,
        relay_state,
        sig_alg: alg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Signer {
        key: RsaKeyPair,
        cert: CertificateDer<'static>,
    }

    fn signer() -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["idp.example".to_string()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        Signer {
            key: RsaKeyPair::from_pkcs8(&pair.serialize_der()).unwrap(),
            cert: cert.der().clone(),
        }
    }

    const XML: &str = "<samlp:AuthnRequest ID=\"_a1\" Version=\"2.0\"/>";

    #[test]
    fn signed_queries_verify_and_round_trip() {
        let s = signer();
        let q = sign_query(MessageKind::Request, XML, Some("opaque-1"), &s.key).unwrap();
        let m = verify_query(&q, std::slice::from_ref(&s.cert)).unwrap();
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(m.xml, XML);
        assert_eq!(m.relay_state.as_deref(), Some("opaque-1"));
        assert_eq!(m.sig_alg, SigAlg::RsaSha256);
        // Without RelayState, and with unrelated parameters in between.
        let q = sign_query(MessageKind::Response, XML, None, &s.key).unwrap();
        let q = format!("foo=bar&{q}&x=1");
        assert!(verify_query(&q, std::slice::from_ref(&s.cert)).is_ok());
    }

    #[test]
    fn tampering_and_foreign_keys_fail() {
        let s = signer();
        let other = signer();
        let q = sign_query(MessageKind::Request, XML, Some("rs"), &s.key).unwrap();
        assert_eq!(
            verify_query(&q, std::slice::from_ref(&other.cert)),
            Err(RedirectError::BadSignature)
        );
        let tampered = q.replace("RelayState=rs", "RelayState=rt");
        assert_eq!(
            verify_query(&tampered, std::slice::from_ref(&s.cert)),
            Err(RedirectError::BadSignature)
        );
        // Re-encoding the same values differently changes the signed octets: refused.
        let reencoded = q.replace("%3A", "%3a");
        assert_eq!(
            verify_query(&reencoded, std::slice::from_ref(&s.cert)),
            Err(RedirectError::BadSignature)
        );
    }

    #[test]
    fn unsigned_weak_duplicated_and_ambiguous_queries_are_refused() {
        let s = signer();
        let q = sign_query(MessageKind::Request, XML, None, &s.key).unwrap();
        let without_sigalg: String = q
            .split('&')
            .filter(|p| !p.starts_with("SigAlg="))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(
            verify_query(&without_sigalg, std::slice::from_ref(&s.cert)),
            Err(RedirectError::Unsigned)
        );
        let sha1 = q.replace("rsa-sha256", "rsa-sha1");
        let sha1 = sha1.replace("xmldsig-more%23rsa-sha1", "xmldsig%23rsa-sha1");
        assert!(matches!(
            verify_query(&sha1, std::slice::from_ref(&s.cert)),
            Err(RedirectError::Algorithm(_))
        ));
        assert_eq!(
            verify_query(&format!("{q}&SigAlg=x"), std::slice::from_ref(&s.cert)),
            Err(RedirectError::Duplicate("SigAlg"))
        );
        let both = format!("{q}&SAMLResponse=abc");
        assert_eq!(
            verify_query(&both, std::slice::from_ref(&s.cert)),
            Err(RedirectError::NoMessage)
        );
        assert_eq!(
            verify_query("", std::slice::from_ref(&s.cert)),
            Err(RedirectError::NoMessage)
        );
    }

    #[test]
    fn bombs_and_doctypes_are_refused_after_the_signature() {
        let s = signer();
        let bomb = format!("<r>{}</r>", "a".repeat(MAX_MESSAGE_BYTES * 2));
        let q = sign_query(MessageKind::Request, &bomb, None, &s.key).unwrap();
        assert_eq!(
            verify_query(&q, std::slice::from_ref(&s.cert)),
            Err(RedirectError::InflateBomb)
        );
        // High ratio even below the absolute cap.
        let dense = format!("<r>{}</r>", "a".repeat(200_000));
        assert_eq!(
            inflate_base64(&deflate_base64(&dense)),
            Err(RedirectError::InflateBomb)
        );
        let q = sign_query(
            MessageKind::Request,
            "<!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>",
            None,
            &s.key,
        )
        .unwrap();
        assert_eq!(
            verify_query(&q, std::slice::from_ref(&s.cert)),
            Err(RedirectError::Prefilter(PrefilterError::Doctype))
        );
        assert_eq!(inflate_base64("!!"), Err(RedirectError::Inflate));
    }
}

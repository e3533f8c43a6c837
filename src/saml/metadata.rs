//! IdP metadata: parsing an `EntityDescriptor` or an aggregate `EntitiesDescriptor` into
//! the identity providers the gateway trusts. Every IdP must carry at least one signing
//! certificate with a key at least as strong as the profile's minimum — samael would skip
//! signature checks for an IdP without one, so such metadata is refused here. A signed
//! aggregate (the AgID registry) is verified against a pinned certificate before any of
//! it is used.

use roxmltree::{Document, Node};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::prefilter;
use super::xmldsig;

pub const MD_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const MDUI_NS: &str = "urn:oasis:names:tc:SAML:metadata:ui";
const DSIG_NS: &str = xmldsig::DSIG_NS;
const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Largest metadata document accepted (the SPID registry aggregate is ~300 KiB).
pub const MAX_METADATA_BYTES: usize = 8 * 1024 * 1024;

/// One identity provider from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpDescriptor {
    pub entity_id: String,
    /// SingleSignOnService locations by binding.
    pub sso_redirect: Option<String>,
    pub sso_post: Option<String>,
    /// SingleLogoutService (HTTP-Redirect), if any.
    pub slo_redirect: Option<String>,
    /// Signing certificates (DER).
    pub signing_certs: Vec<Vec<u8>>,
    /// What the chooser shows.
    pub display_name: String,
    pub logo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata is not acceptable XML: {0}")]
    Prefilter(#[from] prefilter::PrefilterError),
    #[error("the metadata is not well formed XML")]
    Xml,
    #[error("the root element is neither EntityDescriptor nor EntitiesDescriptor")]
    Root,
    #[error("the metadata describes no identity provider")]
    NoIdp,
    #[error("identity provider {0}: no signing certificate")]
    NoSigningCert(String),
    #[error("identity provider {0}: a signing certificate cannot be read")]
    BadCert(String),
    #[error("identity provider {entity}: a {bits}-bit key, below the minimum of {min} bits")]
    WeakKey {
        entity: String,
        bits: usize,
        min: usize,
    },
    #[error("identity provider {0}: no SingleSignOnService for HTTP-Redirect or HTTP-POST")]
    NoSso(String),
    #[error("identity provider {0} appears twice")]
    Duplicate(String),
    #[error("the aggregate's signature: {0}")]
    Signature(#[from] xmldsig::SignatureError),
    #[error("the aggregate has expired (validUntil {0})")]
    Expired(String),
}

fn is(n: Node<'_, '_>, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
}

fn children<'a, 'i>(
    n: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| is(*c, ns, name))
}

/// Bits of the public key of a DER certificate (RSA modulus or EC field size).
pub fn key_bits(der: &[u8]) -> Option<usize> {
    key_info(der).map(|(bits, _)| bits)
}

/// (bits, is EC) of a DER certificate's public key.
fn key_info(der: &[u8]) -> Option<(usize, bool)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => Some((rsa.key_size(), false)),
        PublicKey::EC(ec) => Some((ec.key_size(), true)),
        _ => None,
    }
}

/// Parses metadata text that already passed the pre-filter. `min_rsa_bits` is the
/// profile's minimum key size (EC keys count double: P-256 stands for 3072-bit RSA).
/// `now` (seconds) checks `validUntil` on the root when present.
pub fn parse(
    xml: &str,
    min_rsa_bits: usize,
    now: i64,
) -> Result<Vec<IdpDescriptor>, MetadataError> {
    let doc = Document::parse(xml).map_err(|_| MetadataError::Xml)?;
    let root = doc.root_element();
    if !is(root, MD_NS, "EntityDescriptor") && !is(root, MD_NS, "EntitiesDescriptor") {
        return Err(MetadataError::Root);
    }
    if let Some(until) = root.attribute("validUntil")
        && super::time::parse_utc(until).is_none_or(|t| t <= now)
    {
        return Err(MetadataError::Expired(until.chars().take(40).collect()));
    }
    let mut out: Vec<IdpDescriptor> = Vec::new();
    for entity in root
        .descendants()
        .filter(|n| is(*n, MD_NS, "EntityDescriptor"))
    {
        let Some(idp) = children(entity, MD_NS, "IDPSSODescriptor").next() else {
            continue;
        };
        let entity_id = entity
            .attribute("entityID")
            .unwrap_or("")
            .trim()
            .to_string();
        if entity_id.is_empty() {
            return Err(MetadataError::NoIdp);
        }
        if out.iter().any(|d| d.entity_id == entity_id) {
            return Err(MetadataError::Duplicate(entity_id));
        }
        let mut signing_certs = Vec::new();
        for kd in children(idp, MD_NS, "KeyDescriptor") {
            if !matches!(kd.attribute("use"), None | Some("signing")) {
                continue;
            }
            for c in kd
                .descendants()
                .filter(|n| is(*n, DSIG_NS, "X509Certificate"))
            {
                let b64: String = c
                    .text()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                    .map_err(|_| MetadataError::BadCert(entity_id.clone()))?;
                let (bits, is_ec) =
                    key_info(&der).ok_or_else(|| MetadataError::BadCert(entity_id.clone()))?;
                let effective = if is_ec { bits * 12 } else { bits };
                if effective < min_rsa_bits {
                    return Err(MetadataError::WeakKey {
                        entity: entity_id.clone(),
                        bits,
                        min: min_rsa_bits,
                    });
                }
                signing_certs.push(der);
            }
        }
        if signing_certs.is_empty() {
            return Err(MetadataError::NoSigningCert(entity_id));
        }
        let location = |kind: &str, binding: &str| {
            children(idp, MD_NS, kind)
                .find(|s| s.attribute("Binding") == Some(binding))
                .and_then(|s| s.attribute("Location"))
                .map(str::to_string)
        };
        let sso_redirect = location("SingleSignOnService", REDIRECT);
        let sso_post = location("SingleSignOnService", POST);
        if sso_redirect.is_none() && sso_post.is_none() {
            return Err(MetadataError::NoSso(entity_id));
        }
        let ui_text = |ns: &str, name: &str| {
            let mut found = entity
                .descendants()
                .filter(|n| is(*n, ns, name))
                .collect::<Vec<_>>();
            found.sort_by_key(|n| {
                n.attribute(("http://www.w3.org/XML/1998/namespace", "lang")) != Some("it")
            });
            found
                .first()
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let display_name = ui_text(MDUI_NS, "DisplayName")
            .or_else(|| ui_text(MD_NS, "OrganizationDisplayName"))
            .or_else(|| ui_text(MD_NS, "OrganizationName"))
            .unwrap_or_else(|| entity_id.clone());
        let logo = ui_text(MDUI_NS, "Logo").filter(|l| l.starts_with("https://"));
        out.push(IdpDescriptor {
            entity_id,
            sso_redirect,
            sso_post,
            slo_redirect: location("SingleLogoutService", REDIRECT),
            signing_certs,
            display_name,
            logo,
        });
    }
    if out.is_empty() {
        return Err(MetadataError::NoIdp);
    }
    Ok(out)
}

/// The root's `validUntil` (seconds), read from the raw bytes (only used to order signed
/// copies and to expire them; the signature is checked by [`load`]).
pub fn valid_until(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let doc = Document::parse(text).ok()?;
    doc.root_element()
        .attribute("validUntil")
        .and_then(super::time::parse_utc)
}

/// Loads metadata bytes: the pre-filter, then (when `pinned` is given) the signature of
/// the root element by one of the pinned certificates, then [`parse`].
pub fn load(
    bytes: Vec<u8>,
    pinned: Option<&[Vec<u8>]>,
    min_rsa_bits: usize,
    now: i64,
) -> Result<Vec<IdpDescriptor>, MetadataError> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(prefilter::PrefilterError::TooLarge(MAX_METADATA_BYTES).into());
    }
    let text = prefilter::check_xml_with_limit(bytes, MAX_METADATA_BYTES)?;
    match pinned {
        Some(certs) => {
            let root_name = {
                let doc = Document::parse(&text).map_err(|_| MetadataError::Xml)?;
                let root = doc.root_element();
                if is(root, MD_NS, "EntitiesDescriptor") {
                    "EntitiesDescriptor"
                } else if is(root, MD_NS, "EntityDescriptor") {
                    "EntityDescriptor"
                } else {
                    return Err(MetadataError::Root);
                }
            };
            let verified = xmldsig::verify_signed_element(&text, MD_NS, root_name, certs)?;
            parse(&verified.xml, min_rsa_bits, now)
        }
        None => parse(&text, min_rsa_bits, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_b64(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    const IDP_CERT: &str = include_str!("../../tests/fixtures/saml/idp-test.crt.pem");
    const WEAK_CERT: &str = include_str!("../../tests/fixtures/saml/weak-test.crt.pem");

    fn entity(id: &str, cert: Option<&str>) -> String {
        let kd = cert.map_or(String::new(), |c| {
            format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                cert_b64(c)
            )
        });
        format!(
            "<md:EntityDescriptor xmlns:md=\"{MD_NS}\" xmlns:ds=\"{DSIG_NS}\" entityID=\"{id}\">\
<md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{kd}\
<md:SingleLogoutService Binding=\"{REDIRECT}\" Location=\"{id}slo\"/>\
<md:SingleSignOnService Binding=\"{REDIRECT}\" Location=\"{id}sso\"/>\
<md:SingleSignOnService Binding=\"{POST}\" Location=\"{id}sso-post\"/>\
</md:IDPSSODescriptor><md:Organization><md:OrganizationName xml:lang=\"en\">Test IdP</md:OrganizationName>\
<md:OrganizationDisplayName xml:lang=\"it\">IdP di prova</md:OrganizationDisplayName>\
<md:OrganizationURL xml:lang=\"it\">https://idp.example/</md:OrganizationURL></md:Organization></md:EntityDescriptor>"
        )
    }

    #[test]
    fn one_idp_with_its_endpoints_and_certificate() {
        let idps = parse(&entity("https://idp.example/", Some(IDP_CERT)), 2048, 0).unwrap();
        let [idp] = &idps[..] else { panic!() };
        assert_eq!(idp.entity_id, "https://idp.example/");
        assert_eq!(idp.sso_redirect.as_deref(), Some("https://idp.example/sso"));
        assert_eq!(
            idp.sso_post.as_deref(),
            Some("https://idp.example/sso-post")
        );
        assert_eq!(idp.slo_redirect.as_deref(), Some("https://idp.example/slo"));
        assert_eq!(idp.display_name, "IdP di prova");
        assert_eq!(idp.signing_certs.len(), 1);
        assert_eq!(key_bits(&idp.signing_certs[0]), Some(2048));
    }

    #[test]
    fn idps_without_signing_certificate_or_with_weak_keys_are_refused() {
        assert_eq!(
            parse(&entity("https://a/", None), 2048, 0),
            Err(MetadataError::NoSigningCert("https://a/".into()))
        );
        assert_eq!(
            parse(&entity("https://a/", Some(WEAK_CERT)), 2048, 0),
            Err(MetadataError::WeakKey {
                entity: "https://a/".into(),
                bits: 1024,
                min: 2048
            })
        );
        // An encryption-only key is not a signing key.
        let enc_only =
            entity("https://a/", Some(IDP_CERT)).replace("use=\"signing\"", "use=\"encryption\"");
        assert!(matches!(
            parse(&enc_only, 2048, 0),
            Err(MetadataError::NoSigningCert(_))
        ));
        let no_sso = entity("https://a/", Some(IDP_CERT))
            .replace("SingleSignOnService", "ArtifactResolutionService");
        assert!(matches!(
            parse(&no_sso, 2048, 0),
            Err(MetadataError::NoSso(_))
        ));
        assert_eq!(parse("<x/>", 2048, 0), Err(MetadataError::Root));
        assert_eq!(parse("<x", 2048, 0), Err(MetadataError::Xml));
    }

    #[test]
    fn aggregates_list_every_idp_and_expire() {
        let agg = format!(
            "<md:EntitiesDescriptor xmlns:md=\"{MD_NS}\" validUntil=\"2030-01-01T00:00:00Z\">{}{}</md:EntitiesDescriptor>",
            entity("https://a/", Some(IDP_CERT)),
            entity("https://b/", Some(IDP_CERT))
        );
        let idps = parse(&agg, 2048, 0).unwrap();
        assert_eq!(idps.len(), 2);
        let later = super::super::time::parse_utc("2030-01-02T00:00:00Z").unwrap();
        assert!(matches!(
            parse(&agg, 2048, later),
            Err(MetadataError::Expired(_))
        ));
        let dup = agg.replace("https://b/", "https://a/");
        assert!(matches!(
            parse(&dup, 2048, 0),
            Err(MetadataError::Duplicate(_))
        ));
    }
}

/// What our SP certificate lacks of the SPID profile (AgID Avviso 29): the policy OID
/// (1.3.76.16.4.2.1 public / 1.3.76.16.4.3.1 private), the subject `uri` = entityID and
/// the `organizationIdentifier`. Empty when it conforms. (Reported at start-up; SPID IdPs
/// may refuse a non-conforming SP.)
pub fn avviso29_gaps(cert_der: &[u8], entity_id: &str, public: bool) -> Vec<&'static str> {
    use x509_parser::extensions::ParsedExtension;
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return vec!["the certificate cannot be read"];
    };
    let mut gaps = Vec::new();
    let wanted = if public {
        "1.3.76.16.4.2.1"
    } else {
        "1.3.76.16.4.3.1"
    };
    let has_policy = cert
        .extensions()
        .iter()
        .any(|e| match e.parsed_extension() {
            ParsedExtension::CertificatePolicies(p) => {
                p.iter().any(|i| i.policy_id.to_id_string() == wanted)
            }
            _ => false,
        });
    if !has_policy {
        gaps.push(if public {
            "certificate policy 1.3.76.16.4.2.1 (public SP)"
        } else {
            "certificate policy 1.3.76.16.4.3.1 (private SP)"
        });
    }
    let attr = |oid: &str| {
        cert.subject()
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == oid)
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
    };
    if attr("2.5.4.83").as_deref() != Some(entity_id) {
        gaps.push("subject uri (2.5.4.83) equal to the entityID");
    }
    let org_id_ok = attr("2.5.4.97").is_some_and(|v| {
        if public {
            v.starts_with("PA:IT-")
        } else {
            v.starts_with("VATIT-") || v.starts_with("CF:IT-")
        }
    });
    if !org_id_ok {
        gaps.push("subject organizationIdentifier (PA:IT-<ipa>, VATIT-... or CF:IT-...)");
    }
    gaps
}

#[cfg(test)]
mod avviso29_tests {
    use super::*;
    use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair};

    #[test]
    fn a_conforming_sp_certificate_has_no_gap_and_a_plain_one_has_three() {
        let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let plain = CertificateParams::new(vec![])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            avviso29_gaps(plain.der(), "https://sp.example.it/", true).len(),
            3
        );

        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 83]),
            "https://sp.example.it/",
        );
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 97]), "PA:IT-c_h501");
        // certificatePolicies: SEQUENCE { SEQUENCE { OID 1.3.76.16.4.2.1 } }
        let policies = vec![
            0x30, 0x0a, 0x30, 0x08, 0x06, 0x06, 0x2b, 0x4c, 0x10, 0x04, 0x02, 0x01,
        ];
        p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 32], policies)];
        let good = p.self_signed(&key).unwrap();
        assert_eq!(
            avviso29_gaps(good.der(), "https://sp.example.it/", true),
            Vec::<&str>::new()
        );
        // The same certificate for a private SP, or another entityID: gaps named.
        let private = avviso29_gaps(good.der(), "https://sp.example.it/", false);
        assert_eq!(private.len(), 2, "{private:?}");
        assert_eq!(avviso29_gaps(good.der(), "https://other/", true).len(), 1);
    }
}

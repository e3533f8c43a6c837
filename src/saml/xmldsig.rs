//! XML signatures: the only place that calls samael/xmlsec. Two directions:
//!
//! - [`verify_signed_element`]: the element a message must carry signed (the Assertion of
//!   a Response, the root of a metadata aggregate or of a POST LogoutRequest) is checked
//!   for shape first (over roxmltree: one element with that name, its own enveloped
//!   signature referencing its own ID, only enveloped + exclusive-c14n transforms, every
//!   signature in the document referencing its parent, no `ds:Object`, unique IDs); then
//!   xmlsec verifies every signature of the document against the trusted certificates
//!   only (a certificate embedded in `KeyInfo` is never used as a key) and reduces the
//!   document to what was signed. The caller reads data only from the reduced text.
//! - [`sign_enveloped`]: fills a signature template ([`signature_template`], SHA-256
//!   digests, RSA-SHA256) for our own metadata, POST-binding requests, and the
//!   development IdP.
//!
//! A panic inside the C bindings' Rust wrapper becomes an error, never a crash.

use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roxmltree::{Document, Node};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, CryptoProvider, ReduceMode, XmlSec,
};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// Bounds on what is handed to xmlsec (SPID responses have ~60 elements, a registry
/// aggregate some thousands).
const MAX_ELEMENTS: usize = 50_000;
const MAX_DEPTH: usize = 64;

/// SHA-256 and up; RSA and ECDSA (SPID/CIE use RSA).
const ALLOWED: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Why a signature is refused. Never carries XML or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the XML is not well formed")]
    Xml,
    #[error("{0}: not signed")]
    Unsigned(&'static str),
    #[error("{0}: expected exactly one, found {1}")]
    Count(&'static str, usize),
    #[error("the ID `{0}` appears more than once")]
    DuplicateId(String),
    #[error("{0}: the signature does not reference its own element")]
    WrongReference(&'static str),
    #[error("a signature does not sign the element that holds it")]
    DetachedSignature,
    #[error("a signature uses a transform other than enveloped-signature and exclusive c14n")]
    Transform,
    #[error("the message carries a ds:Object")]
    Object,
    #[error("an ID attribute in a namespace, or xml:id: the parsers would disagree on IDs")]
    AmbiguousId,
    #[error("the message is nested too deeply or has too many elements")]
    TooComplex,
    #[error("the signature is not valid for any trusted certificate (or uses a weak algorithm)")]
    Invalid,
    #[error("no trusted certificate is configured")]
    NoTrustedCertificate,
    #[error("the signature library failed")]
    Library,
}

/// The signed element, as xmlsec reduced it (only signed content), with its ID.
#[derive(Debug, Clone)]
pub struct Verified {
    /// An XML document whose root is the signed element, or an ancestor that was itself
    /// signed (a signed Response around a signed Assertion).
    pub xml: String,
    pub id: String,
}

fn is(n: Node<'_, '_>, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
}

fn element_children<'a, 'i>(
    n: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| is(*c, ns, name))
}

/// Checks one `ds:Signature`: one Reference to `#id` of `parent`, allowed transforms.
fn check_signature_shape(sig: Node<'_, '_>, parent_id: Option<&str>) -> Result<(), SignatureError> {
    let signed_info = element_children(sig, DSIG_NS, "SignedInfo").collect::<Vec<_>>();
    let [signed_info] = signed_info[..] else {
        return Err(SignatureError::DetachedSignature);
    };
    let c14n_ok = element_children(signed_info, DSIG_NS, "CanonicalizationMethod")
        .all(|c| c.attribute("Algorithm") == Some(EXC_C14N));
    if !c14n_ok {
        return Err(SignatureError::Transform);
    }
    let refs = element_children(signed_info, DSIG_NS, "Reference").collect::<Vec<_>>();
    let [reference] = refs[..] else {
        return Err(SignatureError::DetachedSignature);
    };
    let uri = reference.attribute("URI").unwrap_or("");
    match (uri.strip_prefix('#'), parent_id) {
        (Some(r), Some(p)) if r == p && !r.is_empty() => {}
        _ => return Err(SignatureError::DetachedSignature),
    }
    for transforms in element_children(reference, DSIG_NS, "Transforms") {
        for t in transforms.children().filter(|c| c.is_element()) {
            let alg = t.attribute("Algorithm");
            if !is(t, DSIG_NS, "Transform") || !matches!(alg, Some(ENVELOPED | EXC_C14N)) {
                return Err(SignatureError::Transform);
            }
        }
    }
    Ok(())
}

/// Shape checks over the whole document; returns the ID of the one `ns:name` element,
/// which must carry its own signature.
fn check_shape(doc: &Document<'_>, ns: &str, name: &'static str) -> Result<String, SignatureError> {
    let mut seen = std::collections::HashSet::new();
    let mut elements = 0usize;
    for n in doc.descendants().filter(|n| n.is_element()) {
        elements += 1;
        if elements > MAX_ELEMENTS || n.ancestors().count() > MAX_DEPTH {
            return Err(SignatureError::TooComplex);
        }
        // libxml's ID lookup ignores attribute namespaces and honours xml:id; roxmltree
        // and the rules here look at the plain `ID` only. Refuse what could differ.
        if n.attributes().any(|a| {
            (a.name() == "ID" && a.namespace().is_some())
                || (a.name() == "id" && a.namespace() == Some(XML_NS))
        }) {
            return Err(SignatureError::AmbiguousId);
        }
        if let Some(id) = n.attribute("ID")
            && !seen.insert(id)
        {
            return Err(SignatureError::DuplicateId(super::redirect::sanitize(id)));
        }
        if is(n, DSIG_NS, "Object") {
            return Err(SignatureError::Object);
        }
        if is(n, DSIG_NS, "Signature") {
            let parent_id = n.parent_element().and_then(|p| p.attribute("ID"));
            check_signature_shape(n, parent_id)?;
        }
    }
    let targets = doc
        .descendants()
        .filter(|n| is(*n, ns, name))
        .collect::<Vec<_>>();
    let [target] = targets[..] else {
        return Err(SignatureError::Count(name, targets.len()));
    };
    let id = target
        .attribute("ID")
        .filter(|id| !id.is_empty())
        .ok_or(SignatureError::Unsigned(name))?;
    let own = element_children(target, DSIG_NS, "Signature").count();
    match own {
        0 => Err(SignatureError::Unsigned(name)),
        1 => Ok(id.to_string()),
        _ => Err(SignatureError::WrongReference(name)),
    }
}

/// Verifies that the one `ns:name` element of `xml` is signed by one of `trusted` (DER
/// certificates) and that every other signature in the document is too. Returns the
/// reduced, signed-only document.
pub fn verify_signed_element(
    xml: &str,
    ns: &str,
    name: &'static str,
    trusted: &[Vec<u8>],
) -> Result<Verified, SignatureError> {
    if trusted.is_empty() {
        return Err(SignatureError::NoTrustedCertificate);
    }
    let (id, standalone, top) = {
        let doc = Document::parse(xml).map_err(|_| SignatureError::Xml)?;
        let id = check_shape(&doc, ns, name)?;
        let root = doc.root_element();
        let target = doc
            .descendants()
            .find(|n| is(*n, ns, name))
            .ok_or(SignatureError::Count(name, 0))?;
        let root_signed = element_children(root, DSIG_NS, "Signature")
            .next()
            .is_some();
        let standalone = if target == root || root_signed {
            None
        } else {
            Some(standalone_element(xml, target)?)
        };
        // What the reduced document's root must be: the document's root (itself the
        // element, or a signed ancestor), or the element verified on its own.
        let top = if standalone.is_some() { target } else { root };
        let top = (
            top.tag_name().namespace().map(str::to_string),
            top.tag_name().name().to_string(),
            top.attribute("ID").map(str::to_string),
        );
        (id, standalone, top)
    };
    let certs: Vec<CertificateDer> = trusted.iter().cloned().map(CertificateDer::from).collect();
    let reduce = |text: &str| {
        catch_unwind(AssertUnwindSafe(|| {
            XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
                text,
                &certs,
                ReduceMode::ValidateAndMarkNoAncestors,
                Some(ALLOWED),
            )
        }))
        .map_err(|_| SignatureError::Library)?
        .map_err(|_| SignatureError::Invalid)
    };
    // xmlsec reduces to the document's root, never to an element inside it (reducing to a
    // non-root element leaks the old root in samael 0.0.22: found by fuzzing under
    // LeakSanitizer). So an element under an unsigned root is verified as its own document
    // (its exact bytes, with the namespaces it inherits). Under a signed root (a signed
    // Response around the signed Assertion), one pass over the whole document verifies
    // every signature in place, the root's and the element's, and the reduced document is
    // the root's: all of it signed (a second pass over the element alone would check the
    // same signature again, a third of a login's CPU).
    let reduced = match &standalone {
        None => reduce(xml)?,
        Some(text) => reduce(text)?,
    };
    // The reduced document is rooted where it was verified, and the signed element
    // survived the reduction, once, under its own ID.
    let doc = Document::parse(&reduced).map_err(|_| SignatureError::Invalid)?;
    let root = doc.root_element();
    if (
        root.tag_name().namespace(),
        root.tag_name().name(),
        root.attribute("ID"),
    ) != (top.0.as_deref(), top.1.as_str(), top.2.as_deref())
    {
        return Err(SignatureError::Invalid);
    }
    let kept = doc
        .descendants()
        .filter(|n| is(*n, ns, name) && n.attribute("ID") == Some(id.as_str()))
        .count();
    if kept != 1 {
        return Err(SignatureError::Invalid);
    }
    Ok(Verified { xml: reduced, id })
}

/// The text of `target` as a document of its own: its exact bytes, with the namespace
/// declarations it inherits added to its start tag (exclusive c14n renders the same
/// bytes for it in either place).
fn standalone_element(xml: &str, target: Node<'_, '_>) -> Result<String, SignatureError> {
    let range = target.range();
    let text = xml.get(range.clone()).ok_or(SignatureError::Xml)?;
    // The start tag's end: the first `>` outside a quoted attribute value.
    let mut quote = None;
    let mut end = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.ok_or(SignatureError::Xml)?;
    let start_tag = &text[..end];
    let name_end = start_tag
        .find(|c: char| c.is_ascii_whitespace() || c == '/')
        .unwrap_or(start_tag.len());
    // Declarations already on the start tag (attribute names outside quotes).
    let mut declared = std::collections::HashSet::new();
    let mut rest = &start_tag[name_end..];
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        let attr = rest[..eq].trim();
        declared.insert(attr.to_string());
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(q) else {
            break;
        };
        rest = &after[close + 2..];
    }
    let mut extra = String::new();
    for ns in target.namespaces() {
        let attr = match ns.name() {
            Some("xml") => continue,
            Some(p) => format!("xmlns:{p}"),
            None => "xmlns".to_string(),
        };
        if !declared.contains(&attr) {
            extra.push_str(&format!(
                " {attr}=\"{}\"",
                crate::pages::escape_html(ns.uri())
            ));
        }
    }
    Ok(format!("{}{extra}{}", &text[..name_end], &text[name_end..]))
}

/// An enveloped signature template for the element with ID `id`: exclusive c14n,
/// RSA-SHA256, SHA-256 digest, the signer's certificate in `KeyInfo`. Insert it as the
/// signed element's child (after `Issuer` in SAML messages) and call [`sign_enveloped`].
pub fn signature_template(id: &str, cert_der: &[u8]) -> String {
    format!(
        "<ds:Signature xmlns:ds=\"{DSIG_NS}\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"{ENVELOPED}\"/><ds:Transform Algorithm=\"{EXC_C14N}\"/>\
</ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\
<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>\
<ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}\
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        id = crate::pages::escape_html(id),
        cert = STANDARD.encode(cert_der),
    )
}

/// Signs the first signature template of `xml` (document order) with a private key
/// (PKCS#8 or PKCS#1 DER).
pub fn sign_enveloped(xml: &str, key_der: &[u8]) -> Result<String, SignatureError> {
    let signed = catch_unwind(AssertUnwindSafe(|| XmlSec::sign_xml(xml, key_der)))
        .map_err(|_| SignatureError::Library)?
        .map_err(|_| SignatureError::Library)?;
    Ok(strip_declaration(&signed).to_string())
}

/// The text without a leading `<?xml ...?>` declaration (libxml adds one when it
/// serializes), so a signed element can be embedded in another document.
pub fn strip_declaration(xml: &str) -> &str {
    let t = xml.trim_start();
    match t
        .strip_prefix("<?xml")
        .and_then(|r| r.find("?>").map(|i| &r[i + 2..]))
    {
        Some(rest) => rest.trim_start(),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::response::ASSERTION_NS;

    pub(crate) fn rsa_signer(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    fn signed_assertion(id: &str, cert: &[u8], key: &[u8], body: &str) -> String {
        let unsigned = format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"{id}\"><saml:Issuer>i</saml:Issuer>{}{body}</saml:Assertion>",
            signature_template(id, cert)
        );
        sign_enveloped(&unsigned, key).unwrap()
    }

    fn response(inner: &str) -> String {
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\">{inner}</samlp:Response>"
        )
    }

    #[test]
    fn signs_and_verifies_and_refuses_tampering_and_foreign_keys() {
        let (cert, key) = rsa_signer("idp");
        let (other_cert, other_key) = rsa_signer("other");
        let a = signed_assertion("_a1", &cert, &key, "<saml:Subject>mario</saml:Subject>");
        let doc = response(&a);
        let v = verify_signed_element(&doc, ASSERTION_NS, "Assertion", std::slice::from_ref(&cert))
            .unwrap();
        assert_eq!(v.id, "_a1");
        assert!(v.xml.contains("mario"));
        // Another certificate, or none: refused.
        assert_eq!(
            verify_signed_element(
                &doc,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&other_cert)
            )
            .unwrap_err(),
            SignatureError::Invalid
        );
        assert_eq!(
            verify_signed_element(&doc, ASSERTION_NS, "Assertion", &[]).unwrap_err(),
            SignatureError::NoTrustedCertificate
        );
        // Changed signed content: refused.
        let tampered = doc.replace("mario", "luigi");
        assert_eq!(
            verify_signed_element(
                &tampered,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&cert)
            )
            .unwrap_err(),
            SignatureError::Invalid
        );
        // Signed by another key that embeds the trusted certificate: refused.
        let forged = signed_assertion("_a1", &cert, &other_key, "<saml:Subject>x</saml:Subject>");
        let forged = response(&forged);
        assert_eq!(
            verify_signed_element(&forged, ASSERTION_NS, "Assertion", &[cert]).unwrap_err(),
            SignatureError::Invalid
        );
    }

    /// A Response signed by `key` (its signature first, as an IdP places it after the
    /// Issuer) around `inner`.
    fn signed_response(inner: &str, cert: &[u8], key: &[u8]) -> String {
        let unsigned = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\">{}{inner}</samlp:Response>",
            signature_template("_r", cert)
        );
        sign_enveloped(&unsigned, key).unwrap()
    }

    #[test]
    fn a_signed_response_and_its_assertion_are_verified_together() {
        let (cert, key) = rsa_signer("idp");
        let (_, other_key) = rsa_signer("other");
        let trusted = std::slice::from_ref(&cert);
        let verify = |doc: &str| verify_signed_element(doc, ASSERTION_NS, "Assertion", trusted);
        let a = signed_assertion("_a1", &cert, &key, "<saml:Subject>mario</saml:Subject>");

        // Both signed by the trusted key: the reduced document is the Response, with the
        // Assertion in it once.
        let v = verify(&signed_response(&a, &cert, &key)).unwrap();
        assert_eq!(v.id, "_a1");
        assert!(v.xml.contains("mario") && v.xml.contains("_r"), "{}", v.xml);

        // The Response signed by another key (naming the trusted certificate): refused,
        // though the Assertion alone would verify.
        assert_eq!(
            verify(&signed_response(&a, &cert, &other_key)).unwrap_err(),
            SignatureError::Invalid
        );
        // The Assertion signed by another key, inside a Response the trusted key signed:
        // refused (every signature must verify, not only the root's).
        let forged = signed_assertion(
            "_a1",
            &cert,
            &other_key,
            "<saml:Subject>mario</saml:Subject>",
        );
        assert_eq!(
            verify(&signed_response(&forged, &cert, &key)).unwrap_err(),
            SignatureError::Invalid
        );
        // Content changed after both signatures: refused.
        let doc = signed_response(&a, &cert, &key).replace("mario", "luigi");
        assert_eq!(verify(&doc).unwrap_err(), SignatureError::Invalid);
        // Only the Assertion's signature value changed (the Response's signature covers
        // it too): refused.
        let doc = signed_response(&a, &cert, &key);
        let second = doc.rfind("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
        let flipped = if &doc[second..second + 1] == "A" {
            "B"
        } else {
            "A"
        };
        let doc = format!("{}{flipped}{}", &doc[..second], &doc[second + 1..]);
        assert_eq!(verify(&doc).unwrap_err(), SignatureError::Invalid);
        // Content in the Response signature's own KeyInfo is signed by nothing: it is left
        // out of what is returned, as is that signature.
        let doc = signed_response(&a, &cert, &key);
        let first_value = {
            let at = doc.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
            doc[at..at + doc[at..].find('<').unwrap()].to_string()
        };
        let evil = "<saml:Attribute xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" Name=\"fiscalNumber\"><saml:AttributeValue>TINIT-EVIL</saml:AttributeValue></saml:Attribute>";
        let at = doc.find("<ds:KeyInfo>").unwrap() + "<ds:KeyInfo>".len();
        let doc = format!("{}{evil}{}", &doc[..at], &doc[at..]);
        let v = verify(&doc).unwrap();
        assert!(!v.xml.contains("TINIT-EVIL"), "{}", v.xml);
        assert!(
            !v.xml.contains(&first_value),
            "the Response's signature kept"
        );
        assert!(v.xml.contains("mario"));
        // A signed Response does not stand in for the Assertion's own signature.
        let plain = format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"_a2\"><saml:Subject>mario</saml:Subject></saml:Assertion>"
        );
        assert_eq!(
            verify(&signed_response(&plain, &cert, &key)).unwrap_err(),
            SignatureError::Unsigned("Assertion")
        );
    }

    #[test]
    fn unsigned_and_misplaced_signatures_are_refused() {
        let (cert, _key) = rsa_signer("idp");
        let plain = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"_a\"/>"
        ));
        assert_eq!(
            verify_signed_element(
                &plain,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&cert)
            )
            .unwrap_err(),
            SignatureError::Unsigned("Assertion")
        );
        let dup = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"_r\"/>"
        ));
        assert!(matches!(
            verify_signed_element(&dup, ASSERTION_NS, "Assertion", std::slice::from_ref(&cert)),
            Err(SignatureError::DuplicateId(_))
        ));
        let namespaced = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" xmlns:x=\"urn:x\" x:ID=\"_z\" ID=\"_a\"/>"
        ));
        assert_eq!(
            verify_signed_element(
                &namespaced,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&cert)
            )
            .unwrap_err(),
            SignatureError::AmbiguousId
        );
        let xml_id = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" xml:id=\"_z\" ID=\"_a\"/>"
        ));
        assert_eq!(
            verify_signed_element(
                &xml_id,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&cert)
            )
            .unwrap_err(),
            SignatureError::AmbiguousId
        );
        let deep = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"_a\">{}{}</saml:Assertion>",
            "<d>".repeat(100),
            "</d>".repeat(100)
        ));
        assert_eq!(
            verify_signed_element(
                &deep,
                ASSERTION_NS,
                "Assertion",
                std::slice::from_ref(&cert)
            )
            .unwrap_err(),
            SignatureError::TooComplex
        );
        let wrong_ref = response(&format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"_a\">{}</saml:Assertion>",
            signature_template("_r", &cert)
        ));
        assert_eq!(
            verify_signed_element(&wrong_ref, ASSERTION_NS, "Assertion", &[cert]).unwrap_err(),
            SignatureError::DetachedSignature
        );
    }
}

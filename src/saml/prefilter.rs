//! The first gate for a SAML message, before any XML parser: bounded size, UTF-8, and no
//! `<!DOCTYPE` or `<!ENTITY` anywhere (libxml would otherwise honour internal subsets:
//! entity expansion, external entities). Pure; fuzzable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Largest decoded SAML message accepted (SPID responses are a few KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefilterError {
    #[error("the SAML message is empty")]
    Empty,
    #[error("the SAML message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the SAML message is not valid base64")]
    Base64,
    #[error("the SAML message is not UTF-8")]
    NotUtf8,
    #[error("the SAML message carries a document type declaration")]
    Doctype,
    #[error("the SAML message carries an entity declaration")]
    Entity,
    #[error("the SAML message carries a processing instruction")]
    ProcessingInstruction,
    #[error("the SAML message declares an encoding other than UTF-8")]
    Encoding,
    #[error("the SAML message carries a comment")]
    Comment,
}

/// Decodes the base64 `SAMLResponse` of the HTTP-POST binding (line breaks tolerated)
/// and checks the XML text. The size is checked before decoding.
pub fn decode_post(b64: &str) -> Result<String, PrefilterError> {
    let mut compact = Vec::with_capacity(b64.len());
    compact.extend(b64.bytes().filter(|b| !b.is_ascii_whitespace()));
    if compact.is_empty() {
        return Err(PrefilterError::Empty);
    }
    if compact.len() / 4 * 3 > MAX_MESSAGE_BYTES + 3 {
        return Err(PrefilterError::TooLarge(MAX_MESSAGE_BYTES));
    }
    let bytes = STANDARD
        .decode(&compact)
        .map_err(|_| PrefilterError::Base64)?;
    check_xml(bytes)
}

/// Checks decoded XML bytes of a protocol message and returns them as text. Messages may
/// not carry comments: IdPs do not send them, canonicalization ignores them (so they can
/// split a signed value), and they are the cheapest way to make signature reduction slow.
pub fn check_xml(bytes: Vec<u8>) -> Result<String, PrefilterError> {
    let text = check(bytes, MAX_MESSAGE_BYTES)?;
    if text.contains("<!--") {
        return Err(PrefilterError::Comment);
    }
    Ok(text)
}

/// The checks for metadata documents: a larger limit, comments allowed (metadata is
/// either a local file or an aggregate signed by a pinned certificate).
pub fn check_xml_with_limit(bytes: Vec<u8>, limit: usize) -> Result<String, PrefilterError> {
    check(bytes, limit)
}

/// The `encoding` of an XML declaration, if it names one.
fn declared_encoding(decl: &str) -> Result<Option<&str>, PrefilterError> {
    let Some(i) = decl.find("encoding") else {
        return Ok(None);
    };
    let rest = decl[i + "encoding".len()..].trim_start();
    let rest = rest
        .strip_prefix('=')
        .ok_or(PrefilterError::Encoding)?
        .trim_start();
    let quote = rest.chars().next().ok_or(PrefilterError::Encoding)?;
    if quote != '"' && quote != '\'' {
        return Err(PrefilterError::Encoding);
    }
    let value = &rest[1..];
    let end = value.find(quote).ok_or(PrefilterError::Encoding)?;
    Ok(Some(&value[..end]))
}

fn check(bytes: Vec<u8>, limit: usize) -> Result<String, PrefilterError> {
    if bytes.is_empty() {
        return Err(PrefilterError::Empty);
    }
    if bytes.len() > limit {
        return Err(PrefilterError::TooLarge(limit));
    }
    let text = String::from_utf8(bytes).map_err(|_| PrefilterError::NotUtf8)?;
    // `<!` starts a DOCTYPE, an ENTITY, or a comment / CDATA section. Comments and CDATA
    // are legal XML; everything else is refused, whatever the case or whitespace.
    let lower = text.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<!") {
        let after = rest[i + 2..].trim_start();
        if after.starts_with("doctype") {
            return Err(PrefilterError::Doctype);
        }
        if after.starts_with("entity")
            || after.starts_with("element")
            || after.starts_with("attlist")
        {
            return Err(PrefilterError::Entity);
        }
        rest = &rest[i + 2..];
    }
    // Only the XML declaration may be a processing instruction (and only at the start).
    let body = text.trim_start_matches('\u{feff}');
    let decl_end = if body.starts_with("<?xml") {
        let end = body
            .find("?>")
            .ok_or(PrefilterError::ProcessingInstruction)?
            + 2;
        // libxml honours the declared encoding (UTF-7 would hide markup from every check
        // made on the UTF-8 text): only UTF-8 is accepted.
        if let Some(enc) = declared_encoding(&body[..end])?
            && !enc.eq_ignore_ascii_case("utf-8")
        {
            return Err(PrefilterError::Encoding);
        }
        end
    } else {
        0
    };
    if body[decl_end..].contains("<?") {
        return Err(PrefilterError::ProcessingInstruction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn a_plain_response_passes() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><samlp:Response ID=\"_1\"><x><![CDATA[a]]></x></samlp:Response>";
        assert_eq!(decode_post(&b64(xml)).unwrap(), xml);
        // Line-wrapped base64 as some IdPs send it.
        let wrapped: String = b64(xml)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap().to_string() + "\r\n")
            .collect();
        assert_eq!(decode_post(&wrapped).unwrap(), xml);
    }

    #[test]
    fn dtds_entities_and_pis_are_refused() {
        let cases = [
            (
                "<!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>",
                PrefilterError::Doctype,
            ),
            (
                "<?xml version=\"1.0\"?>\n<!doctype r SYSTEM \"http://x\"><r/>",
                PrefilterError::Doctype,
            ),
            ("<r><!   DocType r></r>", PrefilterError::Doctype),
            ("<!ENTITY lol \"lol\"><r/>", PrefilterError::Entity),
            (
                "<r/><?xml-stylesheet href=\"x\"?>",
                PrefilterError::ProcessingInstruction,
            ),
        ];
        for (xml, err) in cases {
            assert_eq!(decode_post(&b64(xml)), Err(err), "{xml}");
        }
    }

    #[test]
    fn other_encodings_and_comments_in_messages_are_refused() {
        for xml in [
            "<?xml version=\"1.0\" encoding=\"UTF-7\"?><r>+ADw-x/+AD4-</r>",
            "<?xml version='1.0' encoding = 'utf-16'?><r/>",
            "<?xml version=\"1.0\" encoding=ISO-8859-1?><r/>",
        ] {
            assert_eq!(
                decode_post(&b64(xml)),
                Err(PrefilterError::Encoding),
                "{xml}"
            );
        }
        assert!(decode_post(&b64("<?xml version='1.0' encoding='utf-8'?><r/>")).is_ok());
        assert_eq!(
            decode_post(&b64("<?xml version='1.0'<r/>")),
            Err(PrefilterError::ProcessingInstruction)
        );
        assert_eq!(
            decode_post(&b64("<r>TINIT-AAA<!---->BBB</r>")),
            Err(PrefilterError::Comment)
        );
        // Metadata may carry comments, never another encoding.
        assert!(check_xml_with_limit(b"<r><!-- ok --></r>".to_vec(), 100).is_ok());
        assert_eq!(
            check_xml_with_limit(b"<?xml version='1.0' encoding='UTF-7'?><r/>".to_vec(), 100),
            Err(PrefilterError::Encoding)
        );
    }

    #[test]
    fn size_encoding_and_emptiness_are_checked() {
        assert_eq!(decode_post(""), Err(PrefilterError::Empty));
        assert_eq!(decode_post("%%%"), Err(PrefilterError::Base64));
        // Only ASCII whitespace is dropped: a non-ASCII space or letter is not base64.
        let xml = b64("<r/>");
        for odd in ["\u{a0}", "\u{2003}", "é"] {
            let text = format!("{}{odd}{}", &xml[..4], &xml[4..]);
            assert_eq!(decode_post(&text), Err(PrefilterError::Base64), "{odd:?}");
        }
        assert_eq!(decode_post(" \t\r\n"), Err(PrefilterError::Empty));
        assert_eq!(
            decode_post(&STANDARD.encode([0xff, 0xfe, 0x3c])),
            Err(PrefilterError::NotUtf8)
        );
        let big = format!("<r>{}</r>", "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(
            decode_post(&b64(&big)),
            Err(PrefilterError::TooLarge(MAX_MESSAGE_BYTES))
        );
    }
}

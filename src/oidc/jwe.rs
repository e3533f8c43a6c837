//! JWE decryption for the SPID/CIE UserInfo response (RFC 7516 compact serialization):
//! key encryption `RSA-OAEP` or `RSA-OAEP-256`, content encryption `A128CBC-HS256` or
//! `A256CBC-HS512` (RFC 7518 §4.3 and §5.2), on aws-lc-rs — constant-time RSA-OAEP, the tag
//! checked in constant time before anything is decrypted. Everything else is refused:
//! `RSA1_5` (padding oracles), `dir` and key wrapping, compression (`zip`), critical
//! extensions (`crit`). The plaintext of a UserInfo response is a signed JWT (`cty: JWT`),
//! verified afterwards with the provider's keys.

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Largest JWE accepted.
const MAX_JWE_BYTES: usize = 256 * 1024;

/// One of our decryption keys (an RSA key published with `use: enc`).
pub struct DecryptionKey {
    pub kid: Option<String>,
    key: OaepPrivateDecryptingKey,
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecryptionKey {{ kid: {:?} }}", self.kid)
    }
}

impl DecryptionKey {
    /// An RSA private key in PKCS#8 DER.
    pub fn from_pkcs8(kid: Option<String>, der: &[u8]) -> Result<DecryptionKey, JweError> {
        let key = PrivateDecryptingKey::from_pkcs8(der)
            .ok()
            .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
            .ok_or(JweError::BadKey)?;
        Ok(DecryptionKey { kid, key })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    #[error("not a compact JWE: {0}")]
    Malformed(&'static str),
    #[error("the key encryption `{0}` is not accepted (RSA-OAEP, RSA-OAEP-256 only)")]
    Algorithm(String),
    #[error("the content encryption `{0}` is not accepted (A128CBC-HS256, A256CBC-HS512 only)")]
    Encryption(String),
    #[error("the JWE uses `{0}`, which is not supported")]
    Unsupported(&'static str),
    #[error("no decryption key {0:?}")]
    UnknownKey(Option<String>),
    #[error("the decryption key is not a usable RSA key")]
    BadKey,
    /// The content key did not decrypt, or the tag did not verify: one answer for both.
    #[error("the JWE does not decrypt")]
    Decrypt,
}

/// A decrypted JWE: its protected header and the plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct Decrypted {
    pub header: serde_json::Map<String, Value>,
    pub plaintext: Vec<u8>,
}

impl Decrypted {
    /// Whether the plaintext is a nested JWT (`cty: JWT`), as UserInfo's must be.
    pub fn is_nested_jwt(&self) -> bool {
        self.header
            .get("cty")
            .and_then(Value::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
    }
}

#[derive(Clone, Copy)]
enum Content {
    A128CbcHs256,
    A256CbcHs512,
}

impl Content {
    /// (content key length, tag length).
    fn sizes(self) -> (usize, usize) {
        match self {
            Content::A128CbcHs256 => (32, 16),
            Content::A256CbcHs512 => (64, 32),
        }
    }
}

/// Decrypts a compact JWE with one of `keys` (by `kid`; without one, only a single key).
pub fn decrypt(token: &str, keys: &[DecryptionKey]) -> Result<Decrypted, JweError> {
    if token.len() > MAX_JWE_BYTES {
        return Err(JweError::Malformed("too large"));
    }
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [head, enc_key, iv, ciphertext, tag] = parts.as_slice() else {
        return Err(JweError::Malformed("a compact JWE has five parts"));
    };
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JweError::Malformed("not base64url"))
    };
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&b64(head)?)
        .map_err(|_| JweError::Malformed("the header is not a JSON object"))?;
    let field = |name: &str| header.get(name).and_then(Value::as_str).unwrap_or("");
    let oaep: &'static OaepAlgorithm = match field("alg") {
        "RSA-OAEP" => &OAEP_SHA1_MGF1SHA1,
        "RSA-OAEP-256" => &OAEP_SHA256_MGF1SHA256,
        other => return Err(JweError::Algorithm(other.chars().take(40).collect())),
    };
    let content = match field("enc") {
        "A128CBC-HS256" => Content::A128CbcHs256,
        "A256CBC-HS512" => Content::A256CbcHs512,
        other => return Err(JweError::Encryption(other.chars().take(40).collect())),
    };
    if header.contains_key("zip") {
        return Err(JweError::Unsupported("zip"));
    }
    if header.contains_key("crit") {
        return Err(JweError::Unsupported("crit"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let key = match &kid {
        Some(k) => keys.iter().find(|d| d.kid.as_deref() == Some(k.as_str())),
        None => match keys {
            [only] => Some(only),
            _ => None,
        },
    }
    .ok_or_else(|| JweError::UnknownKey(kid.clone()))?;
    let (cek_len, tag_len) = content.sizes();
    let (enc_key, iv, ciphertext, tag) = (b64(enc_key)?, b64(iv)?, b64(ciphertext)?, b64(tag)?);
    if iv.len() != 16 || tag.len() != tag_len || ciphertext.is_empty() || ciphertext.len() % 16 != 0
    {
        return Err(JweError::Decrypt);
    }
    let mut cek = vec![0u8; key.key.min_output_size()];
    let cek = key
        .key
        .decrypt(oaep, &enc_key, &mut cek, None)
        .map_err(|_| JweError::Decrypt)?;
    if cek.len() != cek_len {
        return Err(JweError::Decrypt);
    }
    let (mac_key, enc_key) = cek.split_at(cek_len / 2);
    let expected = content_tag(content, mac_key, head.as_bytes(), &iv, &ciphertext);
    aws_lc_rs::constant_time::verify_slices_are_equal(&expected[..tag_len], &tag)
        .map_err(|_| JweError::Decrypt)?;
    let cipher = match content {
        Content::A128CbcHs256 => &AES_128,
        Content::A256CbcHs512 => &AES_256,
    };
    let aes = UnboundCipherKey::new(cipher, enc_key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| JweError::Decrypt)?;
    let iv: [u8; 16] = iv.as_slice().try_into().map_err(|_| JweError::Decrypt)?;
    let mut buf = ciphertext;
    let plain = aes
        .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| JweError::Decrypt)?;
    let plaintext = plain.to_vec();
    Ok(Decrypted { header, plaintext })
}

/// The full HMAC of RFC 7518 §5.2.2.1: `HMAC(MAC_KEY, A || IV || E || AL)`, `AL` the
/// AAD's length in bits as a 64-bit big-endian number. The tag is its first half.
fn content_tag(content: Content, mac_key: &[u8], aad: &[u8], iv: &[u8], e: &[u8]) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let alg = match content {
        Content::A128CbcHs256 => hmac::HMAC_SHA256,
        Content::A256CbcHs512 => hmac::HMAC_SHA512,
    };
    let key = hmac::Key::new(alg, mac_key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(e);
    ctx.update(&((aad.len() as u64) * 8).to_be_bytes());
    ctx.sign().as_ref().to_vec()
}

#[cfg(test)]
mod tests;

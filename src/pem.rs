//! PEM files: certificate chains and private keys, read with rustls' PEM parser. Used by
//! the TLS listeners, upstream and fetch CA bundles, CNS authorities and the telephone
//! PIN's client CA. Errors name the file, never key material.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that could not be used: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: {reason}")]
pub struct PemError {
    pub path: String,
    pub reason: String,
}

impl PemError {
    pub fn new(path: &Path, reason: impl ToString) -> PemError {
        PemError {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// All certificates in a PEM file, in order. An empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| PemError::new(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new(path, e))?;
    if certs.is_empty() {
        return Err(PemError::new(path, "no certificate found"));
    }
    Ok(certs)
}

/// The first private key in a PEM file. The error never contains key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|_| PemError::new(path, "no readable private key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_missing_files_name_the_file_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("varco-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = load_certs(&empty).unwrap_err();
        assert!(e.to_string().contains("empty.pem") && e.reason.contains("no certificate"));
        let secret = dir.join("key.pem");
        std::fs::write(&secret, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        let e = load_key(&secret).unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        assert!(load_certs(&dir.join("missing.pem")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

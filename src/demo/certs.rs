//! Development-only PKI: a throw-away CA and leaf certificates made with rcgen, for
//! `varco demo` and the tests. Nothing here is fit for production, and the files it writes
//! say so in their names' directory (`certs/dev/`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("generating a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A development CA that can issue server and client certificates.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    pub fn new(name: &str) -> Result<DevCa, DevCertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(
            DnType::OrganizationName,
            "varco development (NOT FOR PRODUCTION)",
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A TLS server certificate for the given DNS names / IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<Issued, DevCertError> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A TLS client certificate with the given subject common name.
    pub fn client(&self, common_name: &str) -> Result<Issued, DevCertError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, DevCertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Paths of the demo's TLS files.
pub struct DevTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes sure `dir` holds a development CA and a `localhost` server certificate, creating
/// them on first use. Existing files are kept.
pub fn ensure_dev_tls(dir: &Path) -> Result<DevTlsFiles, DevCertError> {
    let files = DevTlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if files.ca.is_file() && files.cert.is_file() && files.key.is_file() {
        return Ok(files);
    }
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| DevCertError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let ca = DevCa::new("varco development CA")?;
    let server = ca.server(&["localhost", "127.0.0.1", "::1"])?;
    write(&files.ca, &ca.cert_pem())?;
    write(
        &files.cert,
        &format!("{}{}", server.cert_pem, ca.cert_pem()),
    )?;
    write(&files.key, &server.key_pem)?;
    Ok(files)
}

/// Paths of the demo's SAML signing keys: ours (the SP) and the development IdP's.
pub struct DevSamlFiles {
    pub sp_cert: PathBuf,
    pub sp_key: PathBuf,
    pub idp_cert: PathBuf,
    pub idp_key: PathBuf,
}

/// A self-signed RSA-2048 signing certificate (SPID/CIE use RSA).
fn rsa_signer(common_name: &str) -> Result<Issued, DevCertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.distinguished_name.push(
        DnType::OrganizationName,
        "varco development (NOT FOR PRODUCTION)",
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes sure `dir` holds the demo's SAML signing keys, creating them on first use.
pub fn ensure_dev_saml(dir: &Path) -> Result<DevSamlFiles, DevCertError> {
    let files = DevSamlFiles {
        sp_cert: dir.join("saml-sp.pem"),
        sp_key: dir.join("saml-sp-key.pem"),
        idp_cert: dir.join("dev-idp.pem"),
        idp_key: dir.join("dev-idp-key.pem"),
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| DevCertError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for (cert, key, name) in [
        (
            &files.sp_cert,
            &files.sp_key,
            "varco demo SAML service provider",
        ),
        (&files.idp_cert, &files.idp_key, "varco development IdP"),
    ] {
        if !(cert.is_file() && key.is_file()) {
            let issued = rsa_signer(name)?;
            write(cert, &issued.cert_pem)?;
            write(key, &issued.key_pem)?;
        }
    }
    Ok(files)
}

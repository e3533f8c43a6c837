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

/// Paths of the demo's CNS (smart card) material, and the PKCS#12 password.
pub struct DevCnsFiles {
    /// The throw-away CNS authority (the listener's `client_ca` and `cns.ca`).
    pub ca: PathBuf,
    /// Its CRL, revoking the revoked card.
    pub crl: PathBuf,
    /// The valid card (Mario Rossi): certificate and key PEM, and a `.p12` when `openssl`
    /// is there to make one.
    pub valid: CardFiles,
    /// The revoked card (Giulia Bianchi).
    pub revoked: CardFiles,
    /// The password of the `.p12` files (development only, printed by the demo).
    pub p12_password: &'static str,
}

/// One card's files.
pub struct CardFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub p12: PathBuf,
}

/// The `.p12` files' password: development only, shown on the terminal and in the README.
pub const DEV_P12_PASSWORD: &str = "varco-demo";

/// The CNS certificate policy (1.3.76.16.2.1) as a certificatePolicies extension value.
fn cns_policies() -> rcgen::CustomExtension {
    // SEQUENCE { SEQUENCE { OID 1.3.76.16.2.1 } }
    let value = vec![
        0x30, 0x09, 0x30, 0x07, 0x06, 0x05, 0x2b, 0x4c, 0x10, 0x02, 0x01,
    ];
    rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 32], value)
}

/// A card for `fiscal_code`, `given`, `family` with `serial`, issued by `ca`.
fn cns_card(
    ca: &CertifiedIssuer<'static, KeyPair>,
    serial: u64,
    fiscal_code: &str,
    given: &str,
    family: &str,
) -> Result<Issued, DevCertError> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(
        DnType::CommonName,
        format!("{fiscal_code}/{serial:016}.DEVELOPMENTONLYNOTACARD="),
    );
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 42]), given);
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 4]), family);
    p.distinguished_name.push(
        DnType::OrganizationName,
        "varco development (NOT A REAL CNS)",
    );
    p.serial_number = Some(rcgen::SerialNumber::from(serial));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.custom_extensions = vec![cns_policies()];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes sure `dir` holds the demo's CNS material, creating it on first use: a throw-away
/// CNS authority with the CNS policy, a CRL, one valid and one revoked card for two test
/// users (`cards`: fiscal code, given name, family name of each), each also as a PKCS#12
/// file (made with `openssl` when it is installed; otherwise the PEM files are there and
/// the demo says how to make one).
pub fn ensure_dev_cns(
    dir: &Path,
    cards: [(&str, &str, &str); 2],
) -> Result<DevCnsFiles, DevCertError> {
    let card_files = |name: &str| CardFiles {
        cert: dir.join(format!("cns-{name}.pem")),
        key: dir.join(format!("cns-{name}-key.pem")),
        p12: dir.join(format!("cns-{name}.p12")),
    };
    let files = DevCnsFiles {
        ca: dir.join("cns-ca.pem"),
        crl: dir.join("cns.crl"),
        valid: card_files("valida"),
        revoked: card_files("revocata"),
        p12_password: DEV_P12_PASSWORD,
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| DevCertError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    let complete = [
        &files.ca,
        &files.crl,
        &files.valid.cert,
        &files.valid.key,
        &files.revoked.cert,
        &files.revoked.key,
    ]
    .iter()
    .all(|p| p.is_file());
    if !complete {
        std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "varco development CNS authority");
        params.distinguished_name.push(
            DnType::OrganizationName,
            "varco development (NOT FOR PRODUCTION)",
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let (valid_serial, revoked_serial) = (1001u64, 1002u64);
        let [(v_cf, v_given, v_family), (r_cf, r_given, r_family)] = cards;
        let valid = cns_card(&ca, valid_serial, v_cf, v_given, v_family)?;
        let revoked = cns_card(&ca, revoked_serial, r_cf, r_given, r_family)?;
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(revoked_serial),
                revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)?
        .pem()?;
        write(&files.ca, &ca.pem())?;
        write(&files.crl, &crl)?;
        write(&files.valid.cert, &valid.cert_pem)?;
        write(&files.valid.key, &valid.key_pem)?;
        write(&files.revoked.cert, &revoked.cert_pem)?;
        write(&files.revoked.key, &revoked.key_pem)?;
        let _ = std::fs::remove_file(&files.valid.p12);
        let _ = std::fs::remove_file(&files.revoked.p12);
    }
    for card in [&files.valid, &files.revoked] {
        if !card.p12.is_file() {
            pkcs12(card, &files.ca);
        }
    }
    Ok(files)
}

/// `openssl pkcs12 -export` of a card (with its authority), when `openssl` is installed.
fn pkcs12(card: &CardFiles, ca: &Path) {
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-name", "varco demo CNS", "-in"])
        .arg(&card.cert)
        .arg("-inkey")
        .arg(&card.key)
        .arg("-certfile")
        .arg(ca)
        .arg("-out")
        .arg(&card.p12)
        .args(["-passout", &format!("pass:{DEV_P12_PASSWORD}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_file(&card.p12);
    }
}

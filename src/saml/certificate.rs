//! `varco saml certificate`: the SP's signing key and certificate with the profile of AgID's
//! Avviso SPID n.29 v3, so that ops need no separate script: an RSA-3072 key, a self-signed
//! certificate (SHA-256) and a CSR with
//! - the subject: `organizationName`, `commonName`, `uri` (2.5.4.83) = our entityID,
//!   `organizationIdentifier` (2.5.4.97) = `PA:IT-<IPA code>` (public) or `VATIT-<11
//!   digits>` / `CF:IT-<16 characters>` (private), `countryName` IT, `localityName`;
//! - `basicConstraints` CA:FALSE (not critical), `keyUsage` digitalSignature and
//!   nonRepudiation (critical), `certificatePolicies` (not critical) agIDcert
//!   (1.3.76.16.6) and the SP policy: 1.3.76.16.4.2.1 (public) or 1.3.76.16.4.3.1
//!   (private), each with its user notice.
//!
//! Tested by AgID's own validator (`spid-compliant-certificates`, tests/conformance.rs).

use rcgen::{
    CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};

/// Public administration or private service provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sector {
    Public,
    Private,
}

/// What the certificate says.
#[derive(Debug, Clone)]
pub struct Subject {
    pub sector: Sector,
    /// `organizationIdentifier`: `PA:IT-c_h501`, `VATIT-12345678901` or `CF:IT-...`.
    pub organization_identifier: String,
    pub organization_name: String,
    pub common_name: String,
    /// Our SAML entityID.
    pub entity_id: String,
    /// `localityName`: the municipality of the registered office.
    pub locality: String,
    pub days: u32,
}

/// The key (PKCS#8 PEM), the self-signed certificate and the CSR (PEM).
pub struct Generated {
    pub key_pem: String,
    pub cert_pem: String,
    pub csr_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("{0}")]
    Subject(String),
    #[error("the RSA key could not be generated")]
    Key,
    #[error("the certificate could not be made: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The `organizationIdentifier` for an IPA code (public) or a VAT number / fiscal code
/// (private), as Avviso 29 writes it.
pub fn organization_identifier(
    sector: Sector,
    ipa_code: Option<&str>,
    vat_number: Option<&str>,
    fiscal_code: Option<&str>,
) -> Result<String, CertificateError> {
    let bad = |m: &str| Err(CertificateError::Subject(m.into()));
    match sector {
        Sector::Public => match ipa_code {
            Some(c) if (1..=16).contains(&c.len()) && !c.contains(char::is_whitespace) => {
                Ok(format!("PA:IT-{c}"))
            }
            _ => bad("a public SP needs --ipa-code (1 to 16 characters)"),
        },
        Sector::Private => {
            if let Some(v) = vat_number {
                let digits = v.strip_prefix("IT").unwrap_or(v);
                if digits.len() == 11 && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(format!("VATIT-{digits}"));
                }
                return bad("--vat-number: an Italian VAT number, 11 digits");
            }
            // A person's fiscal code has 16 characters; an organization's (an association,
            // a patronato without a VAT number) 11 digits. (AgID's validator knows only the
            // first form.)
            match fiscal_code {
                Some(f)
                    if (f.len() == 16 && f.bytes().all(|b| b.is_ascii_alphanumeric()))
                        || (f.len() == 11 && f.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    Ok(format!("CF:IT-{}", f.to_ascii_uppercase()))
                }
                _ => bad(
                    "a private SP needs --vat-number or --fiscal-code (16 characters, or 11 digits)",
                ),
            }
        }
    }
}

/// DER: one tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// DER: an OBJECT IDENTIFIER from its arcs.
fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

/// `PolicyInformation` with a user notice whose explicit text is `notice`.
fn policy(arcs: &[u64], notice: &str) -> Vec<u8> {
    const UNOTICE: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 2, 2];
    let user_notice = tlv(0x30, &tlv(0x0c, notice.as_bytes()));
    let qualifier = tlv(0x30, &[oid(&UNOTICE), user_notice].concat());
    tlv(0x30, &[oid(arcs), tlv(0x30, &qualifier)].concat())
}

/// The certificatePolicies value of a service provider of `sector`.
fn policies(sector: Sector) -> Vec<u8> {
    let sp = match sector {
        Sector::Public => policy(&[1, 3, 76, 16, 4, 2, 1], "cert_SP_Pub"),
        Sector::Private => policy(&[1, 3, 76, 16, 4, 3, 1], "cert_SP_Priv"),
    };
    tlv(0x30, &[policy(&[1, 3, 76, 16, 6], "agIDcert"), sp].concat())
}

/// Generates the key, the certificate and the CSR for `s`.
pub fn generate(s: &Subject) -> Result<Generated, CertificateError> {
    for (name, value) in [
        ("organization name", &s.organization_name),
        ("common name", &s.common_name),
        ("entity id", &s.entity_id),
        ("locality", &s.locality),
    ] {
        if value.trim().is_empty() {
            return Err(CertificateError::Subject(format!("the {name} is empty")));
        }
    }
    if !(1..=3650).contains(&s.days) {
        return Err(CertificateError::Subject("--days: 1 to 3650".into()));
    }
    use aws_lc_rs::encoding::AsDer as _;
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
        .map_err(|_| CertificateError::Key)?;
    let pkcs8 = rsa.as_der().map_err(|_| CertificateError::Key)?;
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
        &PKCS_RSA_SHA256,
    )?;
    let mut p = CertificateParams::default();
    let dn = &mut p.distinguished_name;
    dn.push(DnType::OrganizationName, s.organization_name.as_str());
    dn.push(DnType::CommonName, s.common_name.as_str());
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 83]),
        s.entity_id.as_str(),
    );
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 97]),
        s.organization_identifier.as_str(),
    );
    // countryName is a PrintableString (RFC 5280).
    dn.push(
        DnType::CountryName,
        rcgen::DnValue::PrintableString(rcgen::string::PrintableString::try_from("IT")?),
    );
    dn.push(DnType::LocalityName, s.locality.as_str());
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(i64::from(s.days));
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    // basicConstraints CA:FALSE, not critical (rcgen would mark its own critical).
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    p.custom_extensions = vec![
        CustomExtension::from_oid_content(&[2, 5, 29, 19], tlv(0x30, &[])),
        CustomExtension::from_oid_content(&[2, 5, 29, 32], policies(s.sector)),
    ];
    let cert = p.self_signed(&key)?;
    // The CA of a CSR picks the serial number.
    p.serial_number = None;
    let csr = p.serialize_request(&key)?;
    Ok(Generated {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
        csr_pem: csr.pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_of_oids_and_lengths() {
        // 1.3.76.16.6 as every X.509 tool writes it.
        assert_eq!(
            oid(&[1, 3, 76, 16, 6]),
            vec![0x06, 0x04, 0x2b, 0x4c, 0x10, 0x06]
        );
        // An arc above 127 takes two bytes (2.5.29.32 is short; 1.2.840 is not).
        assert_eq!(oid(&[1, 2, 840]), vec![0x06, 0x03, 0x2a, 0x86, 0x48]);
        assert_eq!(tlv(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn organization_identifiers_follow_avviso_29() {
        let id = |s, i, v, f| organization_identifier(s, i, v, f);
        assert_eq!(
            id(Sector::Public, Some("c_h501"), None, None).unwrap(),
            "PA:IT-c_h501"
        );
        assert_eq!(
            id(Sector::Private, None, Some("IT12345678901"), None).unwrap(),
            "VATIT-12345678901"
        );
        assert_eq!(
            id(Sector::Private, None, None, Some("rssmra80a01h501u")).unwrap(),
            "CF:IT-RSSMRA80A01H501U"
        );
        assert_eq!(
            id(Sector::Private, None, None, Some("80012345678")).unwrap(),
            "CF:IT-80012345678"
        );
        assert!(id(Sector::Private, None, None, Some("8001234567X")).is_err());
        assert!(id(Sector::Public, None, Some("IT12345678901"), None).is_err());
        assert!(id(Sector::Private, None, Some("IT123"), None).is_err());
        assert!(id(Sector::Private, None, None, None).is_err());
    }

    #[test]
    fn the_certificate_has_the_profile() {
        let g = generate(&Subject {
            sector: Sector::Public,
            organization_identifier: "PA:IT-c_h501".into(),
            organization_name: "Comune di Roma".into(),
            common_name: "Servizi online".into(),
            entity_id: "https://servizi.example.it/sp".into(),
            locality: "Roma".into(),
            days: 730,
        })
        .unwrap();
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(g.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().parsed().ok().map(|k| k.key_size()),
            Some(3072)
        );
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && ku.value.non_repudiation());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.critical && !bc.value.ca);
        let ids: Vec<String> = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::CertificatePolicies(p) => Some(p),
                _ => None,
            })
            .unwrap()
            .iter()
            .map(|p| p.policy_id.to_id_string())
            .collect();
        assert_eq!(ids, vec!["1.3.76.16.6", "1.3.76.16.4.2.1"]);
        assert!(g.key_pem.contains("PRIVATE KEY") && g.csr_pem.contains("CERTIFICATE REQUEST"));
        // The start-up check finds nothing to warn about.
        assert_eq!(
            super::super::metadata::avviso29_gaps(&der, "https://servizi.example.it/sp", true),
            Vec::<String>::new()
        );
    }
}

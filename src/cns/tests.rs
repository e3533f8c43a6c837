//! CNS-shaped certificates made here with rcgen under a test CA: the valid one, and one
//! refusal per rule (expired, revoked by CRL, wrong policy, bad CN, bad fiscal code,
//! untrusted CA, server-only usage, no CRL for the issuer).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};

use super::*;

/// certificatePolicies with one policy OID, DER (content of the extension).
fn policies(oid_der: &[u8]) -> Vec<u8> {
    let mut info = vec![0x06, oid_der.len() as u8];
    info.extend_from_slice(oid_der);
    let mut seq = vec![0x30, info.len() as u8];
    seq.extend(info);
    let mut out = vec![0x30, seq.len() as u8];
    out.extend(seq);
    out
}

const CNS_OID: [u8; 5] = [0x2b, 0x4c, 0x10, 0x02, 0x01]; // 1.3.76.16.2.1
const OTHER_OID: [u8; 5] = [0x2b, 0x4c, 0x10, 0x09, 0x01]; // 1.3.76.16.9.1

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ca {
        issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
    }
}

struct Card<'a> {
    cn: &'a str,
    policy: &'a [u8],
    serial: u64,
    not_after: (i32, u8, u8),
    eku: ExtendedKeyUsagePurpose,
}

fn card(ca: &Ca, c: &Card<'_>) -> CertificateDer<'static> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, c.cn);
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 42]), "MARIO");
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 4]), "ROSSI");
    p.serial_number = Some(SerialNumber::from(c.serial));
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(c.not_after.0, c.not_after.1, c.not_after.2);
    p.extended_key_usages = vec![c.eku.clone()];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        policies(c.policy),
    )];
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

fn crl(ca: &Ca, revoked: &[u64]) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2026, 1, 1),
        next_update: date_time_ymd(2027, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2026, 6, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .unwrap()
    .der()
    .to_vec()
}

fn now() -> UnixTime {
    // 2026-11-28
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_795_840_000))
}

const GOOD_CN: &str = "RSSMRA80A01H501U/7420000012345678.abcdefghijklmnopqrstuvwxyz=";

fn good(serial: u64) -> Card<'static> {
    Card {
        cn: GOOD_CN,
        policy: &CNS_OID,
        serial,
        not_after: (2030, 1, 1),
        eku: ExtendedKeyUsagePurpose::ClientAuth,
    }
}

fn trust(ca: &Ca, crls: Vec<Vec<u8>>) -> CnsTrust {
    CnsTrust::new(
        &[ca.issuer.der().clone()],
        Vec::new(),
        &crls,
        vec![CNS_POLICY.to_string()],
    )
    .unwrap()
}

#[test]
fn a_valid_cns_certificate_names_its_holder() {
    let ca = ca("CNS test CA");
    let cert = card(&ca, &good(10));
    let id = validate(&[cert], &trust(&ca, vec![crl(&ca, &[99])]), now()).unwrap();
    assert_eq!(id.subject.as_str(), "RSSMRA80A01H501U");
    assert_eq!(
        (id.given_name.as_str(), id.family_name.as_str()),
        ("MARIO", "ROSSI")
    );
}

#[test]
fn every_rule_has_its_refusal() {
    let ca = ca("CNS test CA");
    let rogue = self::ca("rogue CA");
    let t = trust(&ca, vec![crl(&ca, &[11])]);
    let cases: Vec<(&str, CertificateDer<'static>, &CnsTrust, CnsError)> = vec![
        (
            "expired",
            card(
                &ca,
                &Card {
                    not_after: (2025, 1, 1),
                    ..good(12)
                },
            ),
            &t,
            CnsError::Expired,
        ),
        (
            "revoked by the CRL",
            card(&ca, &good(11)),
            &t,
            CnsError::Revoked,
        ),
        (
            "wrong policy OID",
            card(
                &ca,
                &Card {
                    policy: &OTHER_OID,
                    ..good(13)
                },
            ),
            &t,
            CnsError::Policy,
        ),
        (
            "CN without serial",
            card(
                &ca,
                &Card {
                    cn: "RSSMRA80A01H501U",
                    ..good(14)
                },
            ),
            &t,
            CnsError::CommonName,
        ),
        (
            "bad fiscal code",
            card(
                &ca,
                &Card {
                    cn: "RSSMRA80A01H501X/1.a",
                    ..good(15)
                },
            ),
            &t,
            CnsError::FiscalCode,
        ),
        (
            "server certificate",
            card(
                &ca,
                &Card {
                    eku: ExtendedKeyUsagePurpose::ServerAuth,
                    ..good(16)
                },
            ),
            &t,
            CnsError::Usage,
        ),
    ];
    for (name, cert, trust, err) in cases {
        assert_eq!(validate(&[cert], trust, now()), Err(err), "{name}");
    }
    // Issued by an authority that is not configured.
    let foreign = card(&rogue, &good(17));
    assert_eq!(
        validate(&[foreign], &t, now()),
        Err(CnsError::UntrustedIssuer)
    );
    // CRLs configured, but none from this issuer: unknown status is a refusal.
    let other_ca = self::ca("other CNS CA");
    let both = CnsTrust::new(
        &[ca.issuer.der().clone(), other_ca.issuer.der().clone()],
        Vec::new(),
        &[crl(&ca, &[])],
        vec![CNS_POLICY.to_string()],
    )
    .unwrap();
    assert_eq!(
        validate(&[card(&other_ca, &good(18))], &both, now()),
        Err(CnsError::RevocationUnknown)
    );
    assert_eq!(validate(&[], &t, now()), Err(CnsError::NoCertificate));
}

/// A CRL past its nextUpdate says nothing any more: the card's status is unknown, refused.
#[test]
fn an_expired_crl_refuses_the_card() {
    let ca = ca("CNS test CA");
    let cert = card(&ca, &good(10));
    let t = trust(&ca, vec![crl(&ca, &[99])]);
    assert!(validate(std::slice::from_ref(&cert), &t, now()).is_ok());
    // 2027-06-01: after the CRL's nextUpdate (2027-01-01), before the card's end.
    let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_811_808_000));
    assert_eq!(
        validate(&[cert], &t, later).unwrap_err(),
        CnsError::RevocationUnknown
    );
}

//! CNS login through the real gateway over TLS with a client certificate: a CNS-shaped
//! card (rcgen, test CA) logs in and reaches the upstream with `amr = cns`; a revoked card,
//! a card with another policy and no card at all are refused with their pages.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Gateway, upstreams};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn cns_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "CNS test CA (TEST ONLY)");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A card: (cert PEM, key PEM). `policy_last` is the last arc of 1.3.76.16.x.1.
fn card(ca: &CertifiedIssuer<'static, KeyPair>, serial: u64, policy_arc: u8) -> (String, String) {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(
        DnType::CommonName,
        "RSSMRA80A01H501U/7420000012345678.abcdefghijklmnopqrstuvwxyz=",
    );
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 42]), "MARIO");
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 4]), "ROSSI");
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // certificatePolicies { policyIdentifier 1.3.76.16.<arc>.1 }
    let policies = vec![
        0x30, 0x09, 0x30, 0x07, 0x06, 0x05, 0x2b, 0x4c, 0x10, policy_arc, 0x01,
    ];
    p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 32], policies)];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn crl_pem(ca: &CertifiedIssuer<'static, KeyPair>, revoked: u64) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2026, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(revoked),
            revocation_time: date_time_ymd(2026, 6, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .unwrap()
    .pem()
    .unwrap()
}

/// One request over a fresh TLS connection, optionally with a client certificate.
async fn get(
    gw: &Gateway,
    server_ca: &str,
    client: Option<&(String, String)>,
    path: &str,
    cookie: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header("host", "localhost")
        .header("accept", "application/json");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cns_cards_log_in_and_bad_cards_are_refused() {
    let up = upstreams::echo().await;
    let server_ca = varco::demo::certs::DevCa::new("server CA (TEST ONLY)").unwrap();
    let server = server_ca.server(&["localhost"]).unwrap();
    let ca = cns_ca();
    let good = card(&ca, 10, 2);
    let revoked = card(&ca, 11, 2);
    let other_policy = card(&ca, 12, 9);
    let config = format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[server.listener.tls]
cert = "@DIR@/server.pem"
key = "@DIR@/server-key.pem"
client_ca = "@DIR@/cns-ca.pem"
[log]
format = "json"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = false
[cns]
ca = "@DIR@/cns-ca.pem"
crls = ["@DIR@/cns.crl"]
"#
    );
    let gw = Gateway::start_with(
        &config,
        &[
            ("server.pem", &server.cert_pem),
            ("server-key.pem", &server.key_pem),
            ("cns-ca.pem", &ca.pem()),
            ("cns.crl", &crl_pem(&ca, 11)),
        ],
    );
    let server_ca_pem = server_ca.cert_pem();

    let (status, headers, body) = get(
        &gw,
        &server_ca_pem,
        Some(&good),
        "/_varco/cns/login?return=%2Fapp",
        None,
    )
    .await;
    assert_eq!(status, 303, "{body}\n{}", gw.logs().join("\n"));
    assert_eq!(headers["location"], "/app");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The session works on any connection (no certificate needed afterwards).
    let (status, _, body) = get(&gw, &server_ca_pem, None, "/app", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "x-varco-assertion")
        .map(|p| p[1].as_str().unwrap().to_string())
        .unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["amr"], "cns");
    assert_eq!(claims["sub"], "RSSMRA80A01H501U");
    assert_eq!(claims["acr"], "https://www.spid.gov.it/SpidL2");
    assert_eq!(claims["given_name"], "MARIO");

    for (card, status, code) in [
        (Some(&revoked), 403, "cns_certificate_not_valid"),
        (Some(&other_policy), 403, "cns_not_accepted"),
        (None, 401, "cns_no_certificate"),
    ] {
        let (s, headers, body) = get(&gw, &server_ca_pem, card, "/_varco/cns/login", None).await;
        assert_eq!(s, status, "{body}");
        assert!(body.contains(code), "{body}");
        assert!(headers.get("set-cookie").is_none());
    }
    assert!(
        gw.wait_log(|l| l.contains("cns_login_refused") && l.contains("revoked"))
            .is_some()
    );
}

/// Behind a TLS-terminating ingress: the certificate arrives URL-encoded in a header and
/// counts only from a trusted proxy; from anyone else it is removed (and never forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_header_counts_only_from_the_trusted_ingress() {
    let up = upstreams::echo().await;
    let ca = cns_ca();
    let good = card(&ca, 20, 2);
    let config = |trusted: &str| {
        format!(
            r#"
mode = "demo"
[server]
trusted_proxies = ["{trusted}"]
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = true
[cns]
ca = "@DIR@/cns-ca.pem"
crls = ["@DIR@/cns.crl"]
header = "X-SSL-Client-Cert"
"#
        )
    };
    let escaped =
        percent_encoding::utf8_percent_encode(&good.0, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let files = [("cns-ca.pem", ca.pem()), ("cns.crl", crl_pem(&ca, 99))];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    // From the trusted ingress (loopback here): a login.
    let gw = Gateway::start_with(&config("127.0.0.1/32"), &files);
    let r = common::request(
        "GET",
        &gw.url("/_varco/cns/login?return=%2Fapp"),
        &[
            ("x-ssl-client-cert", &escaped),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    // The header never reaches an upstream.
    let r = common::request(
        "GET",
        &gw.url("/app"),
        &[
            ("x-ssl-client-cert", &escaped),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert!(r.echoed("x-ssl-client-cert").is_empty());
    // From an untrusted peer: removed, so no certificate — refused with its page.
    let gw = Gateway::start_with(&config("10.9.9.9/32"), &files);
    let r = common::request(
        "GET",
        &gw.url("/_varco/cns/login?return=%2Fapp"),
        &[
            ("x-ssl-client-cert", &escaped),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "cns_no_certificate");
    assert!(r.headers.get("set-cookie").is_none());
}

/// A route configured with `cns_login = true` logs a card in on the spot (no chooser): the
/// first request is answered by the upstream with the card's identity and a session
/// cookie. A fresh CRL file is picked up without a restart: the card is refused from then
/// on; a broken CRL file keeps the previous list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cns_routes_log_cards_in_on_the_spot_and_crls_reload() {
    let up = upstreams::echo().await;
    let ca = cns_ca();
    let good = card(&ca, 30, 2);
    let revoked = card(&ca, 31, 2);
    let config = format!(
        r#"
mode = "demo"
[server]
trusted_proxies = ["127.0.0.1/32"]
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/carta"
upstream = "app"
public = false
cns_login = true
[[route]]
path = "/altro"
upstream = "app"
public = false
[cns]
ca = "@DIR@/cns-ca.pem"
crls = ["@DIR@/cns.crl"]
header = "X-SSL-Client-Cert"
reload_interval = "200ms"
"#
    );
    let ca_pem = ca.pem();
    let crl = crl_pem(&ca, 31);
    let gw = Gateway::start_with(&config, &[("cns-ca.pem", &ca_pem), ("cns.crl", &crl)]);
    let escaped = |c: &(String, String)| {
        percent_encoding::utf8_percent_encode(&c.0, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let with_card = |c: &(String, String), path: &str| {
        let e = escaped(c);
        let url = gw.url(path);
        async move {
            common::request(
                "GET",
                &url,
                &[("x-ssl-client-cert", &e), ("accept", "application/json")],
                "",
            )
            .await
        }
    };

    let r = with_card(&good, "/carta/estratto").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.echoed("x-varco-assertion").len() == 1);
    assert_eq!(r.headers["cache-control"], "no-store");
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The session works elsewhere, without the card.
    let r = common::request(
        "GET",
        &gw.url("/altro"),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    // A route without cns_login does not log cards in; no card on a cns route: login.
    assert_eq!(
        with_card(&good, "/altro").await.json()["error"],
        "login_required"
    );
    let r = common::request(
        "GET",
        &gw.url("/carta"),
        &[("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "login_required");
    // An ingress that sends the header empty (no certificate): the login, not a refusal.
    let r = common::request(
        "GET",
        &gw.url("/carta"),
        &[("x-ssl-client-cert", ""), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "login_required");
    // Not from another site, and not for a POST: a browser sends its card there too.
    let r = common::request(
        "GET",
        &gw.url("/carta"),
        &[
            ("x-ssl-client-cert", &escaped(&good)),
            ("sec-fetch-site", "cross-site"),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "login_required");
    let r = common::request(
        "POST",
        &gw.url("/carta"),
        &[
            ("x-ssl-client-cert", &escaped(&good)),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.json()["error"], "login_required");
    // A revoked card: its refusal, not a session.
    let r = with_card(&revoked, "/carta").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "cns_certificate_not_valid");
    assert!(r.headers.get("set-cookie").is_none());

    // The CRLs' earliest nextUpdate is a metric (2099-01-01 here), for alerting.
    let m = common::request("GET", &gw.url("/_varco/metrics"), &[], "")
        .await
        .text();
    assert!(
        m.contains("varco_cns_crl_next_update_timestamp_seconds 4070908800"),
        "{m}"
    );

    // Ops drop a new CRL that revokes the good card too: picked up without a restart.
    std::fs::write(gw.dir.path().join("cns.crl"), crl_pem(&ca, 30)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = with_card(&good, "/carta").await;
        if r.status == 403 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CRL was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The old CRL's card is fine again (that CRL is gone); a broken file keeps this one.
    assert_eq!(with_card(&revoked, "/carta").await.status, 200);
    std::fs::write(gw.dir.path().join("cns.crl"), "not a CRL").unwrap();
    assert!(
        gw.wait_log(|l| l.contains("CNS files not reloaded"))
            .is_some()
    );
    assert_eq!(with_card(&good, "/carta").await.status, 403);
}

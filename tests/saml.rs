//! SPID/CIE logins through the real gateway binary: the chooser, the signed AuthnRequest
//! (Redirect binding, checked here as an IdP would), the ACS with a response signed by the
//! test IdP key, the identity header upstream, replay and unsolicited answers, each IdP
//! error code's page, step-up, SP metadata (endpoint and command), Single Logout both
//! ways, and metadata loading (refusals, a pinned aggregate over HTTP, last good copy).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use base64::Engine as _;
use common::{Gateway, Resp, request, upstreams};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use varco::identity::Level;
use varco::saml::authn_request::Profile;
use varco::saml::issuer::{ResponseParams, idp_metadata, parse_authn_request, signed_response};
use varco::saml::redirect::{self, MessageKind};

const IDP: &str = "https://idp.test/";
const SP: &str = "https://sp.test/";
const BROWSER: (&str, &str) = ("accept", "text/html");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

struct Keys {
    cert_pem: String,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Keys {
    fn from_pem(cert_pem: &str, key_pem: &str) -> Keys {
        Keys {
            cert_pem: cert_pem.to_string(),
            cert: CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .unwrap()
                .to_vec(),
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .unwrap()
                .secret_der()
                .to_vec(),
        }
    }
    fn rsa(&self) -> RsaKeyPair {
        RsaKeyPair::from_pkcs8(&self.key).unwrap()
    }
}

fn idp_keys() -> Keys {
    Keys::from_pem(
        include_str!("fixtures/saml/idp-test.crt.pem"),
        include_str!("fixtures/saml/idp-test.key.pem"),
    )
}

fn foreign_keys() -> Keys {
    Keys::from_pem(
        include_str!("fixtures/saml/foreign-test.crt.pem"),
        include_str!("fixtures/saml/foreign-test.key.pem"),
    )
}

/// A fresh RSA SP key (PEM cert, PEM key).
fn sp_keys() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sp.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn config(up: SocketAddr, federation: &str, extra_routes: &str) -> String {
    format!(
        r#"
mode = "demo"
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
public = false
{extra_routes}
[saml]
entity_id = "{SP}"
base_url = "https://gw.test"
cert = "@DIR@/sp.pem"
key = "@DIR@/sp-key.pem"
[saml.organization]
name = "Test"
display_name = "Test SP"
url = "https://sp.test/"
[saml.contact]
public = true
ipa_code = "c_h501"
email = "spid@sp.test"
telephone = "+390600000000"
{federation}
"#
    )
}

const SPID_FILE: &str = r#"
[[saml.federation]]
name = "spid"
profile = "spid"
metadata_files = ["@DIR@/idp.xml"]
"#;

struct Setup {
    gw: Gateway,
    sp_cert: Vec<u8>,
    /// The login-binding cookie of each login started, by RelayState: a browser sends it
    /// back with the IdP's answer.
    bindings: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Setup {
    fn new(gw: Gateway, sp_cert_pem: &str) -> Setup {
        Setup {
            gw,
            sp_cert: CertificateDer::from_pem_slice(sp_cert_pem.as_bytes())
                .unwrap()
                .to_vec(),
            bindings: Default::default(),
        }
    }

    /// The `cookie` header a browser would send with the answer to the login `relay`.
    fn binding(&self, relay: &str) -> Option<(&'static str, String)> {
        let b = self.bindings.lock().unwrap();
        b.get(relay).map(|c| ("cookie", c.clone()))
    }
}

fn start(up: SocketAddr, extra_routes: &str) -> Setup {
    start_text(&config(up, SPID_FILE, extra_routes))
}

/// The gateway with the configuration `text` (from [`config`], edited), a fresh SP key and
/// the test IdP's metadata.
fn start_text(text: &str) -> Setup {
    let (sp_cert_pem, sp_key_pem) = sp_keys();
    let meta = idp_metadata(
        IDP,
        &format!("{IDP}sso"),
        &format!("{IDP}slo"),
        &idp_keys().cert,
        "IdP di prova",
    );
    let gw = Gateway::start_with(
        text,
        &[
            ("sp.pem", &sp_cert_pem),
            ("sp-key.pem", &sp_key_pem),
            ("idp.xml", &meta),
        ],
    );
    Setup::new(gw, &sp_cert_pem)
}

/// The state of a login in flight: what the IdP received.
struct Sent {
    request_id: String,
    relay: String,
    level: Level,
}

/// Starts a SAML login at the gateway and checks the AuthnRequest as the IdP would.
async fn begin(s: &Setup, level: &str, return_to: &str) -> Sent {
    let body = format!(
        "idp={}&return={}&level={level}",
        form_urlencoded::byte_serialize(IDP.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    );
    let r = request("POST", &s.gw.url("/_varco/saml/login"), &[FORM], body).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{IDP}sso?")), "{location}");
    let raw = location.split_once('?').unwrap().1;
    let cert = CertificateDer::from(s.sp_cert.as_slice());
    let msg = redirect::verify_query(raw, &[cert]).expect("the AuthnRequest is signed by the SP");
    assert_eq!(msg.kind, MessageKind::Request);
    assert!(
        msg.xml.contains("AssertionConsumerServiceIndex=\"0\""),
        "{}",
        msg.xml
    );
    let facts = parse_authn_request(&msg.xml).unwrap();
    assert_eq!(facts.issuer, SP);
    assert_eq!(facts.destination, format!("{IDP}sso"));
    let relay = msg.relay_state.clone().unwrap();
    assert!(!relay.contains('/'), "RelayState must be opaque: {relay}");
    if let Some(set) = r.headers.get("set-cookie") {
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
        s.bindings.lock().unwrap().insert(relay.clone(), pair);
    }
    Sent {
        request_id: facts.id,
        relay,
        level: facts.level,
    }
}

fn response_for(sent: &Sent, level: Level, tweak: impl FnOnce(&mut ResponseParams<'_>)) -> String {
    let keys = idp_keys();
    let attributes = vec![
        ("fiscalNumber", "TINIT-RSSMRA80A01H501U".to_string()),
        ("name", "Mario".to_string()),
        ("familyName", "Rossi".to_string()),
    ];
    let mut p = ResponseParams {
        profile: Profile::Spid,
        idp_entity_id: IDP,
        sp_entity_id: SP,
        acs_url: "https://gw.test/_varco/saml/acs",
        in_response_to: &sent.request_id,
        level,
        now: now(),
        error_code: None,
        attributes: &attributes,
        assertion_id: None,
    };
    tweak(&mut p);
    signed_response(&p, &keys.key, &keys.cert).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn post_acs(s: &Setup, xml: &str, relay: &str) -> Resp {
    let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
    let body = format!(
        "SAMLResponse={}&RelayState={}",
        form_urlencoded::byte_serialize(b64.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(relay.as_bytes()).collect::<String>()
    );
    let binding = s.binding(relay);
    let mut headers = vec![FORM, BROWSER];
    if let Some((k, v)) = &binding {
        headers.push((k, v.as_str()));
    }
    request("POST", &s.gw.url("/_varco/saml/acs"), &headers, body).await
}

fn cookie_of(r: &Resp) -> String {
    r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn login(s: &Setup, level: Level) -> String {
    let sent = begin(s, &level.to_string(), "/app").await;
    let r = post_acs(s, &response_for(&sent, level, |_| {}), &sent.relay).await;
    assert_eq!(r.status, 303, "{}", r.text());
    cookie_of(&r)
}

/// `/proc/<pid>/task/<tid>/<file>` of each thread still there.
fn task_files(pid: u32, file: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join(file)).ok())
        .collect()
}

/// The nice value of each thread of process `pid` whose name starts with `comm_prefix`
/// (from `/proc/<pid>/task/*/stat`).
fn thread_nice(pid: u32, comm_prefix: &str) -> Vec<i64> {
    task_files(pid, "stat")
        .into_iter()
        .filter_map(|stat| {
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            // Fields after the name start at the third (state); nice is the 19th.
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            comm.starts_with(comm_prefix).then_some(nice)
        })
        .collect()
}

/// The CPUs a thread may run on (`Cpus_allowed_list` of its status: `0-3,6`), ascending.
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The CPUs each thread whose name starts with `comm_prefix` may run on.
fn thread_cpus(pid: u32, comm_prefix: &str) -> Vec<Vec<usize>> {
    task_files(pid, "status")
        .into_iter()
        .filter(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .is_some_and(|n| n.trim().starts_with(comm_prefix))
        })
        .map(|st| cpus_allowed(&st))
        .collect()
}

/// `server.login_cpus`: the login threads run on those CPUs only, the workers (one per
/// CPU left) on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cpus_keep_the_login_threads_and_the_workers_apart() {
    let allowed = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let Some((&login_cpu, others)) = allowed.split_last().filter(|(_, o)| !o.is_empty()) else {
        // One CPU: nothing to keep apart; the setting is refused (src/server/cpus.rs).
        return;
    };
    let up = upstreams::echo().await;
    let s = start_text(&format!(
        "server.login_cpus = [{login_cpu}]\n{}",
        config(up, SPID_FILE, "")
    ));
    let cookie = login(&s, Level::SpidL2).await;
    assert!(cookie.starts_with("__Host-varco="));
    let workers = thread_cpus(s.gw.pid(), "varco-worker-");
    let login_threads = thread_cpus(s.gw.pid(), "varco-login");
    // One worker per CPU left, within the process's CPU budget (a quota).
    let budget = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        workers.len(),
        others.len().min(budget),
        "one worker per CPU left"
    );
    assert!(!login_threads.is_empty());
    assert!(workers.iter().all(|c| c == others), "{workers:?}");
    assert!(
        login_threads.iter().all(|c| c == &[login_cpu]),
        "{login_threads:?}"
    );

    // More workers than the CPUs left: they share those CPUs, and the log says so.
    let up = upstreams::echo().await;
    let s = start_text(&format!(
        "server.login_cpus = [{login_cpu}]\nserver.workers = {}\n{}",
        others.len() + 1,
        config(up, SPID_FILE, "")
    ));
    assert!(
        s.gw.wait_log(|l| l.contains("more request workers than CPUs left"))
            .is_some(),
        "{}",
        s.gw.logs().join("\n")
    );
    // The workers start one after another; wait for all of them.
    let mut workers = thread_cpus(s.gw.pid(), "varco-worker-");
    for _ in 0..100 {
        if workers.len() > others.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        workers = thread_cpus(s.gw.pid(), "varco-worker-");
    }
    assert_eq!(workers.len(), others.len() + 1);
    assert!(workers.iter().all(|c| c == others), "{workers:?}");
}

/// `server.login_threads_nice = 0`: the login threads run as the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_threads_at_nice_zero_run_as_the_workers() {
    let up = upstreams::echo().await;
    let s = start_text(&format!(
        "server.login_threads_nice = 0\n{}",
        config(up, SPID_FILE, "")
    ));
    let cookie = login(&s, Level::SpidL2).await;
    assert!(cookie.starts_with("__Host-varco="));
    let workers = thread_nice(s.gw.pid(), "varco-worker-");
    let login_threads = thread_nice(s.gw.pid(), "varco-login");
    assert!(!workers.is_empty() && !login_threads.is_empty());
    assert!(
        login_threads.iter().all(|&n| n == workers[0]),
        "{login_threads:?}, workers at {}",
        workers[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spid_login_reaches_the_upstream_with_the_verified_identity() {
    let up = upstreams::echo().await;
    let s = start(up, "");
    // A browser without a session is sent to the chooser, which lists the IdP.
    let r = request("GET", &s.gw.url("/app?x=1"), &[BROWSER], "").await;
    assert_eq!(r.status, 302);
    let chooser = r.headers["location"].to_str().unwrap().to_string();
    let page = request("GET", &s.gw.url(&chooser), &[BROWSER], "").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("Entra con SPID"), "{html}");
    assert!(html.contains("IdP di prova"));
    assert!(html.contains(&format!("value=\"{IDP}\"")));

    let sent = begin(&s, "SpidL2", "/app?x=1").await;
    assert_eq!(sent.level, Level::SpidL2);
    let xml = response_for(&sent, Level::SpidL2, |_| {});
    let r = post_acs(&s, &xml, &sent.relay).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/app?x=1");
    let cookie = cookie_of(&r);
    assert!(cookie.starts_with("__Host-varco="));
    // The login's signatures ran on the login threads, which yield to the workers: 19
    // steps of nice below them (`server.login_threads_nice`'s default; at most 19).
    let nice_of = |prefix: &str| thread_nice(s.gw.pid(), prefix);
    let workers = nice_of("varco-worker-");
    assert!(!workers.is_empty(), "no worker thread");
    assert!(workers.iter().all(|&n| n == workers[0]), "{workers:?}");
    let expected = (workers[0] + 19).min(19);
    let login_threads = nice_of("varco-login");
    assert!(!login_threads.is_empty(), "no login thread after a login");
    assert!(
        login_threads.iter().all(|&n| n == expected),
        "{login_threads:?}, workers at {}",
        workers[0]
    );

    let r = request(
        "GET",
        &s.gw.url("/app?x=1"),
        &[("cookie", &cookie), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.echoed("x-varco-assertion").pop().unwrap();
    let jwks = request("GET", &s.gw.url("/_varco/jwks.json"), &[], "").await;
    let jwks = varco::assertion::verify::parse_jwks(&jwks.body).unwrap();
    let claims = varco::assertion::verify::verify(
        &token,
        &jwks,
        &varco::assertion::verify::Expected {
            audience: "app",
            issuer: Some("https://gw.test/"),
            method: Some("GET"),
            url: None,
            leeway: 5,
        },
    )
    .unwrap();
    assert_eq!(claims.sub, "RSSMRA80A01H501U");
    assert_eq!(claims.amr, "spid");
    assert_eq!(claims.acr, "https://www.spid.gov.it/SpidL2");
    assert_eq!(claims.idp, IDP);
    assert_eq!(claims.given_name, "Mario");

    // The same answer again: its request was consumed.
    let again = post_acs(&s, &xml, &sent.relay).await;
    assert_eq!(again.status, 400);
    assert!(again.text().contains("già usata"), "{}", again.text());
    assert!(
        s.gw.wait_log(|l| l.contains("no pending request"))
            .is_some()
    );
    let logs = s.gw.logs().join("\n");
    // No SAML XML or base64 message in the logs.
    assert!(!logs.contains("<saml"), "XML in logs");
    assert!(!logs.contains("SAMLResponse="), "message in logs");
    assert!(!logs.contains(&cookie[13..]), "cookie in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_forged_and_replayed_answers_are_refused_and_change_nothing() {
    let up = upstreams::echo().await;
    let s = start(up, "");
    // Unsolicited: no request of ours.
    let ghost = Sent {
        request_id: "_never_sent".into(),
        relay: "x".into(),
        level: Level::SpidL2,
    };
    let r = post_acs(&s, &response_for(&ghost, Level::SpidL2, |_| {}), "x").await;
    assert_eq!(r.status, 400);
    assert!(r.headers.get("set-cookie").is_none());

    // Signed by a key that is not in the IdP's metadata.
    let sent = begin(&s, "SpidL2", "/app").await;
    let foreign = foreign_keys();
    let attributes = vec![("fiscalNumber", "TINIT-RSSMRA80A01H501U".to_string())];
    let forged = signed_response(
        &ResponseParams {
            profile: Profile::Spid,
            idp_entity_id: IDP,
            sp_entity_id: SP,
            acs_url: "https://gw.test/_varco/saml/acs",
            in_response_to: &sent.request_id,
            level: Level::SpidL2,
            now: now(),
            error_code: None,
            attributes: &attributes,
            assertion_id: None,
        },
        &foreign.key,
        &idp_keys().cert,
    )
    .unwrap();
    let r = post_acs(&s, &forged, &sent.relay).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.headers.get("set-cookie").is_none());
    assert!(
        s.gw.wait_log(|l| l.contains("saml_login_refused")
            && l.contains("not valid for any trusted certificate"))
            .is_some(),
        "{}",
        s.gw.logs().join("\n")
    );

    // A wrong RelayState, and malformed input.
    let sent = begin(&s, "SpidL2", "/app").await;
    let r = post_acs(&s, &response_for(&sent, Level::SpidL2, |_| {}), "other").await;
    assert_eq!(r.status, 400);
    let r = request(
        "POST",
        &s.gw.url("/_varco/saml/acs"),
        &[FORM, BROWSER],
        "SAMLResponse=%%%not-base64",
    )
    .await;
    assert_eq!(r.status, 400);
    let doctype = base64::engine::general_purpose::STANDARD
        .encode("<!DOCTYPE x [<!ENTITY a \"b\">]><samlp:Response/>");
    let r = request(
        "POST",
        &s.gw.url("/_varco/saml/acs"),
        &[FORM, BROWSER],
        format!(
            "SAMLResponse={}",
            form_urlencoded::byte_serialize(doctype.as_bytes()).collect::<String>()
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request("GET", &s.gw.url("/_varco/saml/acs"), &[BROWSER], "").await;
    assert_eq!(r.status, 405);

    // The same Assertion ID answering two requests: the second is a replay.
    let first = begin(&s, "SpidL2", "/app").await;
    let second = begin(&s, "SpidL2", "/app").await;
    let a = response_for(&first, Level::SpidL2, |p| p.assertion_id = Some("_fixed1"));
    let b = response_for(&second, Level::SpidL2, |p| p.assertion_id = Some("_fixed1"));
    assert_eq!(post_acs(&s, &a, &first.relay).await.status, 303);
    let r = post_acs(&s, &b, &second.relay).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("già stata usata"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_idp_error_code_has_its_own_page_and_status() {
    use varco::saml::status::IdpError;
    let up = upstreams::echo().await;
    let s = start(up, "");
    let mut seen = BTreeMap::new();
    for (code, err) in [
        ("nr19", IdpError::WrongCredentials),
        ("nr20", IdpError::NoCredentialsAtLevel),
        ("nr21", IdpError::Timeout),
        ("nr22", IdpError::ConsentDenied),
        ("nr23", IdpError::IdentityLocked),
        ("nr25", IdpError::Cancelled),
        ("nr30", IdpError::WrongIdentityType),
    ] {
        let sent = begin(&s, "SpidL2", "/app").await;
        let xml = response_for(&sent, Level::SpidL2, |p| p.error_code = Some(code));
        let r = post_acs(&s, &xml, &sent.relay).await;
        assert_eq!(
            r.status,
            varco::error::LoginFailure::from(err).status.as_u16(),
            "{code}"
        );
        assert!(matches!(r.status, 400 | 401 | 403), "{code}: {}", r.status);
        let (it, en) = err.message();
        let html = r.text();
        let escaped_it = varco::pages::escape_html(it);
        assert!(html.contains(&escaped_it), "{code}: {html}");
        assert!(html.contains(&varco::pages::escape_html(en)), "{code}");
        assert!(r.headers.get("set-cookie").is_none());
        seen.insert(it, code);
        // JSON clients get the code.
        let sent = begin(&s, "SpidL2", "/app").await;
        let xml = response_for(&sent, Level::SpidL2, |p| p.error_code = Some(code));
        let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
        let binding = s.binding(&sent.relay).unwrap();
        let r = request(
            "POST",
            &s.gw.url("/_varco/saml/acs"),
            &[
                FORM,
                ("accept", "application/json"),
                (binding.0, binding.1.as_str()),
            ],
            format!(
                "SAMLResponse={}&RelayState={}",
                form_urlencoded::byte_serialize(b64.as_bytes()).collect::<String>(),
                sent.relay
            ),
        )
        .await;
        assert_eq!(r.json()["error"], format!("idp_{code}"));
    }
    assert_eq!(seen.len(), 7, "every code has its own message");
    assert!(s.gw.wait_log(|l| l.contains("idp_nr23")).is_some());
}

/// A route whose level is in its policy: the first login, through the chooser, asks the
/// IdP for that level at once, and its session opens the route (one login, no step-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_login_through_the_chooser_asks_for_the_policys_level() {
    let up = upstreams::echo().await;
    let s = start(
        up,
        r#"
[[route]]
path = "/fascicolo"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL3"
"#,
    );
    let r = request("GET", &s.gw.url("/fascicolo/x"), &[BROWSER], "").await;
    assert_eq!(r.status, 302);
    let chooser = r.headers["location"].to_str().unwrap().to_string();
    assert!(chooser.ends_with("level=SpidL3"), "{chooser}");
    let page = request("GET", &s.gw.url(&chooser), &[BROWSER], "").await;
    let html = page.text();
    // The IdP's form carries the level on to the AuthnRequest.
    assert!(html.contains("name=\"level\" value=\"SpidL3\""), "{html}");
    assert!(html.contains("value=\"/fascicolo/x\""), "{html}");
    let sent = begin(&s, "SpidL3", "/fascicolo/x").await;
    assert_eq!(sent.level, Level::SpidL3);
    let r = post_acs(&s, &response_for(&sent, Level::SpidL3, |_| {}), &sent.relay).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/fascicolo/x");
    let cookie = cookie_of(&r);
    let r = request(
        "GET",
        &s.gw.url("/fascicolo/x"),
        &[BROWSER, ("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "one login opens the route: {}", r.text());
    // Counted once the session exists.
    let metrics = request("GET", &s.gw.url("/_varco/metrics"), &[], "")
        .await
        .text();
    assert!(
        metrics.contains("varco_saml_logins_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_above_the_session_level_asks_for_a_new_login_at_its_level() {
    let up = upstreams::echo().await;
    let s = start(
        up,
        r#"
[[route]]
path = "/alto"
upstream = "app"
public = false
min_level = "SpidL3"
"#,
    );
    let cookie = login(&s, Level::SpidL2).await;
    let ok = request("GET", &s.gw.url("/app"), &[("cookie", &cookie)], "").await;
    assert_eq!(ok.status, 200);
    // Browser: to the chooser with the level; API: 401 naming it.
    let r = request(
        "GET",
        &s.gw.url("/alto/x"),
        &[BROWSER, ("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 302);
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert!(loc.contains("level=SpidL3"), "{loc}");
    let page = request("GET", &s.gw.url(&loc), &[BROWSER], "").await;
    assert!(page.text().contains("value=\"SpidL3\""));
    assert!(page.text().contains("livello più alto"));
    let r = request(
        "GET",
        &s.gw.url("/alto/x"),
        &[("accept", "application/json"), ("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("level=SpidL3")
    );
    // An answer below the requested level is refused (403) ...
    let sent = begin(&s, "SpidL3", "/alto/x").await;
    assert_eq!(sent.level, Level::SpidL3);
    let r = post_acs(&s, &response_for(&sent, Level::SpidL2, |_| {}), &sent.relay).await;
    assert_eq!(r.status, 403);
    // ... one at the level opens the route.
    let sent = begin(&s, "SpidL3", "/alto/x").await;
    let r = post_acs(&s, &response_for(&sent, Level::SpidL3, |_| {}), &sent.relay).await;
    assert_eq!(r.status, 303);
    let high = cookie_of(&r);
    let r = request("GET", &s.gw.url("/alto/x"), &[("cookie", &high)], "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_metadata_is_served_signed_and_printed_by_the_command() {
    let up = upstreams::echo().await;
    let s = start(up, "");
    let r = request("GET", &s.gw.url("/_varco/saml/metadata"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/samlmetadata+xml");
    let xml = r.text();
    let v = varco::saml::xmldsig::verify_signed_element(
        &xml,
        varco::saml::metadata::MD_NS,
        "EntityDescriptor",
        std::slice::from_ref(&s.sp_cert),
    )
    .expect("signed with the SP key");
    assert!(
        v.xml
            .contains("Location=\"https://gw.test/_varco/saml/acs\"")
    );
    assert!(v.xml.contains("<spid:IPACode>c_h501</spid:IPACode>"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["saml", "metadata", "--config"])
        .arg(s.gw.dir.path().join("varco.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("entityID=\"https://sp.test/\""));
    assert!(printed.contains("<spid:Public/>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_logout_both_ways_always_ends_the_local_session() {
    let up = upstreams::echo().await;
    let ws = upstreams::upgrade_echo().await;
    let s = start(
        up,
        &format!(
            "[upstream.ws]\nurl = \"http://{ws}\"\n[[route]]\npath = \"/ws\"\nupstream = \"ws\"\npublic = false\n"
        ),
    );
    let idp = idp_keys();
    let idp_cert = [CertificateDer::from(idp.cert.as_slice())];
    let sp_cert = [CertificateDer::from(s.sp_cert.as_slice())];

    // SP-initiated: local session ends, the browser goes to the IdP with a signed request.
    let cookie = login(&s, Level::SpidL2).await;
    let r = request(
        "POST",
        &s.gw.url("/_varco/logout"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&format!("{IDP}slo?")));
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = request("GET", &s.gw.url("/app"), &[("cookie", &cookie)], "").await;
    assert_eq!(after.status, 401);
    let msg = redirect::verify_query(loc.split_once('?').unwrap().1, &sp_cert).unwrap();
    assert!(msg.xml.contains("<samlp:LogoutRequest"));
    let doc = roxmltree::Document::parse(&msg.xml).unwrap();
    let req_id = doc.root_element().attribute("ID").unwrap().to_string();
    // The IdP answers with a signed LogoutResponse.
    let answer = format!(
        "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_lr1\" Version=\"2.0\" IssueInstant=\"2026-01-01T00:00:00Z\" Destination=\"https://gw.test/_varco/saml/slo\" InResponseTo=\"{req_id}\"><saml:Issuer>{IDP}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status></samlp:LogoutResponse>"
    );
    let q = redirect::sign_query(
        MessageKind::Response,
        &answer,
        msg.relay_state.as_deref(),
        &idp.rsa(),
    )
    .unwrap();
    let r = request(
        "GET",
        &s.gw.url(&format!("/_varco/saml/slo?{q}")),
        &[BROWSER],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Sei uscito"));
    // The same answer twice, or one signed by another key: refused.
    let r = request(
        "GET",
        &s.gw.url(&format!("/_varco/saml/slo?{q}")),
        &[BROWSER],
        "",
    )
    .await;
    assert_eq!(r.status, 400);

    // IdP-initiated: the browser's session of this IdP ends; a signed answer goes back.
    let sent = begin(&s, "SpidL2", "/app").await;
    let xml = response_for(&sent, Level::SpidL2, |_| {});
    let r = post_acs(&s, &xml, &sent.relay).await;
    assert_eq!(r.status, 303);
    let cookie = cookie_of(&r);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let name_id = doc
        .descendants()
        .find(|n| n.tag_name().name() == "NameID")
        .and_then(|n| n.text())
        .unwrap()
        .to_string();
    let logout_request = |id: &str, name_id: &str, instant: i64| {
        format!(
            "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"https://gw.test/_varco/saml/slo\"><saml:Issuer>{IDP}</saml:Issuer><saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:transient\" NameQualifier=\"{IDP}\">{name_id}</saml:NameID></samlp:LogoutRequest>",
            varco::saml::time::format_utc(instant)
        )
    };
    let slo = async |q: &str| {
        request(
            "GET",
            &s.gw.url(&format!("/_varco/saml/slo?{q}")),
            &[BROWSER, ("cookie", &cookie)],
            "",
        )
        .await
    };
    // Signed by another key, stale, or for another subject: refused or without effect.
    let forged = redirect::sign_query(
        MessageKind::Request,
        &logout_request("_f1", &name_id, now()),
        None,
        &foreign_keys().rsa(),
    )
    .unwrap();
    assert_eq!(slo(&forged).await.status, 400);
    let stale = redirect::sign_query(
        MessageKind::Request,
        &logout_request("_f2", &name_id, now() - 3600),
        None,
        &idp.rsa(),
    )
    .unwrap();
    assert_eq!(slo(&stale).await.status, 400);
    let other = redirect::sign_query(
        MessageKind::Request,
        &logout_request("_f3", "_someone_else", now()),
        None,
        &idp.rsa(),
    )
    .unwrap();
    assert_eq!(slo(&other).await.status, 302);
    let still = request("GET", &s.gw.url("/app"), &[("cookie", &cookie)], "").await;
    assert_eq!(still.status, 200, "these logouts change nothing");
    let q = redirect::sign_query(
        MessageKind::Request,
        &logout_request("_idplr", &name_id, now()),
        Some("rs1"),
        &idp.rsa(),
    )
    .unwrap();
    // A WebSocket opened under the session (issue 11, item 12): the SLO ends it too.
    let (mut tunnel, head) = common::websocket_to(s.gw.addr(), "/ws", Some(&cookie));
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!common::tunnel_closed_within(
        &mut tunnel,
        Duration::from_millis(300)
    ));
    let r = slo(&q).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(
        common::tunnel_closed_within(&mut tunnel, Duration::from_secs(2)),
        "the tunnel outlived the single logout"
    );
    let loc = r.headers["location"].to_str().unwrap().to_string();
    let answer = redirect::verify_query(loc.split_once('?').unwrap().1, &sp_cert).unwrap();
    assert!(answer.xml.contains("InResponseTo=\"_idplr\""));
    assert!(answer.xml.contains("status:Success"));
    assert_eq!(answer.relay_state.as_deref(), Some("rs1"));
    let gone = request("GET", &s.gw.url("/app"), &[("cookie", &cookie)], "").await;
    assert_eq!(gone.status, 401);
    // The same request again is a replay.
    assert_eq!(slo(&q).await.status, 400);
    let _ = idp_cert;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_answer_counts_only_in_the_browser_that_asked() {
    let up = upstreams::echo().await;
    let (sp_cert_pem, sp_key_pem) = sp_keys();
    let meta = idp_metadata(
        IDP,
        &format!("{IDP}sso"),
        &format!("{IDP}slo"),
        &idp_keys().cert,
        "IdP",
    );
    // No `browser_binding` key: the binding is on (login CSRF defence by default).
    let cfg = config(up, SPID_FILE, "");
    assert!(!cfg.contains("browser_binding"));
    let gw = Gateway::start_with(
        &cfg,
        &[
            ("sp.pem", &sp_cert_pem),
            ("sp-key.pem", &sp_key_pem),
            ("idp.xml", &meta),
        ],
    );
    let s = Setup::new(gw, &sp_cert_pem);
    let body = format!(
        "idp={}&return=%2Fapp&level=SpidL2",
        form_urlencoded::byte_serialize(IDP.as_bytes()).collect::<String>()
    );
    let start = async || {
        let r = request(
            "POST",
            &s.gw.url("/_varco/saml/login"),
            &[FORM],
            body.clone(),
        )
        .await;
        assert_eq!(r.status, 302);
        let set = r.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("SameSite=None") && set.contains("Path=/_varco/saml/"),
            "{set}"
        );
        let loc = r.headers["location"].to_str().unwrap().to_string();
        let msg = redirect::verify_query(
            loc.split_once('?').unwrap().1,
            &[CertificateDer::from(s.sp_cert.as_slice())],
        )
        .unwrap();
        let facts = parse_authn_request(&msg.xml).unwrap();
        let sent = Sent {
            request_id: facts.id,
            relay: msg.relay_state.unwrap(),
            level: facts.level,
        };
        (sent, set.split(';').next().unwrap().to_string())
    };
    let post = async |sent: &Sent, cookie: Option<&str>| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(response_for(
            sent,
            Level::SpidL2,
            |_| {},
        ));
        let mut headers = vec![FORM, BROWSER];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        request(
            "POST",
            &s.gw.url("/_varco/saml/acs"),
            &headers,
            format!(
                "SAMLResponse={}&RelayState={}",
                form_urlencoded::byte_serialize(b64.as_bytes()).collect::<String>(),
                sent.relay
            ),
        )
        .await
    };
    // The attacker's answer posted from a browser without (or with another) binding cookie.
    let (sent, _) = start().await;
    assert_eq!(post(&sent, None).await.status, 400);
    let (sent, _) = start().await;
    let (_, other) = start().await;
    assert_eq!(post(&sent, Some(&other)).await.status, 400);
    // The browser that asked.
    let (sent, mine) = start().await;
    assert_eq!(post(&sent, Some(&mine)).await.status, 303);
    drop(s);

    // `browser_binding = false` is an explicit opt-out: no cookie, and an answer counts
    // wherever it is posted.
    let cfg = config(up, SPID_FILE, "").replace(
        "key = \"@DIR@/sp-key.pem\"",
        "key = \"@DIR@/sp-key.pem\"\nbrowser_binding = false",
    );
    let gw = Gateway::start_with(
        &cfg,
        &[
            ("sp.pem", &sp_cert_pem),
            ("sp-key.pem", &sp_key_pem),
            ("idp.xml", &meta),
        ],
    );
    let s = Setup::new(gw, &sp_cert_pem);
    let sent = begin(&s, "SpidL2", "/app").await;
    assert!(
        s.binding(&sent.relay).is_none(),
        "no binding cookie when opted out"
    );
    let r = post_acs(&s, &response_for(&sent, Level::SpidL2, |_| {}), &sent.relay).await;
    assert_eq!(r.status, 303, "{}", r.text());
}

fn run_check(cfg_text: &str, files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in files {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    let text = cfg_text.replace("@DIR@", &dir.path().display().to_string());
    let path = dir.path().join("varco.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn idps_without_signing_certificate_or_with_weak_keys_stop_the_start() {
    let (sp_cert, sp_key) = sp_keys();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let no_cert = idp_metadata(IDP, "https://idp.test/sso", "https://idp.test/slo", &[], "x")
        .replace(
            &format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                ""
            ),
            "",
        );
    assert!(!no_cert.contains("KeyDescriptor"));
    let (ok, out) = run_check(
        &config(up, SPID_FILE, ""),
        &[
            ("sp.pem", &sp_cert),
            ("sp-key.pem", &sp_key),
            ("idp.xml", &no_cert),
        ],
    );
    assert!(!ok);
    assert!(out.contains("no signing certificate"), "{out}");
    let weak = Keys::from_pem(
        include_str!("fixtures/saml/weak-test.crt.pem"),
        include_str!("fixtures/saml/weak-test.key.pem"),
    );
    let weak_meta = idp_metadata(
        IDP,
        "https://idp.test/sso",
        "https://idp.test/slo",
        &weak.cert,
        "x",
    );
    let (ok, out) = run_check(
        &config(up, SPID_FILE, ""),
        &[
            ("sp.pem", &sp_cert),
            ("sp-key.pem", &sp_key),
            ("idp.xml", &weak_meta),
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("1024-bit key, below the minimum of 2048"),
        "{out}"
    );
    let _ = weak.cert_pem;
    // A URL that cannot be fetched, without a last good copy: a clear start-up error.
    let fed = r#"
[[saml.federation]]
name = "spid"
profile = "spid"
metadata_url = "http://127.0.0.1:9/entities-idp"
metadata_signing_certs = ["@DIR@/registry.pem"]
cache_dir = "@DIR@"
"#;
    let (ok, out) = run_check(
        &config(up, fed, ""),
        &[
            ("sp.pem", &sp_cert),
            ("sp-key.pem", &sp_key),
            ("registry.pem", &idp_keys().cert_pem),
        ],
    );
    assert!(!ok);
    assert!(out.contains("could not be fetched"), "{out}");
    assert!(out.contains("no last good copy"), "{out}");
}

/// A metadata server whose answer the test can change: `Some(body)` or a 500.
async fn metadata_server(body: std::sync::Arc<std::sync::Mutex<Option<String>>>) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let current = body.lock().unwrap().clone();
                    async move {
                        let mut resp = http::Response::new(Full::new(bytes::Bytes::from(
                            current.clone().unwrap_or_default(),
                        )));
                        if current.is_none() {
                            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// The aggregate, signed by the registry key (the test IdP key plays the registry).
fn signed_aggregate(entities: &[String]) -> String {
    signed_aggregate_until(entities, now() + 86_400)
}

fn signed_aggregate_until(entities: &[String], valid_until: i64) -> String {
    let keys = idp_keys();
    let unsigned = format!(
        "<md:EntitiesDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" ID=\"_agg\" validUntil=\"{}\">{}{}</md:EntitiesDescriptor>",
        varco::saml::time::format_utc(valid_until),
        varco::saml::xmldsig::signature_template("_agg", &keys.cert),
        entities.concat()
    );
    varco::saml::xmldsig::sign_enveloped(&unsigned, &keys.key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_aggregate_is_fetched_refreshed_and_its_last_good_copy_kept() {
    let up = upstreams::echo().await;
    let (sp_cert, sp_key) = sp_keys();
    let idp = idp_keys();
    let entity = |id: &str, name: &str| {
        idp_metadata(
            id,
            &format!("{id}sso"),
            &format!("{id}slo"),
            &idp.cert,
            name,
        )
    };
    let body = std::sync::Arc::new(std::sync::Mutex::new(Some(signed_aggregate(&[entity(
        "https://a.test/",
        "IdP Alfa",
    )]))));
    let server = metadata_server(body.clone()).await;
    let fed = format!(
        r#"
[[saml.federation]]
name = "spid"
profile = "spid"
metadata_url = "http://{server}/entities-idp"
metadata_signing_certs = ["@DIR@/registry.pem"]
cache_dir = "@DIR@"
refresh_interval = "1s"
"#
    );
    let files = [
        ("sp.pem", sp_cert.as_str()),
        ("sp-key.pem", sp_key.as_str()),
        ("registry.pem", idp.cert_pem.as_str()),
    ];
    let gw = Gateway::start_with(&config(up, &fed, ""), &files);
    let chooser = || async {
        request("GET", &gw.url("/_varco/login"), &[BROWSER], "")
            .await
            .text()
    };
    assert!(chooser().await.contains("IdP Alfa"));
    // Rotation: the registry now lists another IdP; picked up without a restart.
    *body.lock().unwrap() = Some(signed_aggregate(&[entity("https://b.test/", "IdP Beta")]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !chooser().await.contains("IdP Beta") {
        assert!(std::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An unsigned (or badly signed) aggregate is not taken; neither is a failing fetch.
    *body.lock().unwrap() = Some(format!(
        "<md:EntitiesDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\">{}</md:EntitiesDescriptor>",
        entity("https://evil.test/", "IdP Evil")
    ));
    assert!(
        gw.wait_log(|l| l.contains("refresh failed") && l.contains("not signed"))
            .is_some(),
        "{}",
        gw.logs().join("\n")
    );
    *body.lock().unwrap() = None;
    assert!(
        gw.wait_log(|l| l.contains("the server answered 500"))
            .is_some()
    );
    let page = chooser().await;
    assert!(
        page.contains("IdP Beta") && !page.contains("IdP Evil"),
        "{page}"
    );
    let metrics = request("GET", &gw.url("/_varco/metrics"), &[], "")
        .await
        .text();
    assert!(
        metrics.contains("varco_saml_metadata_stale{federation=\"spid\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"failed\""));
    // A restart while the registry is down starts from the last good copy on disk.
    let cached = std::fs::read_to_string(gw.dir.path().join("spid-metadata.xml")).unwrap();
    assert!(cached.contains("https://b.test/"));
    let files2 = [
        ("sp.pem", sp_cert.as_str()),
        ("sp-key.pem", sp_key.as_str()),
        ("registry.pem", idp.cert_pem.as_str()),
        ("spid-metadata.xml", cached.as_str()),
    ];
    let gw2 = Gateway::start_with(&config(up, &fed, ""), &files2);
    assert!(
        gw2.logs()
            .iter()
            .any(|l| l.contains("using the last good copy")),
        "{}",
        gw2.logs().join("\n")
    );
    let page = request("GET", &gw2.url("/_varco/login"), &[BROWSER], "")
        .await
        .text();
    assert!(page.contains("IdP Beta"));
    drop(gw2);

    // A signed but older copy (replayed by whoever sits on the path) is not installed.
    *body.lock().unwrap() = Some(signed_aggregate_until(
        &[entity("https://old.test/", "IdP Vecchio")],
        now() + 3600,
    ));
    assert!(
        gw.wait_log(|l| l.contains("older than the copy in use"))
            .is_some(),
        "{}",
        gw.logs().join("\n")
    );
    assert!(!chooser().await.contains("IdP Vecchio"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_last_good_copy_is_no_longer_trusted() {
    let up = upstreams::echo().await;
    let (sp_cert, sp_key) = sp_keys();
    let idp = idp_keys();
    let entity = idp_metadata(
        "https://a.test/",
        "https://a.test/sso",
        "https://a.test/slo",
        &idp.cert,
        "IdP Alfa",
    );
    let body = std::sync::Arc::new(std::sync::Mutex::new(Some(signed_aggregate_until(
        &[entity],
        now() + 3,
    ))));
    let server = metadata_server(body.clone()).await;
    let fed = format!(
        r#"
[[saml.federation]]
name = "spid"
profile = "spid"
metadata_url = "http://{server}/entities-idp"
metadata_signing_certs = ["@DIR@/registry.pem"]
cache_dir = "@DIR@"
refresh_interval = "1s"
"#
    );
    let gw = Gateway::start_with(
        &config(up, &fed, ""),
        &[
            ("sp.pem", sp_cert.as_str()),
            ("sp-key.pem", sp_key.as_str()),
            ("registry.pem", idp.cert_pem.as_str()),
        ],
    );
    let chooser = async || {
        request("GET", &gw.url("/_varco/login"), &[BROWSER], "")
            .await
            .text()
    };
    assert!(chooser().await.contains("IdP Alfa"));
    *body.lock().unwrap() = None;
    assert!(
        gw.wait_log(|l| l.contains("last good copy has expired"))
            .is_some(),
        "{}",
        gw.logs().join("\n")
    );
    assert!(!chooser().await.contains("IdP Alfa"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_binding_sends_an_escaped_form_with_an_enveloped_signature() {
    let up = upstreams::echo().await;
    let (sp_cert_pem, sp_key_pem) = sp_keys();
    let meta = idp_metadata(
        IDP,
        &format!("{IDP}sso?a=1&b=\"2\""),
        &format!("{IDP}slo"),
        &idp_keys().cert,
        "IdP di prova",
    );
    let cfg = config(up, SPID_FILE, "").replace(
        "key = \"@DIR@/sp-key.pem\"",
        "key = \"@DIR@/sp-key.pem\"\nbinding = \"post\"",
    );
    let gw = Gateway::start_with(
        &cfg,
        &[
            ("sp.pem", &sp_cert_pem),
            ("sp-key.pem", &sp_key_pem),
            ("idp.xml", &meta),
        ],
    );
    let body = format!(
        "idp={}&return=%2Fapp&level=SpidL2",
        form_urlencoded::byte_serialize(IDP.as_bytes()).collect::<String>()
    );
    let r = request("POST", &gw.url("/_varco/saml/login"), &[FORM], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    // The IdP URL is escaped in the form; the page works without JavaScript.
    assert!(
        html.contains("action=\"https://idp.test/sso?a=1&amp;b=&quot;2&quot;\""),
        "{html}"
    );
    assert!(html.contains("<button type=\"submit\">"));
    let marker = "name=\"SAMLRequest\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let b64 = &html[start..start + html[start..].find('"').unwrap()];
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let sp_cert = CertificateDer::from_pem_slice(sp_cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let v = varco::saml::xmldsig::verify_signed_element(
        &xml,
        "urn:oasis:names:tc:SAML:2.0:protocol",
        "AuthnRequest",
        &[sp_cert],
    )
    .expect("the POST AuthnRequest carries the SP's enveloped signature");
    assert!(v.xml.contains("ForceAuthn=\"true\""));
    assert!(xml.contains("http://www.w3.org/2001/04/xmlenc#sha256"));
    assert!(!xml.contains("xmldsig#sha1"));
}

/// Starting a login signs a request and keeps state: a client address may start only
/// `max_logins_per_address` per window (then 429). An IdP is never asked for the PIN's
/// `Legacy` level: SpidL1 at least.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_starts_are_limited_per_address_and_never_below_spid_l1() {
    let up = upstreams::echo().await;
    let s = start_text(&config(up, SPID_FILE, "").replace(
        "[saml]\n",
        "[saml]\nmax_logins_per_address = 3\nlogin_rate_window = \"10m\"\n",
    ));
    let sent = begin(&s, "Legacy", "/").await;
    assert_eq!(sent.level, Level::SpidL1);
    begin(&s, "SpidL2", "/").await;
    begin(&s, "SpidL1", "/").await;
    let body = format!(
        "idp={}&return=%2F",
        form_urlencoded::byte_serialize(IDP.as_bytes()).collect::<String>()
    );
    let r = request(
        "POST",
        &s.gw.url("/_varco/saml/login"),
        &[FORM, ("accept", "application/json")],
        body,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_attempts");
    assert_eq!(r.headers["retry-after"], "600");
    assert!(
        s.gw.wait_log(|l| l.contains("saml_login_rate_limited"))
            .is_some()
    );

    // The limit is per client address and nothing else (issue 11, item 1): many other
    // addresses, each at the limit, all start their logins while 127.0.0.1 is limited;
    // one of them over it is limited and the rest are not.
    let body = format!(
        "idp={}&return=%2F",
        form_urlencoded::byte_serialize(IDP.as_bytes()).collect::<String>()
    );
    let post = format!(
        "POST /_varco/saml/login HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let from = |i: u8| std::net::IpAddr::from([127, 0, 0, i]);
    let addr = s.gw.addr();
    let statuses = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for i in 2..=21u8 {
            for _ in 0..3 {
                let answer =
                    common::raw_from(from(i), addr, post.as_bytes(), Duration::from_secs(10));
                out.push((i, common::raw_status(&answer)));
            }
        }
        let over = common::raw_status(&common::raw_from(
            from(2),
            addr,
            post.as_bytes(),
            Duration::from_secs(10),
        ));
        let fresh = common::raw_status(&common::raw_from(
            from(22),
            addr,
            post.as_bytes(),
            Duration::from_secs(10),
        ));
        (out, over, fresh)
    })
    .await
    .unwrap();
    let (each, over, fresh) = statuses;
    assert!(each.iter().all(|(_, st)| *st == 302), "{each:?}");
    assert_eq!(over, 429, "127.0.0.2's fourth start");
    assert_eq!(fresh, 302, "an address never seen before is not limited");
}

/// Sends `head` then trickles `chunk` every `gap` until the gateway answers or closes;
/// returns (status, seconds until the answer, whether the connection then closed).
fn trickle(addr: SocketAddr, head: &str, chunk: &'static [u8], gap: Duration) -> (u16, f64, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let start = std::time::Instant::now();
    let mut writer = s.try_clone().unwrap();
    let feeding = std::thread::spawn(move || {
        for _ in 0..400 {
            std::thread::sleep(gap);
            if writer.write_all(chunk).is_err() {
                break;
            }
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = None;
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                answered.get_or_insert(start.elapsed().as_secs_f64());
            }
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    };
    drop(s);
    let _ = feeding.join();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answered.unwrap_or(f64::INFINITY), closed)
}

/// Bodies the gateway reads itself have a deadline and a minimum rate (issue 11, item 3):
/// a trickling client gets 408 and its connection closed, instead of holding it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_on_the_gateways_own_endpoints_are_cut() {
    let up = upstreams::echo().await;
    let s = start_text(&config(up, SPID_FILE, "").replacen(
        "[[server.listener]]",
        "[server]\nbody_read_timeout = \"1s\"\nbody_read_max = \"3s\"\nbody_min_rate = 500\n[[server.listener]]",
        1,
    ));
    let gw = &s.gw;
    let addr = gw.addr();
    // Each announces a length within its endpoint's limit (a larger one is refused at once).
    let head = |path: &str| {
        let len = if path.ends_with("acs") {
            400_000
        } else {
            4_000
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let (acs, chooser, dev, endless) = tokio::task::spawn_blocking(move || {
        (
            // One byte every 400 ms: cut near the 1 s timeout.
            trickle(
                addr,
                &head("/_varco/saml/acs"),
                b"S",
                Duration::from_millis(400),
            ),
            trickle(
                addr,
                &head("/_varco/saml/login"),
                b"i",
                Duration::from_millis(400),
            ),
            trickle(
                addr,
                &head("/_varco/dev-login"),
                b"u",
                Duration::from_millis(400),
            ),
            // 100 bytes every 100 ms (1000 B/s, above the minimum rate) but never ending:
            // cut at the 3 s maximum.
            trickle(
                addr,
                &head("/_varco/saml/acs"),
                &[b'A'; 100],
                Duration::from_millis(100),
            ),
        )
    })
    .await
    .unwrap();
    for (what, (status, secs, closed), lo, hi) in [
        ("acs", acs, 0.9, 2.5),
        ("chooser", chooser, 0.9, 2.5),
        ("dev login", dev, 0.9, 2.5),
        ("endless acs", endless, 2.9, 5.0),
    ] {
        assert_eq!(status, 408, "{what}");
        assert!((lo..hi).contains(&secs), "{what}: answered after {secs} s");
        assert!(closed, "{what}: the connection stays open");
    }
    // The gateway still serves everyone else.
    let r = request("GET", &gw.url("/_varco/healthz"), &[], "").await;
    assert_eq!(r.status, 200);
}

/// Two replicas sharing a Redis: a login started on A is answered at B (the pending
/// request is in Redis), and an assertion replayed to A after B accepted it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_pending_requests_and_the_replay_cache_through_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = common::Redis::start(port);
    let up = upstreams::echo().await;
    let text = config(up, SPID_FILE, "").replace(
        "[assertion]",
        &format!(
            "[session]\nstore = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:{}/0\"\n[assertion]",
            redis.port
        ),
    );
    let a = start_text(&text);
    let b = start_text(&text);
    let sent = begin(&a, "SpidL2", "/app").await;
    let xml = response_for(&sent, Level::SpidL2, |p| p.assertion_id = Some("_shared1"));
    // The browser's binding cookie from A, the answer posted to B.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&xml);
    let body = format!(
        "SAMLResponse={}&RelayState={}",
        form_urlencoded::byte_serialize(b64.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(sent.relay.as_bytes()).collect::<String>()
    );
    let (k, v) = a.binding(&sent.relay).expect("binding cookie");
    let r = request(
        "POST",
        &b.gw.url("/_varco/saml/acs"),
        &[FORM, BROWSER, (k, v.as_str())],
        body,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    // The session works on A too.
    let r = request("GET", &a.gw.url("/app"), &[("cookie", cookie.as_str())], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The same assertion answering another request of A's: a replay, refused.
    let again = begin(&a, "SpidL2", "/app").await;
    let replayed = response_for(&again, Level::SpidL2, |p| p.assertion_id = Some("_shared1"));
    let r = post_acs(&a, &replayed, &again.relay).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("già stata usata"));
}

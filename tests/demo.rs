//! `varco demo` (what `make demo` runs): development certificates generated on first run,
//! the echo upstream behind the gateway over TLS; and the command line's basics.

mod common;

use common::free_port;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_echo_upstream_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let port = free_port();
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_varco"))
            .args([
                "demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--certs-dir",
            ])
            .arg(&certs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Certificates appear on first run.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !certs.join("server-key.pem").is_file() {
        assert!(Instant::now() < deadline, "no development certificates");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&ca).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));

    let tcp = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("demo not listening: {e}"),
        }
    };
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let base = format!("https://localhost:{port}");

    // Protected: an API client without a session gets 401; the public page is open.
    let get = |path: &str, cookie: Option<&str>| {
        let mut b =
            http::Request::get(format!("{base}{path}")).header("accept", "application/json");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.header("x-varco-assertion", "forged")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = send.send_request(get("/hello", None)).await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = send.send_request(get("/pubblico", None)).await.unwrap();
    assert_eq!(resp.status(), 200);

    // The development login, then the echo upstream verifies the header it received
    // against the gateway's JWKS (fetched over HTTPS with the development CA).
    let login = http::Request::post(format!("{base}/_varco/dev-login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from(
            "user=operatore&return=%2Fhello",
        )))
        .unwrap();
    let resp = send.send_request(login).await.unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let resp = send
        .send_request(get("/hello?x=1", Some(&cookie)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["identity"]["verified"], true, "{}", v["identity"]);
    assert_eq!(v["identity"]["claims"]["roles"][0], "operatore");
    assert!(!String::from_utf8_lossy(&body).contains("forged"));
    // The session cookie is not passed to the upstream.
    assert!(!String::from_utf8_lossy(&body).contains("__Host-varco"));

    // The PIN switch-off with the real dates: Mario Rossi's PIN is refused; the minor's
    // opens the minors' service.
    let code = |key: &str| {
        varco::demo::users::test_users()
            .into_iter()
            .find(|u| u.key == key)
            .unwrap()
            .identity
            .subject
            .as_str()
            .to_string()
    };
    let pin_login = |key: &str, pin: &str| {
        http::Request::post(format!("{base}/_varco/pin/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(http_body_util::Full::new(Bytes::from(format!(
                "codice_fiscale={}&pin={pin}&return=%2Fminori",
                code(key)
            ))))
            .unwrap()
    };
    let [(adult, adult_pin), (minor, minor_pin)] = varco::demo::DEMO_PINS;
    let resp = send
        .send_request(pin_login(adult, adult_pin))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("pin_no_longer_accepted"));
    let resp = send
        .send_request(pin_login(minor, minor_pin))
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let resp = send
        .send_request(get("/minori", Some(&cookie)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["identity"]["claims"]["amr"], "pin");
    let resp = send
        .send_request(get("/hello", Some(&cookie)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn demo_refuses_a_configuration_that_is_not_demo_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(
        &path,
        common::simple_config("127.0.0.1:9".parse().unwrap(), ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["demo", "--certs-dir"])
        .arg(dir.path().join("certs"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode = \"demo\""));
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check-config", "demo"] {
        assert!(help.contains(cmd), "{help}");
    }
}

/// Unescapes what `escape_html` escapes (attribute values of the pages).
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden fields and the action of the first form of `html` that contains `needle`.
fn form_with(html: &str, needle: &str) -> (String, Vec<(String, String)>) {
    let form = html
        .split("<form")
        .skip(1)
        .find(|f| f.contains(needle))
        .unwrap_or_else(|| panic!("no form with {needle} in {html}"));
    let attr = |chunk: &str, name: &str| {
        let start = chunk.find(&format!("{name}=\""))? + name.len() + 2;
        Some(unescape(&chunk[start..start + chunk[start..].find('"')?]))
    };
    let action = attr(form, "action").unwrap();
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|i| Some((attr(i, "name")?, attr(i, "value")?)))
        .collect();
    (action, fields)
}

fn encode(fields: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `varco demo` running on a free port, and an HTTP/1.1 client over TLS (the development
/// CA) that sends requests as a browser's, one at a time.
struct Demo {
    _child: Child,
    gw: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    port: u16,
    base: String,
}

impl Demo {
    /// Starts the demo and waits until `ready_file` exists in its certificate directory
    /// and the gateway answers TLS. The port is chosen free, but the demo's own servers
    /// (IdPs, OP, echo) take random ports too and may take it first: then the demo is
    /// started again on another port.
    async fn start(dir: &std::path::Path, ready_file: &str) -> Demo {
        for attempt in 1..=5 {
            match Self::try_start(dir, ready_file).await {
                Ok(demo) => return demo,
                Err(why) if attempt < 5 => {
                    eprintln!("demo start {attempt}: {why}; again on another port");
                    let _ = std::fs::remove_dir_all(dir.join("certs"));
                }
                Err(why) => panic!("the demo did not start: {why}"),
            }
        }
        unreachable!()
    }

    async fn try_start(dir: &std::path::Path, ready_file: &str) -> Result<Demo, String> {
        let certs = dir.join("certs");
        let port = free_port();
        let mut child = Child(
            Command::new(env!("CARGO_BIN_EXE_varco"))
                .args([
                    "demo",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--certs-dir",
                ])
                .arg(&certs)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !certs.join(ready_file).is_file() {
            if Instant::now() > deadline {
                return Err(format!("no {ready_file}"));
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(format!("the demo exited: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ca = std::fs::read(certs.join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tls = loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(format!("the demo exited: {status}"));
            }
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(tcp) => {
                    match connector
                        .connect(ServerName::try_from("localhost").unwrap(), tcp)
                        .await
                    {
                        Ok(tls) => break tls,
                        // Not the gateway on this port (one of the demo's own servers).
                        Err(e) => return Err(format!("port {port} does not answer TLS: {e}")),
                    }
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(format!("demo not listening: {e}")),
            }
        };
        let (gw, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Ok(Demo {
            _child: child,
            gw,
            port,
            base: format!("https://localhost:{port}"),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: String,
    ) -> (u16, http::HeaderMap, String) {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.port))
            .header("accept", "text/html");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        if method == "POST" {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = b
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        self.gw.ready().await.unwrap();
        let resp = self.gw.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

/// `make demo` end to end: chooser → development IdP (signed AuthnRequest checked there)
/// → signed Response POSTed to the ACS → the echo upstream with the verified identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_a_browser_through_the_real_saml_flow() {
    let body = saml_walk(
        "Entra con SPID",
        "IdP di sviluppo varco",
        "IdP di sviluppo varco",
        "dev-idp-metadata.xml",
    )
    .await;
    assert!(body.contains("BNCGLI85C52H501"), "{body}");
    assert!(body.contains("Verified identity"), "{body}");
    assert!(body.contains("&quot;amr&quot;: &quot;spid&quot;"), "{body}");
    // The chooser asked for SpidL1 (no route level): the IdP answered at that level.
    assert!(body.contains("https://www.spid.gov.it/SpidL1"), "{body}");
}

/// The same with the development CIE IdP: the CIE federation of the demo (CIE profile:
/// ForceAuthn, the CIE attributes), the identity header's method `cie`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_a_browser_through_a_cie_login() {
    let body = saml_walk(
        "Carta d&#39;Identità Elettronica",
        "Entra con CIE",
        "CIE di sviluppo varco",
        "dev-cie-metadata.xml",
    )
    .await;
    assert!(body.contains("BNCGLI85C52H501"), "{body}");
    assert!(body.contains("Verified identity"), "{body}");
    assert!(body.contains("&quot;amr&quot;: &quot;cie&quot;"), "{body}");
}

/// Chooser (the section titled `section`) → its button `button` → a signed AuthnRequest →
/// the page of the IdP named `idp` → the operator → the signed Response POSTed to the ACS
/// → the echo page, returned.
async fn saml_walk(section: &str, button: &str, idp: &str, metadata: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(dir.path(), metadata).await;
    let base = demo.base.clone();
    let mut send = async |method: &str, path: &str, cookie: Option<&str>, body: String| {
        demo.send(method, path, cookie, body).await
    };

    // 1. The chooser lists the development IdP under its section.
    let (status, _, page) = send("GET", "/_varco/login?return=%2Fhello", None, String::new()).await;
    assert_eq!(status, 200);
    assert!(page.contains(section), "{page}");
    let (action, fields) = form_with(&page, button);
    assert_eq!(action, "/_varco/saml/login");
    // 2. A signed AuthnRequest to the IdP (HTTP-Redirect).
    let (status, headers, _) = send("POST", &action, None, encode(&fields)).await;
    assert_eq!(status, 302);
    // The login-binding cookie (SameSite=None, scoped to the SAML endpoints) comes back
    // with the IdP's answer, as a browser sends it.
    let binding = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let sso = headers["location"].to_str().unwrap().to_string();
    assert!(sso.starts_with("http://127.0.0.1:") && sso.contains("/sso?SAMLRequest="));
    // 3. The IdP checked the signature and shows its test users.
    let idp_page = common::request("GET", &sso, &[], "").await;
    assert_eq!(idp_page.status, 200, "{}", idp_page.text());
    assert!(idp_page.text().contains(idp), "{}", idp_page.text());
    let (answer, fields) = form_with(&idp_page.text(), "value=\"operatore\"");
    let idp_origin = &sso[..sso.find("/sso").unwrap()];
    let signed = common::request(
        "POST",
        &format!("{idp_origin}{answer}"),
        &[("content-type", "application/x-www-form-urlencoded")],
        encode(&fields),
    )
    .await;
    assert_eq!(signed.status, 200);
    // 4. The browser POSTs the signed Response to the ACS.
    let (acs, fields) = form_with(&signed.text(), "SAMLResponse");
    assert_eq!(acs, format!("{base}/_varco/saml/acs"));
    let acs_path = acs.strip_prefix(&base).unwrap().to_string();
    let (status, headers, body) = send("POST", &acs_path, Some(&binding), encode(&fields)).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(headers["location"], "/hello");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // 5. The echo upstream verified the identity header against the gateway's JWKS.
    let (status, _, body) = send("GET", "/hello", Some(&cookie), String::new()).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `make demo` with OpenID Connect: chooser → the development OP (PKCE, state, nonce) →
/// a test user chosen → the callback → the echo upstream verified the identity (method
/// `oidc`); then logout continues at the OP (RP-initiated) and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_walks_a_browser_through_an_oidc_login() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(dir.path(), "dev-op.secret").await;
    let base = demo.base.clone();
    let mut send = async |method: &str, path: &str, cookie: Option<&str>, body: String| {
        demo.send(method, path, cookie, body).await
    };
    let first_cookie = |h: &http::HeaderMap| {
        h["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };

    let (status, _, page) = send("GET", "/_varco/login?return=%2Fhello", None, String::new()).await;
    assert_eq!(status, 200);
    let (action, fields) = form_with(&page, "value=\"dev-op\"");
    assert_eq!(action, "/_varco/oidc/login");
    let (status, headers, _) = send("POST", &action, None, encode(&fields)).await;
    assert_eq!(status, 302);
    let binding = first_cookie(&headers);
    let authorize = headers["location"].to_str().unwrap().to_string();
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let op_origin = authorize[..authorize.find("/authorize").unwrap()].to_string();
    let op_page = common::request("GET", &authorize, &[], "").await;
    assert_eq!(op_page.status, 200, "{}", op_page.text());
    let (choose, fields) = form_with(&op_page.text(), "Giulia Bianchi");
    let answer = common::request(
        "POST",
        &format!("{op_origin}{choose}"),
        &[("content-type", "application/x-www-form-urlencoded")],
        encode(&fields),
    )
    .await;
    assert_eq!(answer.status, 303);
    let callback = answer.headers["location"].to_str().unwrap().to_string();
    let path = callback
        .strip_prefix(&base)
        .expect("back to the gateway")
        .to_string();
    let (status, headers, body) = send("GET", &path, Some(&binding), String::new()).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(headers["location"], "/hello");
    let cookie = first_cookie(&headers);
    let (status, _, body) = send("GET", "/hello", Some(&cookie), String::new()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("BNCGLI85C52H501"), "{body}");
    assert!(body.contains("Verified identity"), "{body}");
    assert!(body.contains("oidc"), "{body}");
    // Logout: the session ends and the browser is sent to the OP's end_session_endpoint,
    // which sends it back to the gateway's logged-out page.
    let (status, headers, _) = send(
        "POST",
        "/_varco/logout?return=%2Fpubblico",
        Some(&cookie),
        String::new(),
    )
    .await;
    assert_eq!(status, 302);
    let end = headers["location"].to_str().unwrap().to_string();
    assert!(
        end.starts_with(&op_origin) && end.contains("id_token_hint="),
        "{end}"
    );
    let back = common::request("GET", &end, &[], "").await;
    assert_eq!(back.status, 303);
    let back = back.headers["location"].to_str().unwrap().to_string();
    let (status, headers, _) = send(
        "GET",
        back.strip_prefix(&base).unwrap(),
        None,
        String::new(),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/pubblico");
    let (status, _, _) = send("GET", "/hello", Some(&cookie), String::new()).await;
    assert_eq!(status, 302, "logged out");
    // Cancelling at the OP: `access_denied` gets its own page, and no session.
    let (_, _, page) = send("GET", "/_varco/login?return=%2Fhello", None, String::new()).await;
    let (action, fields) = form_with(&page, "value=\"dev-op\"");
    let (_, headers, _) = send("POST", &action, None, encode(&fields)).await;
    let binding = first_cookie(&headers);
    let authorize = headers["location"].to_str().unwrap().to_string();
    let op_page = common::request("GET", &authorize, &[], "").await;
    let (choose, fields) = form_with(&op_page.text(), "Annulla");
    let answer = common::request(
        "POST",
        &format!("{op_origin}{choose}"),
        &[("content-type", "application/x-www-form-urlencoded")],
        encode(&fields),
    )
    .await;
    let callback = answer.headers["location"].to_str().unwrap().to_string();
    assert!(callback.contains("error=access_denied"), "{callback}");
    let path = callback.strip_prefix(&base).unwrap().to_string();
    let (status, headers, body) = send("GET", &path, Some(&binding), String::new()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("annullato"), "{body}");
    assert!(
        headers
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().starts_with("__Host-varco="))
    );
}

/// `make demo` with CNS: the development CNS authority's cards, as a browser presents
/// them. The valid card (its PKCS#12 file with the printed password, through curl) logs
/// Mario Rossi in with method `cns`; the revoked card gets the Italian refusal page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_a_cns_card_in_and_refuses_the_revoked_one() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), "cns-valida.p12").await;
    let certs = dir.path().join("certs");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--http1.1", "-o", "-", "-D", "-", "--cacert"])
            .arg(certs.join("ca.pem"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let p12 = format!(
        "{}:{}",
        certs.join("cns-valida.p12").display(),
        varco::demo::certs::DEV_P12_PASSWORD
    );
    let login = curl(&[
        "--cert-type",
        "P12",
        "--cert",
        &p12,
        &format!("{}/_varco/cns/login?return=%2Fhello", demo.base),
    ]);
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = curl(&[
        "-H",
        &format!("cookie: {cookie}"),
        &format!("{}/hello", demo.base),
    ]);
    assert!(page.contains("Verified identity"), "{page}");
    assert!(page.contains("&quot;amr&quot;: &quot;cns&quot;"), "{page}");
    assert!(page.contains("RSSMRA80A01H501U"), "{page}");

    let revoked = curl(&[
        "--cert",
        &certs.join("cns-revocata.pem").display().to_string(),
        "--key",
        &certs.join("cns-revocata-key.pem").display().to_string(),
        &format!("{}/_varco/cns/login", demo.base),
    ]);
    assert!(revoked.starts_with("HTTP/1.1 403"), "{revoked}");
    assert!(
        revoked.contains("Il certificato della carta è scaduto o revocato."),
        "{revoked}"
    );
    assert!(!revoked.to_ascii_lowercase().contains("set-cookie"));
}

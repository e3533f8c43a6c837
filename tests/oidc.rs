//! OpenID Connect against a real provider: the `oidc-provider` npm package (a certified
//! OpenID Provider) run by tests/interop/oidc/op.mjs on loopback, with varco's client
//! registered. Full logins through the real gateway binary up to the signed header at a
//! real upstream, with `client_secret_basic` and `private_key_jwt`; RP-initiated logout
//! with the provider's back-channel logout ending the session; key rotation at the
//! provider; and the refusals (wrong nonce, wrong aud, expired, `alg: none`, HS256 signed
//! with the provider's public key, an unknown key, acr below the route's, a state that is
//! not ours, a replayed answer, a replayed logout token), each with a page and no session.
//!
//! Needs Node.js and `npm ci --prefix tests/interop/oidc` (`make test` does both).

mod common;

use common::free_port;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, Resp, request, upstreams};
use serde_json::{Value, json};

const FISCAL: &str = "https://attributes.eid.gov.it/fiscal_number";
const SECRET: &str = "a-client-secret-of-at-least-32-characters";
const L1: &str = "https://www.spid.gov.it/SpidL1";
const L2: &str = "https://www.spid.gov.it/SpidL2";

fn op_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc")
}

/// The provider process (killed on drop).
struct Op {
    child: Child,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Op {
    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(port: u16, clients: Value) -> Op {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("op.json");
        let accounts = json!({
            "mario": { FISCAL: "TINIT-RSSMRA80A01H501U", "given_name": "Mario", "family_name": "Rossi", "groups": ["operatore"] },
            "nocf": { "given_name": "Senza", "family_name": "Codice" },
        });
        std::fs::write(
            &config,
            json!({
                "port": port,
                "issuer": format!("http://127.0.0.1:{port}"),
                "clients": clients,
                "accounts": accounts,
                "acr_values": [L1, L2, "https://www.spid.gov.it/SpidL3"],
                "claims": { "openid": ["sub"], "profile": ["given_name", "family_name", FISCAL, "groups"] },
            })
            .to_string(),
        )
        .unwrap();
        Self::spawn(port, config, dir)
    }

    fn spawn(port: u16, config: PathBuf, dir: tempfile::TempDir) -> Op {
        let child = Self::spawn_child(port, &config);
        Op {
            child,
            port,
            config,
            _dir: dir,
        }
    }

    /// Starts the provider and waits for its `listening` line.
    fn spawn_child(_port: u16, config: &Path) -> Child {
        let mut child = Command::new("node")
            .arg(op_dir().join("op.mjs"))
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (make test installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening ") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the provider did not start");
        child
    }

    /// Stops and starts the provider on the same port: new signing keys (a rotation).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = Self::spawn_child(self.port, &self.config);
        self.child = fresh;
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = request(
            "POST",
            &format!("{}{path}", self.issuer()),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    async fn tamper(&self, mode: &str) {
        self.control("/test/tamper", json!({ "mode": mode })).await;
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser: cookies per host and port, redirects followed by hand.
#[derive(Default)]
struct Browser {
    jar: HashMap<String, HashMap<String, String>>,
}

fn origin_of(url: &str) -> String {
    let uri: http::Uri = url.parse().unwrap();
    uri.authority().unwrap().to_string()
}

impl Browser {
    async fn send(&mut self, method: &str, url: &str, form: Option<String>) -> Resp {
        self.send_accepting(method, url, form, "text/html").await
    }

    /// A GET the echo upstream answers in JSON (the headers it received).
    async fn api(&mut self, url: &str) -> Resp {
        self.send_accepting("GET", url, None, "application/json")
            .await
    }

    async fn send_accepting(
        &mut self,
        method: &str,
        url: &str,
        form: Option<String>,
        accept: &'static str,
    ) -> Resp {
        let origin = origin_of(url);
        let cookies = self
            .jar
            .get(&origin)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let mut headers = vec![("accept", accept)];
        if !cookies.is_empty() {
            headers.push(("cookie", cookies.as_str()));
        }
        if form.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let r = request(method, url, &headers, Bytes::from(form.unwrap_or_default())).await;
        let jar = self.jar.entry(origin).or_default();
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            let gone = v.to_ascii_lowercase().contains("max-age=0")
                || v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            if gone || val.is_empty() {
                jar.remove(k.trim());
            } else {
                jar.insert(k.trim().to_string(), val.to_string());
            }
        }
        r
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&origin_of(url))?.get(name).cloned()
    }

    /// Follows redirects from `url` until a response that is not one, or a Location that
    /// starts with `stop` (returned without following).
    async fn follow(&mut self, mut url: String, stop: &str) -> (String, Resp) {
        for _ in 0..15 {
            let r = self.send("GET", &url, None).await;
            if !(300..400).contains(&r.status) {
                return (url, r);
            }
            let next = absolute(&url, r.headers["location"].to_str().unwrap());
            if next.starts_with(stop) {
                return (next, r);
            }
            url = next;
        }
        panic!("too many redirects");
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("http://{}{location}", origin_of(base))
    }
}

/// varco's configuration for one provider (`auth` the client's authentication).
fn config(up: SocketAddr, gw_port: u16, issuer: &str, auth: &str) -> String {
    replica_config(up, gw_port, gw_port, issuer, auth, "")
}

/// The configuration of a replica listening on `listen`, reached by browsers at `base`
/// (the replicas' shared address), with `session` added to `[session]`.
fn replica_config(
    up: SocketAddr,
    listen: u16,
    base: u16,
    issuer: &str,
    auth: &str,
    session: &str,
) -> String {
    let client = match auth {
        "private_key_jwt" => "client_auth = \"private_key_jwt\"".to_string(),
        _ => "client_secret_file = \"@DIR@/secret\"".to_string(),
    };
    format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:{listen}"
[log]
format = "json"
[session]
secure = false
cookie_name = "varco"
{session}
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = false
[[route]]
path = "/fascicolo"
upstream = "app"
public = false
min_level = "SpidL2"
[oidc]
base_url = "http://127.0.0.1:{base}"
[[oidc.key]]
kid = "rp1"
private_key = "@DIR@/rp-key.pem"
[[oidc.provider]]
name = "op"
label = "Test OP"
issuer = "{issuer}"
client_id = "varco"
{client}
userinfo = true
refresh_interval = "60s"
[oidc.provider.claims]
roles = "groups"
"#
    )
}

fn client_metadata(gw_port: u16, auth: &str, jwks: Option<Value>) -> Value {
    let base = format!("http://127.0.0.1:{gw_port}/_varco/oidc");
    let mut c = json!({
        "client_id": "varco",
        "redirect_uris": [format!("{base}/callback/op")],
        "post_logout_redirect_uris": [format!("{base}/logged-out")],
        "backchannel_logout_uri": format!("{base}/backchannel-logout"),
        "backchannel_logout_session_required": true,
        "response_types": ["code"],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": auth,
        "id_token_signed_response_alg": "ES256",
    });
    match jwks {
        Some(keys) => {
            c["jwks"] = keys;
            c["token_endpoint_auth_signing_alg"] = json!("ES256");
        }
        None => c["client_secret"] = json!(SECRET),
    }
    c
}

/// A provider and a gateway registered with it.
struct Setup {
    op: Op,
    gw: Gateway,
    gw_url: String,
}

fn rp_key() -> (String, Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let pem = pair.serialize_pem();
    // The public JWK, as the gateway publishes it (read back from its own endpoint later).
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("rp1".into());
    (pem, json!({ "keys": [jwk] }))
}

async fn setup(auth: &str) -> Setup {
    let up = upstreams::echo().await;
    let gw_port = free_port();
    let op_port = free_port();
    let (pem, jwks) = rp_key();
    let registered = (auth == "private_key_jwt").then_some(jwks);
    let op = Op::start(op_port, json!([client_metadata(gw_port, auth, registered)]));
    let gw = Gateway::start_with(
        &config(up, gw_port, &op.issuer(), auth),
        &[("secret", &format!("{SECRET}\n")), ("rp-key.pem", &pem)],
    );
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    Setup { op, gw, gw_url }
}

/// From the chooser's button to the provider's answer at our callback: returns the
/// callback URL (not yet followed).
async fn to_callback(
    b: &mut Browser,
    gw_url: &str,
    op_issuer: &str,
    provider: &str,
    account: &str,
    acr: &str,
    level: &str,
) -> String {
    let r = b
        .send(
            "POST",
            &format!("{gw_url}/_varco/oidc/login"),
            Some(format!(
                "provider={provider}&return=%2Fpratiche&level={level}"
            )),
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let auth = r.headers["location"].to_str().unwrap().to_string();
    assert!(auth.starts_with(op_issuer), "{auth}");
    for p in [
        "code_challenge_method=S256",
        "response_type=code",
        "nonce=",
        "state=",
    ] {
        assert!(auth.contains(p), "{p} in {auth}");
    }
    let callback = format!("{gw_url}/_varco/oidc/callback");
    let (at, page) = b.follow(auth, &callback).await;
    if at.starts_with(&callback) {
        return at;
    }
    // The provider's login page: post the account and the acr it authenticates at.
    assert_eq!(page.status, 200, "{at}: {}", page.text());
    let action = format!("{at}/login");
    let form = format!(
        "login={account}&acr={}",
        form_urlencoded::byte_serialize(acr.as_bytes()).collect::<String>()
    );
    let r = b.send("POST", &absolute(&at, &action), Some(form)).await;
    assert!((300..400).contains(&r.status), "{}", r.text());
    let next = absolute(&at, r.headers["location"].to_str().unwrap());
    let (at, _) = b.follow(next, &callback).await;
    assert!(at.starts_with(&callback), "ended at {at}");
    at
}

impl Setup {
    async fn to_callback(&self, b: &mut Browser, account: &str, acr: &str, level: &str) -> String {
        to_callback(
            b,
            &self.gw_url,
            &self.op.issuer(),
            "op",
            account,
            acr,
            level,
        )
        .await
    }

    /// A whole login; returns the response of the callback.
    async fn login(&self, b: &mut Browser, account: &str, acr: &str, level: &str) -> Resp {
        let cb = self.to_callback(b, account, acr, level).await;
        b.send("GET", &cb, None).await
    }
}

fn session_cookie(b: &Browser, gw: &str) -> Option<String> {
    b.cookie(gw, "varco")
}

fn decode_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A login with `client_secret_basic` reaches the upstream with the signed header: the
/// fiscal code from the provider's claim (`TINIT-` form), the level from its acr, method
/// `oidc`, roles from the groups claim; then logout ends the session here and at the
/// provider, whose back-channel logout the gateway accepts.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_with_a_client_secret_reaches_the_upstream_and_logout_ends_it() {
    let s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    let r = s.login(&mut b, "mario", L2, "SpidL2").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/pratiche");
    assert!(session_cookie(&b, &s.gw_url).is_some());
    assert!(
        b.cookie(&s.gw_url, "varco-oidc").is_none(),
        "binding cookie cleared"
    );
    let r = b.api(&format!("{}/fascicolo/1", s.gw_url)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = r.echoed("x-varco-assertion").pop().expect("signed header");
    let claims = decode_claims(&jwt);
    assert_eq!(claims["sub"], "RSSMRA80A01H501U");
    assert_eq!(claims["acr"], L2);
    // The binding cookie (Path=/) never reaches an upstream.
    b.jar
        .entry(origin_of(&s.gw_url))
        .or_default()
        .insert("varco-oidc".into(), "x".into());
    let r = b.api(&format!("{}/fascicolo/2", s.gw_url)).await;
    assert!(
        r.echoed("cookie").iter().all(|c| !c.contains("varco-oidc")),
        "{}",
        r.text()
    );
    b.jar
        .get_mut(&origin_of(&s.gw_url))
        .unwrap()
        .remove("varco-oidc");
    assert_eq!(claims["amr"], "oidc");
    assert_eq!(claims["idp"], s.op.issuer());
    assert_eq!(claims["roles"], json!(["operatore"]));
    assert!(
        s.gw.logs()
            .iter()
            .any(|l| l.contains("\"event\":\"login\"") && l.contains("\"method\":\"oidc\""))
    );
    // Metrics say so.
    let m = request(
        "GET",
        &format!("{}/_varco/metrics", s.gw_url),
        &[],
        Bytes::new(),
    )
    .await;
    assert!(
        m.text()
            .contains("varco_oidc_logins_total{provider=\"op\",outcome=\"ok\"} 1"),
        "{}",
        m.text()
    );

    // Logout: the local session ends, then the provider's end_session_endpoint.
    let r = b
        .send(
            "POST",
            &format!("{}/_varco/logout?return=%2Fbye", s.gw_url),
            Some(String::new()),
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let end = r.headers["location"].to_str().unwrap().to_string();
    assert!(
        end.starts_with(&s.op.issuer()) && end.contains("id_token_hint="),
        "{end}"
    );
    let r = b
        .send("GET", &format!("{}/fascicolo/1", s.gw_url), None)
        .await;
    assert_eq!(r.status, 302, "logged out locally");
    // At the provider: confirm, and come back to the return URL.
    let (at, page) = b.follow(end, "http://127.0.0.1:1/").await;
    assert_eq!(page.status, 200, "{at}: {}", page.text());
    let (action, mut form) = form_of(&page.text());
    form.push(("logout".into(), "yes".into()));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let r = b.send("POST", &absolute(&at, &action), Some(body)).await;
    assert!((300..400).contains(&r.status), "{}", r.text());
    let back = absolute(&at, r.headers["location"].to_str().unwrap());
    assert!(
        back.starts_with(&format!("{}/_varco/oidc/logged-out", s.gw_url)),
        "{back}"
    );
    let r = b.send("GET", &back, None).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/bye");
    // The provider told the gateway through the back channel too, and was answered 200.
    let sent = request(
        "GET",
        &format!("{}/test/backchannel", s.op.issuer()),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        sent.json(),
        json!([{ "client_id": "varco", "ok": true }]),
        "{}",
        sent.text()
    );
    assert!(
        s.gw.wait_log(|l| l.contains("back-channel logout") && l.contains("\"sessions_ended\":0"))
            .is_some()
    );
}

/// The action and hidden inputs of the first form of an HTML page.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].replace("&amp;", "&"))
    };
    let form_start = html.find("<form").expect("a form");
    let form_tag = &html[form_start..form_start + html[form_start..].find('>').unwrap()];
    let action = attr(form_tag, "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = &html[form_start..];
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..i + rest[i..].find('>').unwrap()];
        if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value"))
            && tag.contains("hidden")
        {
            fields.push((n, v));
        }
        rest = &rest[i + 6..];
    }
    (action, fields)
}

/// `private_key_jwt`: the client assertion signed with `[[oidc.key]]`, whose public half
/// the gateway serves at `<prefix>oidc/jwks`.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_with_private_key_jwt_works_and_the_client_keys_are_published() {
    let s = setup("private_key_jwt").await;
    let jwks = request(
        "GET",
        &format!("{}/_varco/oidc/jwks", s.gw_url),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"][0]["kid"], "rp1");
    assert!(jwks.json()["keys"][0].get("d").is_none(), "no private part");
    let mut b = Browser::default();
    let r = s.login(&mut b, "mario", L1, "SpidL1").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = b.send("GET", &format!("{}/x", s.gw_url), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Each forged or wrong ID token is refused with a page, and no session is made.
#[tokio::test(flavor = "multi_thread")]
async fn forged_and_wrong_id_tokens_are_refused_without_a_session() {
    let s = setup("client_secret_basic").await;
    for (mode, code) in [
        ("nonce", "nonce"),
        ("aud", "audience"),
        ("expired", "expired"),
        ("none", "algorithm"),
        ("hs256", "algorithm"),
        ("bad_signature", "signature"),
        ("unknown_kid", "unknown_key"),
    ] {
        let mut b = Browser::default();
        s.op.tamper(mode).await;
        let r = s.login(&mut b, "mario", L2, "SpidL1").await;
        assert!(
            matches!(r.status, 401 | 403),
            "{mode}: {} {}",
            r.status,
            r.text()
        );
        assert!(
            r.text().contains("non è valida") || r.text().contains("not valid"),
            "{mode}: {}",
            r.text()
        );
        assert!(
            session_cookie(&b, &s.gw_url).is_none(),
            "{mode}: no session"
        );
        assert!(
            s.gw.wait_log(
                |l| l.contains("login_refused") && l.contains(&format!("\"code\":\"{code}\""))
            )
            .is_some(),
            "{mode}: audit line with {code}"
        );
    }
    // After all that, an honest login works (nothing was left half-done).
    let mut b = Browser::default();
    let r = s.login(&mut b, "mario", L2, "SpidL1").await;
    assert_eq!(r.status, 303, "{}", r.text());
}

/// The level: a login at SpidL1 for a route that needs SpidL2 is refused at the callback
/// (the provider was asked for SpidL2 and above), and a user whose claims have no fiscal
/// code gets no session either.
#[tokio::test(flavor = "multi_thread")]
async fn a_level_below_the_routes_and_a_missing_fiscal_code_are_refused() {
    let s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    let r = s.login(&mut b, "mario", L1, "SpidL2").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("livello"), "{}", r.text());
    assert!(session_cookie(&b, &s.gw_url).is_none());
    let mut b = Browser::default();
    let r = s.login(&mut b, "nocf", L2, "SpidL1").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(session_cookie(&b, &s.gw_url).is_none());
}

/// The answer is used once, in the browser that asked: a replayed callback, one with
/// another state, and one from another browser are refused. An answer arriving at
/// another provider's redirect URI (the mix-up attack) is refused before its code is sent
/// anywhere, and uses up the login.
#[tokio::test(flavor = "multi_thread")]
async fn answers_are_used_once_in_the_browser_that_asked() {
    let s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    let cb = s.to_callback(&mut b, "mario", L2, "SpidL1").await;
    assert!(cb.contains("/_varco/oidc/callback/op?"), "{cb}");
    let mixed_up = cb.replace("/callback/op?", "/callback/other?");
    let r = b.send("GET", &mixed_up, None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(b.send("GET", &cb, None).await.status, 400, "used up");
    assert!(session_cookie(&b, &s.gw_url).is_none());
    // The provider advertises RFC 9207's `iss` in authorization responses: an answer
    // without it is refused.
    let mut b = Browser::default();
    let cb = s.to_callback(&mut b, "mario", L2, "SpidL1").await;
    let (path, query) = cb.split_once('?').unwrap();
    let without_iss: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("iss="))
        .collect();
    assert!(without_iss.len() < query.split('&').count(), "{cb}");
    let r = b
        .send("GET", &format!("{path}?{}", without_iss.join("&")), None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    let mut b = Browser::default();
    let cb = s.to_callback(&mut b, "mario", L2, "SpidL1").await;
    // Another browser (no binding cookie) presenting the answer: refused, and the
    // pending login is used up.
    let mut other = Browser::default();
    let r = other.send("GET", &cb, None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = b.send("GET", &cb, None).await;
    assert_eq!(r.status, 400, "used up: {}", r.text());
    assert!(session_cookie(&b, &s.gw_url).is_none());
    // The binding cookie twice (one planted by a sibling domain, say): trusted neither.
    let mut b = Browser::default();
    let cb = s.to_callback(&mut b, "mario", L2, "SpidL1").await;
    let binding = b.cookie(&s.gw_url, "varco-oidc").unwrap();
    let twice = format!("varco-oidc={binding}; varco-oidc=planted");
    let r = request("GET", &cb, &[("cookie", twice.as_str())], Bytes::new()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A good answer, then the same again.
    let mut b = Browser::default();
    let cb = s.to_callback(&mut b, "mario", L2, "SpidL1").await;
    let binding = b.cookie(&s.gw_url, "varco-oidc").unwrap();
    let r = b.send("GET", &cb, None).await;
    assert_eq!(r.status, 303);
    let mut replay = Browser::default();
    replay
        .jar
        .entry(origin_of(&s.gw_url))
        .or_default()
        .insert("varco-oidc".into(), binding);
    let r = replay.send("GET", &cb, None).await;
    assert_eq!(r.status, 400, "replayed: {}", r.text());
    // A state that is not ours.
    let forged = format!(
        "{}/_varco/oidc/callback/op?code=abc&state=notours",
        s.gw_url
    );
    let r = replay.send("GET", &forged, None).await;
    assert_eq!(r.status, 400);
    assert!(session_cookie(&replay, &s.gw_url).is_none());
}

/// Back-channel logout: a logout token for the session's `sid` ends it; the same token
/// again is refused; a token with a nonce or without the event is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_backchannel_logout_token_ends_the_session_once() {
    let s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    assert_eq!(s.login(&mut b, "mario", L2, "SpidL1").await.status, 303);
    let r = b.send("GET", &format!("{}/x", s.gw_url), None).await;
    assert_eq!(r.status, 200);
    let post = |token: String| {
        let url = format!("{}/_varco/oidc/backchannel-logout", s.gw_url);
        async move {
            request(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("logout_token={token}"),
            )
            .await
        }
    };
    let token = |extra: Value| {
        let mut body = json!({ "client_id": "varco", "sub": "mario" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let with_nonce =
        s.op.control(
            "/test/logout-token",
            token(json!({"nonce": "n", "omit": ["sid"]})),
        )
        .await;
    let r = post(with_nonce["logout_token"].as_str().unwrap().to_string()).await;
    assert_eq!(r.status, 400);
    let no_event =
        s.op.control(
            "/test/logout-token",
            token(json!({"events": {}, "omit": ["sid"]})),
        )
        .await;
    assert_eq!(
        post(no_event["logout_token"].as_str().unwrap().to_string())
            .await
            .status,
        400
    );
    // The session survived the bad tokens.
    assert_eq!(
        b.send("GET", &format!("{}/x", s.gw_url), None).await.status,
        200
    );
    let good =
        s.op.control("/test/logout-token", token(json!({"omit": ["sid"]})))
            .await;
    let good = good["logout_token"].as_str().unwrap().to_string();
    let r = post(good.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.send("GET", &format!("{}/x", s.gw_url), None).await;
    assert_eq!(r.status, 302, "the session ended");
    let r = post(good).await;
    assert_eq!(r.status, 400, "replayed");
}

/// A key rotation at the provider: the next login's ID token names a key the gateway has
/// not seen, and it fetches the JWKS again once.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_at_the_provider_is_followed() {
    let mut s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    assert_eq!(s.login(&mut b, "mario", L2, "SpidL1").await.status, 303);
    s.op.restart();
    // The refetch is rate-limited to one per 10 s per provider.
    std::thread::sleep(Duration::from_secs(10));
    let mut b = Browser::default();
    let r = s.login(&mut b, "mario", L2, "SpidL1").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        s.gw.wait_log(|l| l.contains("fetched again for an unknown key"))
            .is_some()
    );
}

/// A provider that cannot be reached at start-up does not stop the gateway: its chooser
/// entry is disabled with the reason, a login through it is refused with 503, and once it
/// answers (the refresh retries every 30 s) logins work.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_is_shown_unavailable() {
    let up = upstreams::echo().await;
    let gw_port = free_port();
    let closed = common::upstreams::closed_port();
    let gw = Gateway::start_with(
        &config(
            up,
            gw_port,
            &format!("http://{closed}"),
            "client_secret_basic",
        ),
        &[("secret", SECRET), ("rp-key.pem", &rp_key().0)],
    );
    let started = Instant::now();
    let page = request("GET", &gw.url("/_varco/login"), &[], Bytes::new()).await;
    assert!(page.text().contains("disabled"), "{}", page.text());
    assert!(page.text().contains("Non disponibile"));
    let r = request(
        "POST",
        &gw.url("/_varco/oidc/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "provider=op&return=%2F",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.get("set-cookie").is_none());
    assert!(started.elapsed() < Duration::from_secs(30));
    let m = request("GET", &gw.url("/_varco/metrics"), &[], Bytes::new()).await;
    assert!(
        m.text()
            .contains("varco_oidc_provider_unavailable{provider=\"op\"} 1"),
        "{}",
        m.text()
    );
}

/// Logging out at the provider itself (another application's logout, say): the provider's
/// back-channel logout token, with the session's `sid`, ends the gateway's live session.
#[tokio::test(flavor = "multi_thread")]
async fn logging_out_at_the_provider_ends_the_gateway_session() {
    let s = setup("client_secret_basic").await;
    let mut b = Browser::default();
    assert_eq!(s.login(&mut b, "mario", L2, "SpidL1").await.status, 303);
    assert_eq!(b.api(&format!("{}/x", s.gw_url)).await.status, 200);
    let end = format!("{}/session/end", s.op.issuer());
    let page = b.send("GET", &end, None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let (action, mut form) = form_of(&page.text());
    form.push(("logout".into(), "yes".into()));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let r = b.send("POST", &absolute(&end, &action), Some(body)).await;
    assert!(r.status < 500, "{}", r.text());
    assert!(
        s.gw.wait_log(|l| l.contains("back-channel logout") && l.contains("\"sessions_ended\":1"))
            .is_some(),
        "the provider's logout token ended the session"
    );
    let r = b.send("GET", &format!("{}/x", s.gw_url), None).await;
    assert_eq!(r.status, 302, "logged out by the provider");
}

// ---------------------------------------------------------------------------------------
// The SPID profile over OpenID Connect Federation: a trust anchor and an intermediate
// served by the test over HTTP (their statements built here with generated keys), in
// front of the same oidc-provider OP with the profile's requirements (request objects,
// private_key_jwt, signed-then-encrypted UserInfo).

struct FedKey {
    enc: jsonwebtoken::EncodingKey,
    jwk: jsonwebtoken::jwk::Jwk,
}

fn fed_key(kid: &str) -> FedKey {
    let pair = rcgen::KeyPair::generate().unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.into());
    FedKey { enc, jwk }
}

impl FedKey {
    fn sign(&self, typ: &str, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.typ = Some(typ.into());
        h.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const MARK_ID: &str = "/openid_provider/public";

/// The RP's keys: client signing (EC), UserInfo encryption (RSA), federation (EC).
struct RpKeys {
    sig_pem: String,
    enc_pem: String,
    fed_pem: String,
    client_jwks: Value,
}

fn rp_keys() -> RpKeys {
    let (sig_pem, sig_jwks) = {
        let pair = rcgen::KeyPair::generate().unwrap();
        let pem = pair.serialize_pem();
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        jwk.common.key_id = Some("rp-sig".into());
        (pem, serde_json::to_value(jwk).unwrap())
    };
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let enc_pem = rsa.serialize_pem();
    let rsa_enc = jsonwebtoken::EncodingKey::from_rsa_pem(enc_pem.as_bytes()).unwrap();
    let mut enc_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_enc, jsonwebtoken::Algorithm::RS256)
            .unwrap(),
    )
    .unwrap();
    enc_jwk["kid"] = json!("rp-enc");
    enc_jwk["use"] = json!("enc");
    enc_jwk["alg"] = json!("RSA-OAEP-256");
    RpKeys {
        sig_pem,
        enc_pem,
        fed_pem: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        client_jwks: json!({ "keys": [sig_jwks, enc_jwk] }),
    }
}

/// How the test federation is broken, if it is.
#[derive(Clone, Copy, PartialEq)]
enum Break {
    Nothing,
    /// The intermediate's policy asks the OP for an algorithm it does not offer.
    PolicyViolation,
    /// The OP lists no trust mark.
    NoTrustMark,
    /// The client is registered without UserInfo signing and encryption: plain JSON.
    PlainUserinfo,
}

struct Federation {
    op: Op,
    gw: Gateway,
    gw_url: String,
    _docs: upstreams::Documents,
}

async fn federation(broken: Break) -> Federation {
    let up = upstreams::echo().await;
    let gw_port = free_port();
    let op_port = free_port();
    let docs: upstreams::Documents = Default::default();
    let fed_addr = upstreams::documents(docs.clone()).await;
    let ta = format!("http://{fed_addr}/ta");
    let int = format!("http://{fed_addr}/int");
    let op_id = format!("http://127.0.0.1:{op_port}");
    let rp_id = format!("http://127.0.0.1:{gw_port}");
    let (ta_key, int_key) = (fed_key("ta-1"), fed_key("int-1"));
    let now = now_secs();
    let keys = rp_keys();
    let mark = ta_key.sign(
        "trust-mark+jwt",
        &json!({"iss": ta, "sub": op_id, "id": format!("{ta}{MARK_ID}"), "iat": now, "exp": now + 3600}),
    );
    let marks = if broken == Break::NoTrustMark {
        json!([])
    } else {
        json!([{ "id": format!("{ta}{MARK_ID}"), "trust_mark": mark }])
    };
    // The OP, with varco's client registered from its metadata (as automatic
    // registration would).
    let base = format!("{rp_id}/_varco/oidc");
    let client = json!({
        "client_id": rp_id,
        "redirect_uris": [format!("{base}/callback/spid-op")],
        "post_logout_redirect_uris": [format!("{base}/logged-out")],
        "response_types": ["code"],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "request_object_signing_alg": "ES256",
        "id_token_signed_response_alg": "RS256",
        "userinfo_signed_response_alg": "RS256",
        "userinfo_encrypted_response_alg": "RSA-OAEP-256",
        "userinfo_encrypted_response_enc": "A256CBC-HS512",
        "jwks": keys.client_jwks,
    });
    let mut client = client;
    if broken == Break::PlainUserinfo {
        for k in [
            "userinfo_signed_response_alg",
            "userinfo_encrypted_response_alg",
            "userinfo_encrypted_response_enc",
        ] {
            client.as_object_mut().unwrap().remove(k);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("op.json");
    std::fs::write(
        &config,
        json!({
            "port": op_port,
            "issuer": op_id,
            "clients": [client],
            "accounts": { "mario": { FISCAL: "TINIT-RSSMRA80A01H501U", "given_name": "Mario", "family_name": "Rossi" } },
            "acr_values": [L1, L2, "https://www.spid.gov.it/SpidL3"],
            "claims": { "openid": ["sub"], "profile": ["given_name", "family_name", FISCAL] },
            "federation": { "authority_hints": [int], "trust_marks": marks },
        })
        .to_string(),
    )
    .unwrap();
    let op = Op::spawn(op_port, config, dir);
    let op_fed_jwks = request(
        "GET",
        &format!("{op_id}/test/federation-jwks"),
        &[],
        Bytes::new(),
    )
    .await
    .json();
    // The superiors' documents.
    let statement = "application/entity-statement+jwt".to_string();
    let mut about_op =
        json!({"iss": int, "sub": op_id, "iat": now - 5, "exp": now + 7200, "jwks": op_fed_jwks});
    if broken == Break::PolicyViolation {
        about_op["metadata_policy"] = json!({"openid_provider": {
            "id_token_signing_alg_values_supported": {"superset_of": ["XX999"]}
        }});
    }
    let configuration = |key: &FedKey, id: &str, hints: Value| {
        key.sign(
            "entity-statement+jwt",
            &json!({
                "iss": id, "sub": id, "iat": now - 5, "exp": now + 7200,
                "jwks": {"keys": [key.jwk]}, "authority_hints": hints,
                "metadata": {"federation_entity": {"federation_fetch_endpoint": format!("{id}/fetch")}},
            }),
        )
    };
    let q = |sub: &str| form_urlencoded::byte_serialize(sub.as_bytes()).collect::<String>();
    {
        let mut d = docs.lock().unwrap();
        d.insert(
            "/ta/.well-known/openid-federation".into(),
            (statement.clone(), configuration(&ta_key, &ta, json!([]))),
        );
        d.insert(
            "/int/.well-known/openid-federation".into(),
            (
                statement.clone(),
                configuration(&int_key, &int, json!([ta])),
            ),
        );
        d.insert(
            format!("/int/fetch?sub={}", q(&op_id)),
            (
                statement.clone(),
                int_key.sign("entity-statement+jwt", &about_op),
            ),
        );
        d.insert(
            format!("/ta/fetch?sub={}", q(&int)),
            (statement.clone(), ta_key.sign("entity-statement+jwt", &json!({
                "iss": ta, "sub": int, "iat": now - 5, "exp": now + 7200, "jwks": {"keys": [int_key.jwk]},
                "metadata_policy": {"openid_provider": {"token_endpoint_auth_methods_supported": {"subset_of": ["private_key_jwt", "client_secret_basic"]}}},
            }))),
        );
    }
    let gw_config = format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:{gw_port}"
[log]
format = "json"
[session]
secure = false
cookie_name = "varco"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = false
[oidc]
base_url = "{rp_id}"
[[oidc.key]]
kid = "rp-sig"
private_key = "@DIR@/rp-sig.pem"
[[oidc.encryption_key]]
kid = "rp-enc"
private_key = "@DIR@/rp-enc.pem"
[oidc.federation]
entity_id = "{rp_id}"
authority_hints = ["{int}"]
organization_name = "varco test RP"
contacts = ["ops@example.invalid"]
required_trust_marks = ["{ta}{MARK_ID}"]
[[oidc.federation.key]]
kid = "rp-fed"
private_key = "@DIR@/rp-fed.pem"
[[oidc.federation.trust_anchor]]
entity_id = "{ta}"
jwks_file = "@DIR@/ta.jwks"
[[oidc.provider]]
name = "spid-op"
label = "SPID OP"
issuer = "{op_id}"
client_id = "{rp_id}"
client_auth = "private_key_jwt"
profile = "spid"
refresh_interval = "60s"
"#
    );
    let ta_jwks = json!({"keys": [ta_key.jwk]}).to_string();
    let gw = Gateway::start_with(
        &gw_config,
        &[
            ("rp-sig.pem", &keys.sig_pem),
            ("rp-enc.pem", &keys.enc_pem),
            ("rp-fed.pem", &keys.fed_pem),
            ("ta.jwks", &ta_jwks),
        ],
    );
    Federation {
        op,
        gw,
        gw_url: rp_id,
        _docs: docs,
    }
}

impl Federation {
    async fn login(&self, b: &mut Browser, acr: &str) -> Resp {
        let cb = to_callback(
            b,
            &self.gw_url,
            &self.op.issuer(),
            "spid-op",
            "mario",
            acr,
            "SpidL2",
        )
        .await;
        b.send("GET", &cb, None).await
    }
}

/// A SPID login over OpenID Connect Federation: the OP trusted through its chain (fetched
/// over HTTP, with the anchor's policy and trust mark), the authorization request as a
/// signed request object, `private_key_jwt` at the token endpoint, UserInfo signed then
/// encrypted to our key; the login is method `spid` in the signed header. Our Entity
/// Configuration is served and signed with the federation key.
#[tokio::test(flavor = "multi_thread")]
async fn a_spid_login_over_the_federation_reaches_the_upstream() {
    let f = federation(Break::Nothing).await;
    // Our Entity Configuration.
    let ec = request(
        "GET",
        &format!("{}/.well-known/openid-federation", f.gw_url),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(ec.status, 200, "{}", ec.text());
    assert_eq!(
        ec.headers["content-type"],
        "application/entity-statement+jwt"
    );
    let claims = decode_claims(&ec.text());
    assert_eq!(claims["iss"], f.gw_url.as_str());
    assert_eq!(claims["sub"], f.gw_url.as_str());
    assert_eq!(claims["jwks"]["keys"][0]["kid"], "rp-fed");
    let rp = &claims["metadata"]["openid_relying_party"];
    assert_eq!(rp["client_id"], f.gw_url.as_str());
    assert_eq!(rp["client_registration_types"], json!(["automatic"]));
    let kids: Vec<&str> = rp["jwks"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        ["rp-sig", "rp-enc"],
        "client keys, not the federation key"
    );
    assert!(
        claims["authority_hints"][0]
            .as_str()
            .unwrap()
            .ends_with("/int")
    );

    // The chooser lists it under the SPID button.
    let page = request(
        "GET",
        &format!("{}/_varco/login", f.gw_url),
        &[],
        Bytes::new(),
    )
    .await
    .text();
    let spid = page.split("Entra con SPID").nth(1).expect("a SPID section");
    assert!(
        spid.split("</section>").next().unwrap().contains("SPID OP"),
        "{page}"
    );

    let mut b = Browser::default();
    let r = f.login(&mut b, L2).await;
    assert_eq!(
        r.status,
        303,
        "{:?}",
        f.gw.wait_log(|l| l.contains("login_refused"))
    );
    let r = b.api(&format!("{}/x", f.gw_url)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = r.echoed("x-varco-assertion").pop().expect("signed header");
    let c = decode_claims(&jwt);
    assert_eq!(c["sub"], "RSSMRA80A01H501U");
    assert_eq!(c["amr"], "spid");
    assert_eq!(c["acr"], L2);
    assert_eq!(c["given_name"], "Mario");
    assert!(
        f.gw.logs()
            .iter()
            .any(|l| l.contains("oidc_response") && l.contains("\"protocol\":\"oidc\""))
    );
}

/// `varco oidc entity-configuration` prints what the gateway serves (the operator's way
/// to register with the federation).
#[tokio::test(flavor = "multi_thread")]
async fn the_entity_configuration_subcommand_prints_the_signed_document() {
    let f = federation(Break::Nothing).await;
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_varco"))
            .args(["oidc", "entity-configuration", "--config"])
            .arg(f.gw.dir.path().join("varco.toml"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap();
    let claims = decode_claims(jwt.trim());
    assert_eq!(claims["iss"], f.gw_url.as_str());
    assert_eq!(claims["jwks"]["keys"][0]["kid"], "rp-fed");
    let out = run(&["--decoded"]);
    let decoded: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        decoded["metadata"]["openid_relying_party"]["client_id"],
        f.gw_url.as_str()
    );
}

/// In the SPID profile UserInfo must be signed then encrypted to our key: a provider that
/// answers plain JSON, and a JWE whose tag was changed, are refused with no session.
#[tokio::test(flavor = "multi_thread")]
async fn a_userinfo_not_encrypted_to_us_intact_is_refused() {
    for (broken, tamper, reason) in [
        (Break::PlainUserinfo, None, "unencrypted UserInfo"),
        (Break::Nothing, Some("userinfo_tag"), "does not decrypt"),
    ] {
        let f = federation(broken).await;
        if let Some(mode) = tamper {
            f.op.tamper(mode).await;
        }
        let mut b = Browser::default();
        let r = f.login(&mut b, L2).await;
        assert_eq!(r.status, 401, "{reason}: {}", r.text());
        assert!(session_cookie(&b, &f.gw_url).is_none());
        assert!(
            f.gw.wait_log(|l| l.contains("login_refused") && l.contains(reason))
                .is_some(),
            "{reason}"
        );
    }
}

/// A chain that does not resolve (the OP violates the intermediate's metadata policy, or
/// lacks the required trust mark) leaves the provider unavailable: disabled in the chooser
/// with the reason, its logins refused with 503.
#[tokio::test(flavor = "multi_thread")]
async fn an_op_outside_the_policy_or_without_its_trust_mark_is_not_trusted() {
    for (broken, reason) in [
        (Break::PolicyViolation, "trust chain does not resolve"),
        (Break::NoTrustMark, "trust marks are missing"),
    ] {
        let f = federation(broken).await;
        let page = request(
            "GET",
            &format!("{}/_varco/login", f.gw_url),
            &[],
            Bytes::new(),
        )
        .await;
        assert!(page.text().contains("disabled"), "{}", page.text());
        assert!(page.text().contains(reason), "{reason}: {}", page.text());
        // The detail is in the log, not on the page.
        assert!(!page.text().contains("127.0.0.1"), "{}", page.text());
        let detail = if broken == Break::PolicyViolation {
            "superset_of"
        } else {
            "trust mark"
        };
        assert!(
            f.gw.wait_log(|l| l.contains("could not be loaded") && l.contains(detail))
                .is_some()
        );
        let mut b = Browser::default();
        let r = b
            .send(
                "POST",
                &format!("{}/_varco/oidc/login", f.gw_url),
                Some("provider=spid-op&return=%2F".into()),
            )
            .await;
        assert_eq!(r.status, 503, "{}", r.text());
    }
}

/// Two replicas behind one address share a Redis: a login started on A (its pending state
/// in Redis) is finished by B, and the same answer replayed to A is refused; the session
/// then works on both. (Sessions, logout and Redis failures: tests/scaleout.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn a_login_started_on_one_replica_finishes_on_the_other_once() {
    let redis = common::Redis::start(free_port());
    let up = upstreams::echo().await;
    let (port_a, port_b, op_port) = (free_port(), free_port(), free_port());
    let op = Op::start(
        op_port,
        json!([client_metadata(port_a, "client_secret_basic", None)]),
    );
    let session = format!(
        "store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:{}/0\"",
        redis.port
    );
    let start = |listen: u16| {
        Gateway::start_with(
            &replica_config(
                up,
                listen,
                port_a,
                &op.issuer(),
                "client_secret_basic",
                &session,
            ),
            &[
                ("secret", &format!("{SECRET}\n")),
                ("rp-key.pem", &rp_key().0),
            ],
        )
    };
    let (_a, _b) = (start(port_a), start(port_b));
    let (url_a, url_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let mut browser = Browser::default();
    let cb = to_callback(
        &mut browser,
        &url_a,
        &op.issuer(),
        "op",
        "mario",
        L2,
        "SpidL1",
    )
    .await;
    let binding = browser.cookie(&url_a, "varco-oidc").unwrap();
    // The load balancer sends the answer to B.
    let on_b = cb.replace(&url_a, &url_b);
    let cookie = format!("varco-oidc={binding}");
    let r = request("GET", &on_b, &[("cookie", cookie.as_str())], Bytes::new()).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let session_cookie = r.cookie();
    // The same answer replayed to A: refused (the pending login was used up in Redis).
    let r = request("GET", &cb, &[("cookie", cookie.as_str())], Bytes::new()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    for url in [&url_a, &url_b] {
        let r = request(
            "GET",
            &format!("{url}/x"),
            &[
                ("cookie", session_cookie.as_str()),
                ("accept", "application/json"),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
    }
}

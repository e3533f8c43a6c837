//! The identity-header contract as a backend sees it: the gateway publishes its keys at
//! `/_varco/jwks.json`, and `varco verify` checks a header against them (signature, expiry,
//! audience, issuer, request binding), printing the claims or the precise reason.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Gateway, request, simple_config, upstreams};
use varco::assertion::{KeySet, Minter, RequestBinding, SessionClaims, SigningAlgorithm};
use varco::identity::{FiscalCode, Identity, Level, Method, Role};

fn identity() -> Identity {
    Identity {
        subject: FiscalCode::parse("RSSMRA80A01H501U").unwrap(),
        given_name: "Mario".into(),
        family_name: "Rossi".into(),
        level: Level::SpidL2,
        method: Method::Spid,
        idp: "https://idp.example/".into(),
        roles: vec![Role("operatore".into())],
        patronato: None,
        auth_time: 0,
        extra: Default::default(),
    }
}

fn config_with_keys(up: std::net::SocketAddr, keys: &[&str], active: &str) -> String {
    let mut cfg = simple_config(up, "").replace("public = true", "public = false");
    cfg.push_str(&format!(
        "[assertion]\nissuer = \"https://gw.test/\"\nactive_kid = \"{active}\"\nwell_known_jwks = true\n"
    ));
    for k in keys {
        cfg.push_str(&format!(
            "[[assertion.key]]\nkid = \"{k}\"\nprivate_key = \"@DIR@/{k}.pem\"\n"
        ));
    }
    cfg
}

fn verify_cli(args: &[&str], token: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_varco"))
        .arg("verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("X-Varco-Assertion: {token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_verify_headers_against_the_published_jwks() {
    let up = upstreams::echo().await;
    let k1 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let k2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    let gw = Gateway::start_with(
        &config_with_keys(up, &["k1", "k2"], "k1")
            .replace("kid = \"k2\"", "kid = \"k2\"\nalg = \"EdDSA\""),
        &[("k1.pem", &k1), ("k2.pem", &k2)],
    );

    let jwks = request("GET", &gw.url("/_varco/jwks.json"), &[], "").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.headers["content-type"], "application/jwk-set+json");
    assert!(
        jwks.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let v = jwks.json();
    let kids: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["k1", "k2"]);
    let well_known = request("GET", &gw.url("/.well-known/jwks.json"), &[], "").await;
    assert_eq!(well_known.body, jwks.body);

    // A header minted with the gateway's active key (the same files) verifies via the URL.
    let keys = Arc::new(
        KeySet::from_pems(
            vec![(
                "k1".into(),
                SigningAlgorithm::ES256,
                k1.clone().into_bytes(),
            )],
            Some("k1"),
        )
        .unwrap(),
    );
    let minter = Minter::new(keys, Duration::from_secs(60));
    let session = SessionClaims::new("https://gw.test/", &identity(), "sid").unwrap();
    let url = "https://app.example.it/fascicolo/x?y=1";
    let token = minter
        .mint(
            &session,
            &RequestBinding {
                audience: "app",
                method: "GET",
                url,
            },
            SystemTime::now(),
        )
        .unwrap();
    let jwks_url = gw.url("/_varco/jwks.json");
    let base = [
        "--jwks",
        jwks_url.as_str(),
        "--aud",
        "app",
        "--iss",
        "https://gw.test/",
        "--method",
        "GET",
        "--url",
        url,
    ];
    let (ok, out, err) = verify_cli(&base, &token);
    assert!(ok, "{err}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["sub"], "RSSMRA80A01H501U");
    assert_eq!(claims["roles"][0], "operatore");

    // Replayed for another URL: refused with the reason.
    let mut other = base.to_vec();
    other[9] = "https://app.example.it/fascicolo/other";
    let (ok, _, err) = verify_cli(&other, &token);
    assert!(!ok);
    assert!(err.contains("minted for URL"), "{err}");

    // Wrong audience, and a JWKS file without the signing key.
    let mut wrong_aud = base.to_vec();
    wrong_aud[3] = "domande";
    let (ok, _, err) = verify_cli(&wrong_aud, &token);
    assert!(!ok && err.contains("audience"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let mut only_k2 = v.clone();
    only_k2["keys"].as_array_mut().unwrap().remove(0);
    std::fs::write(&file, only_k2.to_string()).unwrap();
    let mut from_file = base.to_vec();
    let file_arg = file.display().to_string();
    from_file[1] = &file_arg;
    let (ok, _, err) = verify_cli(&from_file, &token);
    assert!(!ok && err.contains("no key `k1`"), "{err}");
}

#[test]
fn identity_header_configuration_is_checked() {
    let check = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let cfg = simple_config("127.0.0.1:9".parse().unwrap(), "")
            .replace("public = true", "public = false")
            + extra;
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_varco"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A protected route without a signing key.
    let (ok, err) = check("");
    assert!(!ok && err.contains("assertion.key"), "{err}");
    // A header name clients could send (outside the stripped prefix).
    let (ok, err) = check("[assertion]\nheader = \"X-User\"\n");
    assert!(!ok && err.contains("assertion.header"), "{err}");
    // An active kid that is not configured; a lifetime over 300 s.
    let (ok, err) = check("[assertion]\nactive_kid = \"nope\"\nttl = \"10m\"\n");
    assert!(!ok && err.contains("assertion.active_kid"), "{err}");
    assert!(err.contains("assertion.ttl"), "{err}");
    // Session binding: headers reused at most 60 s.
    let (ok, err) = check("[assertion]\nbinding = \"session\"\nttl = \"90s\"\n");
    assert!(
        !ok && err.contains("assertion.ttl") && err.contains("session-bound"),
        "{err}"
    );
    // Unsafe methods on session binding only where asked, and only with session binding.
    let (ok, err) = check(
        "[[route]]\npath = \"/x\"\nupstream = \"app\"\npublic = false\nsession_binding_unsafe_methods = true\n",
    );
    assert!(
        !ok && err.contains("route[1].session_binding_unsafe_methods"),
        "{err}"
    );
    // ... which the route may also take from [assertion]'s default.
    let (_, err) = check(
        "[assertion]\nbinding = \"session\"\n[[route]]\npath = \"/x\"\nupstream = \"app\"\npublic = false\nsession_binding_unsafe_methods = true\n",
    );
    assert!(
        err.contains("assertion.key") && !err.contains("session_binding_unsafe_methods"),
        "only the missing key: {err}"
    );
    // A public route sends no identity header to bind.
    let (ok, err) = check(
        "[[route]]\npath = \"/p\"\nupstream = \"app\"\npublic = true\nheader_binding = \"session\"\n",
    );
    assert!(!ok && err.contains("route[1].header_binding"), "{err}");
}

/// `htu` is one rule a backend applies to the request it received (issue 11, item 7):
/// `<scheme of the connection it accepted>://<its Host header><its request target>`.
/// Real upstreams verifying every request by that rule, with a base path, with and
/// without `preserve_host`, and `varco verify` applying the same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_an_upstream_receives_passes_the_htu_rule() {
    use varco::demo::echo::{Verifier, serve};
    let based = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kept = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (based_addr, kept_addr) = (based.local_addr().unwrap(), kept.local_addr().unwrap());
    let cfg = format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[assertion]
issuer = "https://gw.test/"
[upstream.based]
url = "http://{based_addr}/base/"
[upstream.kept]
url = "http://{kept_addr}/svc"
preserve_host = true
[[route]]
path = "/a"
upstream = "based"
public = false
[[route]]
path = "/b"
upstream = "kept"
public = false
"#
    );
    let gw = Gateway::start(&cfg);
    let jwks = gw.url("/_varco/jwks.json");
    for (listener, aud) in [(based, "based"), (kept, "kept")] {
        let v = Verifier::new(
            jwks.clone(),
            None,
            aud.into(),
            "x-varco-assertion".into(),
            Some("https://gw.test/".into()),
        );
        tokio::spawn(serve(listener, Some(Arc::new(v))));
    }
    let cookie = common::dev_login(&gw, "operatore").await;
    for (path, host) in [
        ("/a", None),
        ("/a/x/y?q=1&r=%20two", None),
        ("/a/./x/../z?", None),
        ("/b", None),
        ("/b/doc?anno=2020", Some("app.example.it")),
        ("/b//doc%7e", Some("app.example.it:8443")),
    ] {
        let mut h = vec![("cookie", cookie.as_str()), ("accept", "application/json")];
        if let Some(host) = host {
            h.push(("host", host));
        }
        let r = request("GET", &gw.url(path), &h, "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = r.json();
        assert_eq!(
            seen["identity"]["verified"], true,
            "{path} (host {host:?}): {}",
            seen["identity"]
        );
        // The rule, written out: what the backend received.
        let host_seen = r.echoed("host").pop().unwrap();
        let query = seen["query"].as_str().unwrap();
        let target = if query.is_empty() {
            seen["path"].as_str().unwrap().to_string()
        } else {
            format!("{}?{query}", seen["path"].as_str().unwrap())
        };
        let url = format!("http://{host_seen}{target}");
        let claims = &seen["identity"]["claims"];
        assert_eq!(claims["htu"], url, "{path}");
        if path.starts_with("/a") {
            assert!(target.starts_with("/base/a"), "{target}");
            assert_eq!(host_seen, based_addr.to_string());
        } else {
            assert!(target.starts_with("/svc/b"), "{target}");
            assert_eq!(
                host_seen,
                host.map_or(gw.addr().to_string(), str::to_string)
            );
        }
        // `varco verify` applies the same rule to the same request.
        let token = r.echoed("x-varco-assertion").pop().unwrap();
        let aud = if path.starts_with("/a") {
            "based"
        } else {
            "kept"
        };
        let (ok, out, err) = verify_cli(
            &[
                "--jwks", &jwks, "--aud", aud, "--method", "GET", "--url", &url,
            ],
            &token,
        );
        assert!(ok, "{path}: {err}");
        assert!(
            out.contains("RSSMRA80A01H501U") || out.contains("\"sub\""),
            "{out}"
        );
    }
}

/// The payload of a JWT, decoded.
fn payload(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// A route with `header_binding = "session"`: safe requests of a session reuse one header
/// (no `htm`/`htu`) until shortly before it expires, then get a new one; unsafe methods
/// keep a request-bound header, as does a route without the setting; another login has its
/// own, and after a logout the session's header is no longer sent and the next login gets
/// a new one; `varco verify` says which binding a header has and refuses a session-bound
/// header where a request binding is expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bound_headers_are_reused_renewed_and_reported() {
    let up = upstreams::echo().await;
    let k1 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let gw = Gateway::start_with(
        &format!(
            r#"
mode = "demo"
[server]
workers = 1
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[session]
secure = false
cookie_name = "varco"
[assertion]
issuer = "https://gw.test/"
ttl = "3s"
[[assertion.key]]
kid = "k1"
private_key = "@DIR@/k1.pem"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/legacy"
upstream = "app"
public = false
[[route]]
path = "/"
upstream = "app"
public = false
header_binding = "session"
"#
        ),
        &[("k1.pem", &k1)],
    );
    let cookie = common::dev_login(&gw, "cittadino").await;
    let header = |r: &common::Resp| r.echoed("x-varco-assertion").pop().expect("a header");
    let send = |method: &'static str, path: &'static str, cookie: String| {
        let url = gw.url(path);
        async move {
            request(
                method,
                &url,
                &[("cookie", cookie.as_str()), ("accept", "application/json")],
                "",
            )
            .await
        }
    };
    let first = header(&send("GET", "/a", cookie.clone()).await);
    let again = header(&send("GET", "/b?x=1", cookie.clone()).await);
    assert_eq!(first, again, "one header per session and upstream");
    let claims = payload(&first);
    assert!(
        claims.get("htm").is_none() && claims.get("htu").is_none(),
        "{claims}"
    );
    assert_eq!(claims["aud"], "app");
    // Unsafe methods, and routes without the setting, keep request binding.
    let post = header(&send("POST", "/a", cookie.clone()).await);
    assert_eq!(payload(&post)["htm"], "POST");
    let legacy = header(&send("GET", "/legacy/x", cookie.clone()).await);
    assert_eq!(payload(&legacy)["htm"], "GET");

    // varco verify: the binding is reported; request binding is not faked.
    let jwks = gw.url("/_varco/jwks.json");
    let base = ["--jwks", jwks.as_str(), "--aud", "app"];
    let (ok, out, err) = verify_cli(&base, &first);
    assert!(ok, "{err}");
    assert!(out.contains("\"binding\": \"session\""), "{out}");
    let (ok, out, _) = verify_cli(&base, &legacy);
    assert!(ok && out.contains("\"binding\": \"request\""), "{out}");
    let mut bound = base.to_vec();
    bound.extend(["--method", "GET", "--url", "http://x/a"]);
    let (ok, _, err) = verify_cli(&bound, &first);
    assert!(!ok && err.contains("session-bound"), "{err}");

    // Shortly before it expires (the last sixth of 3 s: 1 s), a new one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let renewed = header(&send("GET", "/a", cookie.clone()).await);
    assert_ne!(renewed, first);
    assert!(payload(&renewed)["exp"].as_u64() > claims["exp"].as_u64());
    // Another login: its own header (its own sid).
    let other = common::dev_login(&gw, "cittadino").await;
    let theirs = header(&send("GET", "/a", other).await);
    assert_ne!(payload(&theirs)["sid"], payload(&renewed)["sid"]);

    // After a logout the session's header is no longer sent; the next login's is new.
    let out = send("POST", "/_varco/logout", cookie.clone()).await;
    assert_eq!(out.status, 200);
    let after = send("GET", "/a", cookie.clone()).await;
    assert_eq!(
        after.status, 401,
        "refused at the gateway: nothing reaches the upstream"
    );
    let again = common::dev_login(&gw, "cittadino").await;
    let fresh = header(&send("GET", "/a", again).await);
    assert_ne!(fresh, renewed);
    assert_ne!(payload(&fresh)["sid"], payload(&renewed)["sid"]);
    assert_ne!(payload(&fresh)["jti"], payload(&renewed)["jti"]);
}

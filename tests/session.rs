//! Protected routes through the real gateway: login redirect or 401, the development
//! login, the signed identity header as the upstream receives it (verified with the
//! gateway's JWKS, bound to method and URL), cookie tampering, rotation, logout, expiry,
//! plain identity headers, and the open-redirect corpus.

mod common;

use std::time::Duration;

use common::{Gateway, Resp, request, upstreams};
use varco::assertion::verify::{Expected, VerifyError, parse_jwks, verify};

fn demo_config(up: std::net::SocketAddr, session: &str) -> String {
    format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[session]
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
path = "/legacy"
upstream = "app"
public = false
identity_headers = true
[[route]]
path = "/pubblico"
upstream = "app"
public = true
"#
    )
}

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml");
const API: (&str, &str) = ("accept", "application/json");

/// Logs in as `user` through the development login; returns the cookie pair.
async fn login(gw: &Gateway, user: &str, return_to: &str, cookie: Option<&str>) -> (Resp, String) {
    let body = format!(
        "user={user}&return={}",
        form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
    );
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    let r = request("POST", &gw.url("/_varco/dev-login"), &headers, body).await;
    let set = r
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let pair = set.split(';').next().unwrap_or("").to_string();
    (r, pair)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_browsers_go_to_login_and_apis_get_401() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(up, ""));
    let r = request("GET", &gw.url("/fascicolo/x?anno=2020"), &[BROWSER], "").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers["location"],
        "/_varco/login?return=%2Ffascicolo%2Fx%3Fanno%3D2020"
    );
    let r = request("GET", &gw.url("/fascicolo/x"), &[API], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "login_required");
    assert_eq!(
        r.headers["www-authenticate"],
        "Varco realm=\"varco\", login=\"/_varco/login?return=%2Ffascicolo%2Fx\""
    );
    // A browser's POST is not redirected (the body would be lost): 401.
    let r = request("POST", &gw.url("/domande"), &[BROWSER], "x=1").await;
    assert_eq!(r.status, 401);
    // Public routes need nothing.
    let r = request("GET", &gw.url("/pubblico"), &[API], "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_a_verifiable_header_bound_to_the_request() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(up, ""));
    let page = request(
        "GET",
        &gw.url("/_varco/login?return=%2Ffascicolo"),
        &[BROWSER],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    let html = page.text();
    for user in ["cittadino", "operatore", "volontario", "minore"] {
        assert!(html.contains(&format!("value=\"{user}\"")), "{html}");
    }
    assert!(
        html.contains("name=\"return\" value=\"/fascicolo\""),
        "{html}"
    );

    let (r, cookie) = login(&gw, "operatore", "/fascicolo/x?anno=2020", None).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/fascicolo/x?anno=2020");
    let set = r.headers["set-cookie"].to_str().unwrap();
    for attr in [
        "__Host-varco=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(set.contains(attr), "{set}");
    }

    // A spoofed header rides along; the upstream must see only the gateway's.
    let r = request(
        "GET",
        &gw.url("/fascicolo/x?anno=2020"),
        &[API, ("cookie", &cookie), ("x-varco-assertion", "forged")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = r.echoed("x-varco-assertion");
    assert_eq!(headers.len(), 1);
    assert_ne!(headers[0], "forged");
    let token = &headers[0];

    let jwks = request("GET", &gw.url("/_varco/jwks.json"), &[], "").await;
    let jwks = parse_jwks(&jwks.body).unwrap();
    // htu: the URL the upstream received (its scheme, the Host it got, the target).
    let url = format!("http://{up}/fascicolo/x?anno=2020");
    assert_eq!(r.echoed("host"), vec![up.to_string()]);
    let expected = Expected {
        audience: "app",
        issuer: Some("https://gw.test/"),
        method: Some("GET"),
        url: Some(&url),
        leeway: 5,
    };
    let claims = verify(token, &jwks, &expected).unwrap();
    assert_eq!(claims.amr, "spid");
    assert_eq!(claims.acr, "https://www.spid.gov.it/SpidL2");
    assert_eq!(claims.roles, vec!["operatore".to_string()]);
    assert_eq!(claims.given_name, "Giulia");
    assert!(!claims.sid.is_empty());
    assert!(
        !cookie.contains(&claims.sid),
        "sid must not be the session id"
    );
    assert!(claims.exp - claims.iat <= 60);

    // The backend developer's tool agrees, straight from the JWKS URL.
    let jwks_url = gw.url("/_varco/jwks.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varco"))
        .args([
            "verify",
            "--jwks",
            &jwks_url,
            "--aud",
            "app",
            "--iss",
            "https://gw.test/",
        ])
        .args(["--method", "GET", "--url", &url, token])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_url = format!("http://{}/fascicolo/x?anno=2021", gw.addr());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["verify", "--jwks", &jwks_url, "--aud", "app"])
        .args(["--method", "GET", "--url", &other_url, token])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("minted for URL"));

    // Replayed for another URL or method: refused by the backend's check.
    let other = format!("http://{}/fascicolo/y", gw.addr());
    assert!(matches!(
        verify(
            token,
            &jwks,
            &Expected {
                url: Some(&other),
                ..expected
            }
        ),
        Err(VerifyError::Url { .. })
    ));
    let expected = Expected {
        audience: "app",
        issuer: Some("https://gw.test/"),
        method: Some("DELETE"),
        url: Some(&url),
        leeway: 5,
    };
    assert!(matches!(
        verify(token, &jwks, &expected),
        Err(VerifyError::Method { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_cookies_rotation_and_logout() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(up, ""));
    let (_, cookie) = login(&gw, "cittadino", "/", None).await;
    let ok = request("GET", &gw.url("/x"), &[API, ("cookie", &cookie)], "").await;
    assert_eq!(ok.status, 200);

    // Tampering: any change makes it no session.
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [
        tampered,
        format!("{cookie}x"),
        "__Host-varco=".into(),
        "__Host-varco=../../../etc/passwd".into(),
        format!("{cookie}; {cookie}"),
    ] {
        let r = request("GET", &gw.url("/x"), &[API, ("cookie", &bad)], "").await;
        assert_eq!(r.status, 401, "{bad}");
    }

    // A new login from the same browser gets a new id; the old one is dead.
    let (_, rotated) = login(&gw, "volontario", "/", Some(&cookie)).await;
    assert_ne!(rotated, cookie);
    let r = request("GET", &gw.url("/x"), &[API, ("cookie", &cookie)], "").await;
    assert_eq!(r.status, 401);
    let r = request("GET", &gw.url("/x"), &[API, ("cookie", &rotated)], "").await;
    assert_eq!(r.status, 200);

    // A GET only asks (a cross-site link cannot log anyone out) ...
    let r = request(
        "GET",
        &gw.url("/_varco/logout"),
        &[("cookie", &rotated)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("set-cookie").is_none());
    assert!(r.text().contains("method=\"post\""));
    let r = request("GET", &gw.url("/x"), &[API, ("cookie", &rotated)], "").await;
    assert_eq!(r.status, 200);
    // ... the POST ends the session and clears the cookie.
    let r = request(
        "POST",
        &gw.url("/_varco/logout"),
        &[("cookie", &rotated)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let clear = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        clear.contains("Max-Age=0") && clear.starts_with("__Host-varco=;"),
        "{clear}"
    );
    assert!(r.text().contains("Sei uscito"));
    let r = request("GET", &gw.url("/x"), &[API, ("cookie", &rotated)], "").await;
    assert_eq!(r.status, 401);
    // Logout with a safe return goes there; with an unsafe one it does not.
    let r = request(
        "POST",
        &gw.url("/_varco/logout?return=%2Fpubblico"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (303, "/pubblico")
    );
    // Without the session cookie (a cross-site POST carries none) nothing is cleared.
    assert!(r.headers.get("set-cookie").is_none());
    let r = request(
        "POST",
        &gw.url("/_varco/logout?return=%2F%2Fevil.example"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("location").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_and_at_their_absolute_limit() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(
        up,
        "idle_timeout = \"2s\"\nabsolute_timeout = \"3s\"",
    ));
    // Idle: quiet for more than the idle timeout.
    let (_, cookie) = login(&gw, "cittadino", "/", None).await;
    assert_eq!(
        request("GET", &gw.url("/x"), &[API, ("cookie", &cookie)], "")
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        request("GET", &gw.url("/x"), &[API, ("cookie", &cookie)], "")
            .await
            .status,
        401
    );

    // Absolute: active every 400 ms, still ended after 3 s (timestamps are whole seconds,
    // so the end falls between 2 and 3 s after login).
    let (_, cookie) = login(&gw, "cittadino", "/", None).await;
    let start = std::time::Instant::now();
    let mut ended_at = None;
    while start.elapsed() < Duration::from_secs(6) {
        let s = request("GET", &gw.url("/x"), &[API, ("cookie", &cookie)], "")
            .await
            .status;
        if s == 401 {
            ended_at = Some(start.elapsed());
            break;
        }
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let ended_at = ended_at.expect("an active session outlived its absolute timeout");
    assert!(
        ended_at >= Duration::from_millis(1900),
        "ended too early: {ended_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_identity_headers_only_where_the_route_asks() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(up, ""));
    let (_, cookie) = login(&gw, "operatore", "/", None).await;
    let r = request("GET", &gw.url("/legacy/x"), &[API, ("cookie", &cookie)], "").await;
    assert_eq!(r.echoed("x-varco-given-name"), vec!["Giulia"]);
    assert_eq!(r.echoed("x-varco-level"), vec!["SpidL2"]);
    assert_eq!(r.echoed("x-varco-method"), vec!["spid"]);
    assert_eq!(r.echoed("x-varco-roles"), vec!["operatore"]);
    assert_eq!(r.echoed("x-varco-fiscal-code")[0].len(), 16);
    let r = request("GET", &gw.url("/other"), &[API, ("cookie", &cookie)], "").await;
    assert!(r.echoed("x-varco-fiscal-code").is_empty());
    // Spoofed plain headers never pass, with or without the opt-in.
    let r = request(
        "GET",
        &gw.url("/legacy/x"),
        &[API, ("cookie", &cookie), ("x-varco-roles", "admin")],
        "",
    )
    .await;
    assert_eq!(r.echoed("x-varco-roles"), vec!["operatore"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_corpus_through_the_login() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&demo_config(up, ""));
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "http:evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/_varco/logout",
    ] {
        let (r, _) = login(&gw, "cittadino", bad, None).await;
        assert_eq!(r.status, 303, "{bad}");
        assert_eq!(r.headers["location"], "/", "{bad} was followed");
        let q: String = form_urlencoded::byte_serialize(bad.as_bytes()).collect();
        let page = request(
            "GET",
            &gw.url(&format!("/_varco/login?return={q}")),
            &[],
            "",
        )
        .await;
        assert!(page.text().contains("name=\"return\" value=\"/\""), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_login_is_refused_outside_demo_mode() {
    let up = upstreams::echo().await;
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cfg = demo_config(up, "")
        .replace("mode = \"demo\"", "mode = \"serve\"")
        .replace(
            "[upstream.app]",
            "[[assertion.key]]\nkid = \"k1\"\nprivate_key = \"@DIR@/k1.pem\"\n[upstream.app]",
        );
    let gw = Gateway::start_with(&cfg, &[("k1.pem", &key)]);
    let (r, cookie) = login(&gw, "operatore", "/", None).await;
    assert_eq!(r.status, 404);
    assert!(cookie.is_empty());
    let page = request("GET", &gw.url("/_varco/login"), &[], "").await;
    assert_eq!(page.status, 503);
    assert!(!page.text().contains("operatore"));
}

//! The gateway binary in front of real upstreams: routing on normalized paths,
//! forwarding, hop-by-hop and forwarded headers, identity-header stripping, upgrades.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Gateway, get_json, raw, raw_status, request, simple_config, upstreams};

fn two_upstreams(main: std::net::SocketAddr, admin: std::net::SocketAddr) -> String {
    format!(
        r#"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[upstream.main]
url = "http://{main}"
[upstream.admin]
url = "http://{admin}/base"
[[route]]
host = "127.0.0.1"
path = "/"
upstream = "main"
public = true
[[route]]
host = "127.0.0.1"
path = "/admin"
upstream = "admin"
public = true
[[route]]
host = "other.example.it"
path = "/"
upstream = "admin"
public = true
[[route]]
host = "only.example.it"
path = "/x"
upstream = "main"
public = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_on_normalized_paths() {
    let main = upstreams::echo().await;
    let admin = upstreams::echo().await;
    let gw = Gateway::start(&two_upstreams(main, admin));

    // Longest prefix wins; the admin upstream's base path is prepended.
    let r = get_json(&gw.url("/admin/users?id=7"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/base/admin/users");
    assert_eq!(r.json()["query"], "id=7");

    // Segment boundaries: /administrator is not under /admin.
    let r = get_json(&gw.url("/administrator"), &[]).await;
    assert_eq!(r.json()["path"], "/administrator");

    // Dot-segments, encoded dots and doubled slashes cannot dodge the /admin rule, and the
    // upstream receives the normalized path.
    for dodge in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/.%2E/admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/./admin/./x",
    ] {
        let r = get_json(&gw.url(dodge), &[]).await;
        assert_eq!(r.status, 200, "{dodge}");
        assert_eq!(r.json()["path"], "/base/admin/x", "{dodge}");
    }

    // What backends read differently is refused, not guessed: encoded separators, `..;`,
    // trailing dots. A path parameter ends a segment for routing, as servlet containers read it.
    for ambiguous in [
        "/x%2F..%2Fadmin",
        "/x%5c..%5cadmin",
        "/pub/..;/admin/x",
        "/admin./x",
        // Two-character segments with a trailing dot, and double encoding (issue 11).
        "/a./admin/x",
        "/ad.",
        "/%2561dmin/x",
        "/x/%252e%252e/admin/x",
        // Trailing spaces (Windows trims them), overlong UTF-8, encoded controls, `.` and `/`
        // lookalikes (found by a review).
        "/admin%20/x",
        "/admin.%20/x",
        "/pub/%c0%ae%c0%ae/admin/x",
        "/pub/..%09/admin/x",
        "/pub/%E2%80%A4%E2%80%A4/admin/x",
        "/pub/%EF%BC%8E%EF%BC%8E/admin/x",
        "/admin%C2%A0/x",
    ] {
        let answer = raw(
            gw.addr(),
            format!("GET {ambiguous} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(raw_status(&answer), 400, "{ambiguous}: {answer}");
    }
    let r = get_json(&gw.url("/admin;jsessionid=1/users"), &[]).await;
    assert_eq!(r.json()["path"], "/base/admin;jsessionid=1/users");

    // Two Host headers: refused (RFC 9112).
    let answer = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: other.example.it\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");

    // A Host the router would read one way and a backend another: refused.
    let answer = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: other.example.it:1@only.example.it\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");

    // Host routing: a more specific host wins; an unknown host/path answers 404 page.
    let r = get_json(&gw.url("/anything"), &[("host", "other.example.it")]).await;
    assert_eq!(r.json()["path"], "/base/anything");
    let r = request(
        "GET",
        &gw.url("/nope"),
        &[("host", "only.example.it"), ("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("La pagina richiesta non esiste"),
        "{}",
        r.text()
    );
    let r = get_json(&gw.url("/nope"), &[("host", "only.example.it")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");

    // A malformed escape is a 400, not a guess.
    let answer = raw(
        gw.addr(),
        b"GET /a%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400);

    // A standard method in another case is refused, never forwarded (issue 11, item 8);
    // an extension method passes as sent.
    for method in ["post", "Get", "dElEtE"] {
        let answer = raw(
            gw.addr(),
            format!("{method} /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(raw_status(&answer), 400, "{method}: {answer}");
        assert!(
            answer.contains("bad_method") || answer.contains("non è valida"),
            "{answer}"
        );
    }
    let answer = raw(
        gw.addr(),
        b"PROPFIND /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_under_the_reserved_prefix_are_not_forwarded() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let r = get_json(&gw.url("/_varco/nothing"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    let r = get_json(&gw.url("/x/../_varco/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let r = get_json(
        &gw.url("/"),
        &[
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    for gone in [
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(r.echoed(gone).is_empty(), "{gone} reached the upstream");
    }
    assert_eq!(r.echoed("x-end-to-end"), vec!["kept"]);
    // Only the gateway's own connection header (if any) reaches the upstream.
    assert!(
        r.echoed("connection")
            .iter()
            .all(|v| !v.contains("x-private-hop")),
        "{:?}",
        r.echoed("connection")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_written_by_the_gateway() {
    let up = upstreams::echo().await;
    // Untrusted client: every spoofed value is replaced.
    let gw = Gateway::start(&simple_config(up, ""));
    let r = get_json(
        &gw.url("/"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            // The `_` spellings CGI/WSGI/IIS read as the `-` ones, and the client-IP
            // family (issue 11, item 5).
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Original_URL", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("x_http_method_override", "DELETE"),
            ("x-method-override", "DELETE"),
            ("true-client-ip", "6.6.6.6"),
            ("x-client-ip", "6.6.6.6"),
            ("x-cluster-client-ip", "6.6.6.6"),
            ("cf-connecting-ip", "6.6.6.6"),
            ("proxy-client-ip", "6.6.6.6"),
            ("wl-proxy-client-ip", "6.6.6.6"),
            ("x-original-forwarded-for", "6.6.6.6"),
            ("x-arr-clientcert", "MII"),
            ("x-forwarded-user", "admin"),
            ("x-ssl-client-s-dn", "CN=admin"),
            ("x-ms-client-principal-name", "admin"),
            ("host", "app.example.it:8080"),
        ],
    )
    .await;
    for gone in [
        "x_forwarded_for",
        "x_original_url",
        "x-forwarded-uri",
        "x_http_method_override",
        "x-method-override",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "proxy-client-ip",
        "wl-proxy-client-ip",
        "x-original-forwarded-for",
        "x-arr-clientcert",
        "x-forwarded-user",
        "x-ssl-client-s-dn",
        "x-ms-client-principal-name",
    ] {
        assert!(r.echoed(gone).is_empty(), "{gone}: {:?}", r.echoed(gone));
    }
    assert_eq!(r.echoed("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.echoed("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.echoed("x-forwarded-host"), vec!["app.example.it:8080"]);
    assert!(r.echoed("x-original-url").is_empty());
    assert!(r.echoed("x-http-method-override").is_empty());
    assert_eq!(
        r.echoed("forwarded"),
        vec!["for=127.0.0.1;proto=http;host=\"app.example.it:8080\""]
    );
    assert!(r.echoed("x-real-ip").is_empty());
    // The upstream gets its own authority as Host.
    assert_eq!(r.echoed("host"), vec![up.to_string()]);
    drop(gw);

    // A trusted proxy's chain is kept and extended.
    let gw = Gateway::start(&simple_config(up, "trusted_proxies = [\"127.0.0.0/8\"]"));
    let r = get_json(
        &gw.url("/"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-real-ip", "203.0.113.9"),
            // Proxies write the `-` spelling: an `_` one is the client's, even through one.
            ("x_forwarded_for", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(r.echoed("x-real-ip"), vec!["203.0.113.9"]);
    assert!(r.echoed("x_forwarded_for").is_empty());
    assert_eq!(r.echoed("x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1"]);
    assert_eq!(r.echoed("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        r.echoed("forwarded")[0],
        format!(
            "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"{}\"",
            gw.addr()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    // Raw bytes: mixed case, underscores, repeats, mixed separators.
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\
X-Varco-Assertion: forged1\r\nx-varco-assertion: forged2\r\nX-VARCO-FISCAL-CODE: RSSMRA80A01H501U\r\n\
X_Varco_Roles: admin\r\nx-varco_level: SpidL3\r\nX-Varco-: empty\r\nX-Other: kept\r\n\
Connection: close\r\n\r\n";
    let answer = raw(gw.addr(), req, Duration::from_secs(5));
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(!lower.contains("forged"), "{answer}");
    assert!(!lower.contains("rssmra80a01h501u"), "{answer}");
    assert!(!lower.contains("spidl3"), "{answer}");
    assert!(!lower.contains("\"admin\""), "{answer}");
    assert!(lower.contains("x-other"), "{answer}");

    // Over HTTP/1 via hyper too, with a custom prefix configured.
    drop(gw);
    let gw = Gateway::start(&simple_config(up, "identity_header_prefix = \"x-idp-\""));
    let r = get_json(
        &gw.url("/"),
        &[
            ("x-idp-sub", "forged"),
            ("x_idp_sub", "forged"),
            ("x-varco-kept", "1"),
        ],
    )
    .await;
    assert!(r.echoed("x-idp-sub").is_empty());
    assert!(r.echoed("x_idp_sub").is_empty());
    assert_eq!(r.echoed("x-varco-kept"), vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_and_ambiguous_framing_are_refused() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    // obs-fold: a continuation line could smuggle an identity header past a naive filter.
    let answer = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Other: a\r\n X-Varco-Assertion: forged\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(!answer.contains("forged"));

    // Conflicting Content-Length values.
    let answer = raw(
        gw.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");

    // Transfer-Encoding that is not chunked.
    let answer = raw(
        gw.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");

    // Content-Length together with chunked, in either order: refused with 400 and the
    // connection closed; the smuggled second request never reaches the upstream.
    for heads in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let smuggle = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n{heads}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let answer = raw(gw.addr(), smuggle.as_bytes(), Duration::from_secs(5));
        assert_eq!(raw_status(&answer), 400, "{answer}");
        assert!(answer.contains("bad_framing"), "{answer}");
        assert!(!answer.contains("/smuggled"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }

    // Repeated identical Content-Length (hyper would merge them): refused too.
    let answer = raw(
        gw.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 400, "{answer}");

    // A clean keep-alive pipeline on one connection is untouched.
    let answer = raw(
        gw.addr(),
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_relayed() {
    let up = upstreams::upgrade_echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let (mut s, head) = common::websocket_to(gw.addr(), "/ws", None);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in ["hello", "ciao mondo"] {
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.to_ascii_uppercase().as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_end_at_their_maximum_lifetime() {
    let up = upstreams::upgrade_echo().await;
    let gw = Gateway::start(&simple_config(up, "tunnel_max_lifetime = \"600ms\""));
    let (mut s, head) = common::websocket_to(gw.addr(), "/ws", None);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // The tunnel works, then is closed by the gateway.
    s.write_all(b"ping").unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 4);
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break start.elapsed(),
            Ok(_) => continue,
        }
    };
    assert!(closed >= Duration::from_millis(500), "{closed:?}");
    assert!(
        closed < Duration::from_secs(4),
        "tunnel outlived its lifetime: {closed:?}"
    );
}

/// A tunnel on a protected route ends with its session (issue 11, item 12): at once on
/// logout or on a new login of the browser, within the check interval when it idles out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_end_with_their_session() {
    let up = upstreams::upgrade_echo().await;
    let cfg = format!(
        r#"
mode = "demo"
[server]
tunnel_check_interval = "200ms"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[session]
idle_timeout = "3s"
[upstream.ws]
url = "http://{up}"
[[route]]
path = "/"
upstream = "ws"
public = false
"#
    );
    let gw = Gateway::start(&cfg);
    let login = async || common::dev_login(&gw, "cittadino").await;
    let open = |cookie: &str| {
        let (s, head) = common::websocket_to(gw.addr(), "/ws", Some(cookie));
        assert!(head.starts_with("http/1.1 101"), "{head}");
        s
    };
    // Without a session there is no tunnel at all.
    let (_, head) = common::websocket_to(gw.addr(), "/ws", None);
    assert!(head.starts_with("http/1.1 401"), "{head}");

    // Logout: the session's two tunnels close at once; another session's stays.
    let cookie = login().await;
    let other = login().await;
    let (mut t1, mut t2, mut t3) = (open(&cookie), open(&cookie), open(&other));
    assert!(!common::tunnel_closed_within(
        &mut t1,
        Duration::from_millis(300)
    ));
    let r = request(
        "POST",
        &gw.url("/_varco/logout"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        common::tunnel_closed_within(&mut t1, Duration::from_secs(1)),
        "logout"
    );
    assert!(
        common::tunnel_closed_within(&mut t2, Duration::from_secs(1)),
        "logout"
    );
    assert!(!common::tunnel_closed_within(
        &mut t3,
        Duration::from_millis(500)
    ));

    // Idle expiry: traffic through the tunnel is not activity of the session; with no
    // request for idle_timeout (3 s) the tunnel ends within the check interval.
    let start = std::time::Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        common::tunnel_closed_within(&mut t3, Duration::from_secs(8))
    })
    .await
    .unwrap();
    assert!(closed, "the tunnel outlived its idle session");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_relayed() {
    // This upstream switches protocols for anything: the gateway must not relay h2c (a
    // tunnel of HTTP/2 requests it would never see) nor an upgrade it did not ask for.
    let up = upstreams::upgrade_echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    for req in [
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a\r\nContent-Length: 0\r\n\r\n",
    ] {
        // Keep-alive: the answer arrives at once; the read then waits out a short timeout.
        let answer = raw(gw.addr(), req.as_bytes(), Duration::from_millis(700));
        assert_eq!(raw_status(&answer), 502, "{req}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_passed_and_returned() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let r = get_json(&gw.url("/"), &[("x-request-id", "client-chosen")]).await;
    let returned = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(returned.len(), 32, "{returned}");
    assert!(
        returned
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lower-case hex: {returned}"
    );
    let second = get_json(&gw.url("/"), &[]).await.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(second, returned, "each request gets its own id");
    assert_ne!(
        returned, "client-chosen",
        "untrusted clients cannot pick the id"
    );
    assert_eq!(r.echoed("x-request-id"), vec![returned.clone()]);

    let gw2 = Gateway::start(&simple_config(up, "trusted_proxies = [\"127.0.0.1/32\"]"));
    let r = get_json(&gw2.url("/"), &[("x-request-id", "edge-42")]).await;
    assert_eq!(r.headers["x-request-id"], "edge-42");
    assert_eq!(r.echoed("x-request-id"), vec!["edge-42"]);
}

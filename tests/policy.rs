//! Patronato authorization through the real gateway: roles and delegations from files
//! (reloaded on change) and from an HTTP source (down → 503), denials as pages and JSON
//! with an audit event, and path tricks that never turn a denial into an allow.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, Resp, request, upstreams};
use varco::identity::fiscal_code::check_character;

fn cf(first15: &str) -> String {
    format!("{first15}{}", check_character(first15.as_bytes()) as char)
}

/// The demo's users (development login) and a client without an account.
fn citizen() -> String {
    cf("RSSMRA80A01H501")
}
fn operator() -> String {
    cf("BNCGLI85C52H501")
}
fn volunteer() -> String {
    cf("VRDLCU90L20F205")
}
fn client() -> String {
    cf("VRDGPP70B02F205")
}

fn config(up: SocketAddr, directory: &str) -> String {
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

{directory}

[[route]]
path = "/fascicolo"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL2"
roles = ["operatore", "volontario", "cittadino"]
[[route.policy.rule]]
role = "volontario"
effect = "allow"
http_methods = ["GET", "HEAD"]
paths = ["/fascicolo/**"]
[route.policy.delegation]
path = "/fascicolo/{{assistito}}/**"
required_for = ["volontario"]
self_only = ["cittadino"]

[[route]]
path = "/domande"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL2"
roles = ["operatore"]

[[route]]
path = "/programmi"
upstream = "app"
public = true

[[route]]
path = "/riservato"
upstream = "app"
public = false
[route.policy]
min_level = "SpidL3"

[[route]]
path = "/stampa"
upstream = "app"
public = false
[route.policy]
roles = ["operatore", "volontario", "cittadino"]
[[route.policy.rule]]
role = "volontario"
effect = "allow"
http_methods = ["GET", "HEAD"]
[route.policy.delegation]
query = "cf"
required_for = ["volontario"]
self_only = ["cittadino"]

[[route]]
path = "/pratica"
upstream = "app"
public = false
[route.policy]
roles = ["operatore", "volontario"]
[route.policy.delegation]
header = "X-Assistito"
required_for = ["volontario"]
"#
    )
}

fn files_directory() -> &'static str {
    r#"
[directory]
roles_file = "@DIR@/roles.csv"
delegations_file = "@DIR@/deleghe.csv"
cache_ttl = "1s"
negative_ttl = "1s"
reload_interval = "200ms"
"#
}

fn roles_csv() -> String {
    format!(
        "fiscal_code,role,patronato,valid_from,valid_to\n{},operatore,P1,2020-01-01,\n{},volontario,P1,2020-01-01,\n",
        operator(),
        volunteer()
    )
}

fn deleghe_csv(extra: &str) -> String {
    format!(
        "patronato,assistito,valid_from,valid_to,revoked\nP1,{},2025-01-01,,false\nP1,{},2020-01-01,2021-01-01,false\n{extra}",
        citizen(),
        client()
    )
}

async fn login(gw: &Gateway, user: &str) -> String {
    let r = request(
        "POST",
        &gw.url("/_varco/dev-login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("user={user}&return=%2F"),
    )
    .await;
    assert_eq!(r.status, 303);
    r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn as_user(gw: &Gateway, cookie: &str, method: &str, path: &str) -> Resp {
    request(
        method,
        &gw.url(path),
        &[("cookie", cookie), ("accept", "application/json")],
        "",
    )
    .await
}

fn code(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_delegations_from_files_decide_each_request() {
    let up = upstreams::echo().await;
    let gw = Gateway::start_with(
        &config(up, files_directory()),
        &[
            ("roles.csv", &roles_csv()),
            ("deleghe.csv", &deleghe_csv("")),
        ],
    );
    let op = login(&gw, "operatore").await;
    let vol = login(&gw, "volontario").await;
    let cit = login(&gw, "cittadino").await;
    let own = format!("/fascicolo/{}/estratto", citizen());
    let expired = format!("/fascicolo/{}/estratto", client());

    // Operators: read and write, no delegation needed; the header carries their roles.
    let r = as_user(&gw, &op, "GET", &expired).await;
    assert_eq!(r.status, 200);
    let token = r.echoed("x-varco-assertion").pop().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["roles"], serde_json::json!(["operatore"]));
    assert_eq!(as_user(&gw, &op, "POST", &own).await.status, 200);
    assert_eq!(
        as_user(&gw, &op, "POST", "/domande/nuova").await.status,
        200
    );

    // Volunteers: read with a delegation in force, never write, never applications.
    assert_eq!(as_user(&gw, &vol, "GET", &own).await.status, 200);
    let r = as_user(&gw, &vol, "POST", &own).await;
    assert_eq!(
        (r.status, code(&r)),
        (403, "operation_not_allowed_for_role".into())
    );
    let r = as_user(&gw, &vol, "GET", &expired).await;
    assert_eq!(
        (r.status, code(&r)),
        (403, "delegation_not_in_force".into())
    );
    let r = as_user(&gw, &vol, "GET", "/domande/nuova").await;
    assert_eq!((r.status, code(&r)), (403, "role_not_allowed".into()));
    // A page for browsers, saying what is missing.
    let page = request(
        "GET",
        &gw.url(&expired),
        &[("cookie", &vol), ("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(page.status, 403);
    assert!(
        page.text().contains("non è valida in questa data"),
        "{}",
        page.text()
    );
    assert!(
        !page.text().contains(&client()),
        "no client data on the page"
    );

    // Citizens: their own file only.
    assert_eq!(as_user(&gw, &cit, "GET", &own).await.status, 200);
    let r = as_user(&gw, &cit, "GET", &expired).await;
    assert_eq!((r.status, code(&r)), (403, "not_own_file".into()));

    // The audit trail names route, subject and reason.
    let line = gw
        .wait_log(|l| l.contains("access_denied") && l.contains("not valid on this date"))
        .expect("an access_denied event");
    assert!(
        line.contains(&volunteer()) && line.contains("route[0]"),
        "{line}"
    );

    // The delegation file changes: the new delegation counts without a restart.
    std::fs::write(
        gw.dir.path().join("deleghe.csv"),
        format!(
            "patronato,assistito,valid_from,valid_to,revoked\nP1,{},2025-01-01,,false\nP1,{},2026-01-01,,false\n",
            citizen(),
            client()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if as_user(&gw, &vol, "GET", &expired).await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", gw.logs().join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Below the route's level: browsers log in again at it, APIs get 401 naming it.
    let r = request(
        "GET",
        &gw.url("/riservato/x"),
        &[("cookie", &op), ("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, 302);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .ends_with("&level=SpidL3")
    );
    let r = as_user(&gw, &op, "GET", "/riservato/x").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["required_level"], "SpidL3");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("level=SpidL3")
    );
    // A public route needs nothing.
    let r = request("GET", &gw.url("/programmi/x"), &[], "").await;
    assert_eq!(r.status, 200);
    // Without a session, the login asks at once for the level the policy demands (one
    // login, not a login and then a step-up).
    let r = request("GET", &gw.url(&own), &[("accept", "text/html")], "").await;
    assert_eq!(r.status, 302);
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .ends_with("&level=SpidL2"),
        "{:?}",
        r.headers["location"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_applications_as_a_volunteer() {
    let up = upstreams::echo().await;
    let gw = Gateway::start_with(
        &config(up, files_directory()),
        &[
            ("roles.csv", &roles_csv()),
            ("deleghe.csv", &deleghe_csv("")),
        ],
    );
    let vol = login(&gw, "volontario").await;
    for path in [
        "/domande/nuova",
        "/domande/../domande/nuova",
        "/fascicolo/../domande/nuova",
        "/%64omande/nuova",
        "/domande/%2e%2e/domande/nuova",
        "//domande//nuova",
        "/domande./nuova",
        "/DOMANDE/nuova",
        "/domande;x=1/nuova",
        "/domande%2Fnuova",
        "/fascicolo/x/..%2F..%2Fdomande",
    ] {
        for method in ["GET", "POST"] {
            let r = as_user(&gw, &vol, method, path).await;
            assert_ne!(r.status, 200, "{method} {path}");
            assert!(
                matches!(r.status, 400 | 403 | 404),
                "{method} {path}: {}",
                r.status
            );
        }
    }
}

/// (path suffix, JSON answer) pairs; `None` makes the service answer 500.
type Records = Arc<Mutex<Option<Vec<(String, String)>>>>;

/// A delegation service whose answers the test controls.
async fn delegation_server(records: Records) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let records = records.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    let current = records.lock().unwrap().clone();
                    async move {
                        let (status, body) = match current {
                            None => (500, String::new()),
                            Some(list) => {
                                match list.iter().find(|(k, _)| path.ends_with(k.as_str())) {
                                    Some((_, json)) => (200, json.clone()),
                                    None => (404, String::new()),
                                }
                            }
                        };
                        let mut resp = http::Response::new(Full::new(bytes::Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_delegation_source_is_cached_and_its_outage_is_a_503() {
    let up = upstreams::echo().await;
    let records = Arc::new(Mutex::new(Some(vec![(
        format!("/P1/{}", citizen()),
        r#"{"valid_from": "2025-01-01", "valid_to": null, "revoked": false}"#.to_string(),
    )])));
    let server = delegation_server(records.clone()).await;
    let directory = format!(
        r#"
[directory]
roles_file = "@DIR@/roles.csv"
delegations_url = "http://{server}/deleghe/{{patronato}}/{{assistito}}"
cache_ttl = "1s"
negative_ttl = "1s"
"#
    );
    let gw = Gateway::start_with(&config(up, &directory), &[("roles.csv", &roles_csv())]);
    let vol = login(&gw, "volontario").await;
    let own = format!("/fascicolo/{}/estratto", citizen());
    let other = format!("/fascicolo/{}/estratto", client());
    assert_eq!(as_user(&gw, &vol, "GET", &own).await.status, 200);
    let r = as_user(&gw, &vol, "GET", &other).await;
    assert_eq!((r.status, code(&r)), (403, "delegation_missing".into()));
    // Down: cached answers still count until they expire, then 503 — never an allow.
    *records.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = as_user(&gw, &vol, "GET", &own).await;
    assert_eq!(
        (r.status, code(&r)),
        (503, "authorization_source_unavailable".into())
    );
    let page = request(
        "GET",
        &gw.url(&own),
        &[("cookie", &vol), ("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(page.status, 503);
    assert!(page.text().contains("permessi"), "{}", page.text());
    // Back: a revoked delegation is a 403.
    *records.lock().unwrap() = Some(vec![(
        format!("/P1/{}", citizen()),
        r#"{"valid_from": "2025-01-01", "revoked": true}"#.to_string(),
    )]);
    let r = as_user(&gw, &vol, "GET", &own).await;
    assert_eq!((r.status, code(&r)), (403, "delegation_revoked".into()));
    let metrics = request("GET", &gw.url("/_varco/metrics"), &[], "")
        .await
        .text();
    assert!(
        metrics.contains("varco_directory_lookups_total{source=\"delegations\",outcome=\"error\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"hit\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_an_http_directory_are_cached_and_its_outage_is_a_503() {
    let up = upstreams::echo().await;
    let records: Records = Arc::new(Mutex::new(Some(vec![(
        format!("/ruoli/{}", operator()),
        r#"[{"role": "operatore", "patronato": "P1", "valid_from": "2020-01-01"}]"#.to_string(),
    )])));
    let server = delegation_server(records.clone()).await;
    let directory = format!(
        r#"
[directory]
roles_url = "http://{server}/ruoli/{{fiscal_code}}"
delegations_file = "@DIR@/deleghe.csv"
cache_ttl = "1s"
negative_ttl = "1s"

[[route]]
path = "/semplice"
upstream = "app"
public = false
"#
    );
    let gw = Gateway::start_with(
        &config(up, &directory),
        &[("deleghe.csv", &deleghe_csv(""))],
    );
    let op = login(&gw, "operatore").await;
    // The directory, not the development login, says who is an operator.
    assert_eq!(
        as_user(&gw, &op, "POST", "/domande/nuova").await.status,
        200
    );
    assert_eq!(as_user(&gw, &op, "GET", "/semplice/x").await.status, 200);
    let vol = login(&gw, "volontario").await;
    let r = as_user(&gw, &vol, "GET", "/domande/nuova").await;
    assert_eq!((r.status, code(&r)), (403, "role_not_allowed".into()));
    // The directory changes: after the cache entry expires the role is gone.
    *records.lock().unwrap() = Some(Vec::new());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = as_user(&gw, &op, "POST", "/domande/nuova").await;
    assert_eq!((r.status, code(&r)), (403, "role_not_allowed".into()));
    // Down: 503, never an allow.
    *records.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = as_user(&gw, &op, "POST", "/domande/nuova").await;
    assert_eq!(
        (r.status, code(&r)),
        (503, "authorization_source_unavailable".into())
    );
    // A protected route without a policy too: its identity header would carry roles
    // nobody can vouch for.
    let r = as_user(&gw, &op, "GET", "/semplice/x").await;
    assert_eq!(
        (r.status, code(&r)),
        (503, "authorization_source_unavailable".into())
    );
    // Every login method reads the roles when the session is made (one `finish_login`):
    // while the source is down a login makes no session, for the development login too.
    let r = request(
        "POST",
        &gw.url("/_varco/dev-login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ],
        "user=operatore&return=%2F".to_string(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (503, "authorization_source_unavailable".into())
    );
    assert!(r.headers.get("set-cookie").is_none());
}

/// A request that names its client twice never reaches the upstream (issue 11, item 2):
/// the volunteer with a delegation for A asking `?cf=A&cf=B` (PHP, Django and Rails read
/// B), the header twice or in its `_` spelling, the parameter in a form body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_named_twice_is_refused_and_never_forwarded() {
    let up = upstreams::echo().await;
    let gw = Gateway::start_with(
        &config(up, files_directory()),
        &[
            ("roles.csv", &roles_csv()),
            ("deleghe.csv", &deleghe_csv("")),
        ],
    );
    let vol = login(&gw, "volontario").await;
    let op = login(&gw, "operatore").await;
    let cit = login(&gw, "cittadino").await;
    let (a, b) = (citizen(), client());
    let send =
        async |cookie: &str, method: &str, path: &str, extra: &[(&str, &str)], body: &str| {
            let mut h = vec![("cookie", cookie), ("accept", "application/json")];
            h.extend_from_slice(extra);
            request(method, &gw.url(path), &h, body.to_string()).await
        };
    // Named once: decided as before, and forwarded.
    let r = send(&vol, "GET", &format!("/stampa/doc?cf={a}"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], format!("cf={a}"));
    for q in [
        format!("cf={a}&cf={b}"),
        format!("cf={a}&CF={b}"),
        format!("cf={a}&cf%5B%5D={b}"),
        format!("cf={a};cf={b}"),
        // PHP trims leading spaces and cuts at NUL (found by a review).
        format!("cf={a}&%20cf={b}"),
        format!("cf={a}&+cf={b}"),
        format!("cf={a}&cf%00x={b}"),
    ] {
        for who in [&vol, &op, &cit] {
            let r = send(who, "GET", &format!("/stampa/doc?{q}"), &[], "").await;
            assert_eq!(r.status, 400, "{q}: {}", r.text());
            assert_eq!(code(&r), "client_named_more_than_once", "{q}");
            assert!(r.json().get("query").is_none(), "forwarded: {}", r.text());
        }
    }
    // The parameter in a form body as well (operators may POST here).
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = send(
        &op,
        "POST",
        &format!("/stampa/doc?cf={a}"),
        &[form],
        &format!("cf={b}"),
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (400, "client_named_more_than_once".into())
    );
    let multipart = ("content-type", "multipart/form-data; boundary=XyZ");
    let mp =
        format!("--XyZ\r\nContent-Disposition: form-data; name=\"cf\"\r\n\r\n{b}\r\n--XyZ--\r\n");
    let r = send(
        &op,
        "POST",
        &format!("/stampa/doc?cf={a}"),
        &[multipart],
        &mp,
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (400, "client_named_more_than_once".into())
    );
    let json = ("content-type", "application/json");
    let r = send(
        &op,
        "POST",
        &format!("/stampa/doc?cf={a}"),
        &[json],
        &format!("{{\"cf\":\"{b}\"}}"),
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (400, "client_named_more_than_once".into())
    );
    // Content-Type spellings PHP reads as a form, and bodies that cannot be read as
    // every backend would: refused, never guessed (found by a review).
    for (ct, body) in [
        ("application/x-www-form-urlencoded,x", format!("cf={b}")),
        ("application/x-www-form-urlencoded x", format!("cf={b}")),
        ("application/x-www-form-urlencoded", format!("+cf={b}")),
        (
            "multipart/form-data, boundary=XX",
            format!("--XX\r\nContent-Disposition: form-data; name=cf\r\n\r\n{b}\r\n--XX--\r\n"),
        ),
        (
            "multipart/form-data; boundary=XX",
            format!("--XX\nContent-Disposition: form-data; name=\"cf\"\n\n{b}\n--XX--\n"),
        ),
        ("text/json", format!("{{\"cf\":\"{b}\"}}")),
    ] {
        let r = send(
            &op,
            "POST",
            &format!("/stampa/doc?cf={a}"),
            &[("content-type", ct)],
            &body,
        )
        .await;
        assert_eq!(
            (r.status, code(&r)),
            (400, "client_named_more_than_once".into()),
            "{ct}: {body}"
        );
    }
    // Multipart as leniently as PHP reads it, and a POST without a Content-Type (a form
    // to Rack): found by a second review.
    for (ct, body) in [
        (
            "multipart/form-data; boundary=XX",
            format!("--XX--\r\n--XX\r\nContent-Disposition: form-data; name=cf\r\n\r\n{b}\r\n"),
        ),
        (
            "multipart/form-data; boundary=XX",
            format!("--XX\r\nContent-Disposition: form-data;\r\n name=\"cf\"\r\n\r\n{b}\r\n--XX--"),
        ),
        (
            "multipart/form-data; boundary=XX",
            format!("--XX\r\nContent-Disposition: name=\"cf\"\r\n\r\n{b}\r\n--XX--"),
        ),
        ("", format!("cf={b}")),
    ] {
        let h: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let r = send(&op, "POST", &format!("/stampa/doc?cf={a}"), &h, &body).await;
        assert_eq!(
            (r.status, code(&r)),
            (400, "client_named_more_than_once".into()),
            "{ct}: {body}"
        );
    }
    for (ct, body, extra) in [
        ("application/json", "{\"x\":[[[[".to_string(), None),
        (
            "multipart/form-data; boundary=XX",
            "no parts".to_string(),
            None,
        ),
        (
            "application/x-www-form-urlencoded",
            format!("cf={b}"),
            Some(("content-encoding", "gzip")),
        ),
    ] {
        let mut h = vec![("content-type", ct)];
        h.extend(extra);
        let r = send(&op, "POST", &format!("/stampa/doc?cf={a}"), &h, &body).await;
        assert_eq!(
            (r.status, code(&r)),
            (400, "body_not_inspectable".into()),
            "{ct}: {body}"
        );
    }
    // `_method` would turn the volunteer's allowed request into another method.
    for q in ["_method=DELETE", ".method=DELETE", "_method%00x=DELETE"] {
        let r = send(&vol, "GET", &format!("/stampa/doc?cf={a}&{q}"), &[], "").await;
        assert_eq!(
            (r.status, code(&r)),
            (400, "method_override_refused".into()),
            "{q}"
        );
    }
    let r = send(
        &op,
        "POST",
        &format!("/stampa/doc?cf={a}"),
        &[form],
        "+.method=DELETE",
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (400, "method_override_refused".into())
    );
    // A form body without the parameter is read and forwarded whole.
    let r = send(
        &op,
        "POST",
        &format!("/stampa/doc?cf={a}"),
        &[form],
        "titolo=estratto&copie=2",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_bytes"], 23);

    // The header source: once passes; twice, or in the `_` spelling, is refused.
    let r = send(&vol, "GET", "/pratica/x", &[("x-assistito", &a)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    for extra in [
        vec![("x-assistito", a.as_str()), ("x-assistito", b.as_str())],
        vec![("x-assistito", a.as_str()), ("x_assistito", b.as_str())],
        vec![("X_Assistito", a.as_str())],
    ] {
        let r = send(&vol, "GET", "/pratica/x", &extra, "").await;
        assert_eq!(
            (r.status, code(&r)),
            (400, "client_named_more_than_once".into()),
            "{extra:?}"
        );
    }
}

/// A session-bound header is reused only while the session's claims stay the same: when
/// the directory changes a user's roles, the next request carries the new roles at once
/// (as a request-bound header would), not the header minted before the change; and a
/// protected route without a policy sends the directory's current roles too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bound_header_follows_a_change_of_roles() {
    let up = upstreams::echo().await;
    // One worker: session-bound headers are kept per worker.
    let directory = format!(
        "{}\n[server]\nworkers = 1\n[[route]]\npath = \"/sessione\"\nupstream = \"app\"\npublic = false\n\
header_binding = \"session\"\n[route.policy]\nmin_level = \"SpidL1\"\n\
[[route]]\npath = \"/semplice\"\nupstream = \"app\"\npublic = false\n",
        files_directory()
    );
    let gw = Gateway::start_with(
        &config(up, &directory),
        &[
            ("roles.csv", &roles_csv()),
            ("deleghe.csv", &deleghe_csv("")),
        ],
    );
    let op = login(&gw, "operatore").await;
    let token = |r: &Resp| r.echoed("x-varco-assertion").pop().expect("a header");
    let roles = |jwt: &str| -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        claims["roles"].clone()
    };
    let first = token(&as_user(&gw, &op, "GET", "/sessione/a").await);
    assert_eq!(roles(&first), serde_json::json!(["operatore"]));
    let plain = token(&as_user(&gw, &op, "GET", "/semplice/a").await);
    assert_eq!(roles(&plain), serde_json::json!(["operatore"]));
    assert_eq!(token(&as_user(&gw, &op, "GET", "/sessione/b").await), first);

    // The operator becomes a volunteer in the roles file (reread every 200 ms, cached 1 s).
    std::fs::write(
        gw.dir.path().join("roles.csv"),
        format!(
            "fiscal_code,role,patronato,valid_from,valid_to\n{},volontario,P1,2020-01-01,\n",
            operator()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let changed = loop {
        let t = token(&as_user(&gw, &op, "GET", "/sessione/a").await);
        if t != first {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the header minted before the change is still served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(roles(&changed), serde_json::json!(["volontario"]));
    // A route without a policy says the directory's roles too, not the login's.
    let plain = token(&as_user(&gw, &op, "GET", "/semplice/a").await);
    assert_eq!(roles(&plain), serde_json::json!(["volontario"]));
    // The new header is the one reused from then on.
    assert_eq!(
        token(&as_user(&gw, &op, "GET", "/sessione/b").await),
        changed
    );
}

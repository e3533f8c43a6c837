//! Configuration reload on the real binary: SIGHUP (and `--watch`) swap routes, upstreams
//! and signing keys while requests keep flowing (none fails across ten reloads), a
//! configuration that does not load is refused with its reason and the previous one stays,
//! sessions survive, and settings that need a restart are named in the log.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::{Gateway, dev_login, request, upstreams};

/// A demo-mode gateway (for the development login) in front of `up`, signing with the
/// key `active` of k1/k2; with `extra`, one more public route `/nuovo`.
fn config(up: SocketAddr, active: &str, extra: bool) -> String {
    let mut c = format!(
        r#"
mode = "demo"
[server]
drain_timeout = "2s"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[session]
secure = false
cookie_name = "varco"
[assertion]
issuer = "https://gw.test/"
active_kid = "{active}"
[[assertion.key]]
kid = "k1"
private_key = "@DIR@/k1.pem"
[[assertion.key]]
kid = "k2"
private_key = "@DIR@/k2.pem"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/pubblico"
upstream = "app"
public = true
[[route]]
path = "/"
upstream = "app"
public = false
"#
    );
    if extra {
        c.push_str("[[route]]\npath = \"/nuovo\"\nupstream = \"app\"\npublic = true\n");
    }
    c
}

fn write_config(gw: &Gateway, text: &str) {
    let text = text.replace("@DIR@", &gw.dir.path().display().to_string());
    // Write then rename, as a ConfigMap update or an editor does: no half-written file.
    let tmp = gw.dir.path().join("varco.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, gw.dir.path().join("varco.toml")).unwrap();
}

fn count_logs(gw: &Gateway, message: &str) -> usize {
    gw.logs()
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["message"] == message)
        })
        .count()
}

fn wait_logs(gw: &Gateway, message: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_logs(gw, message) < n {
        assert!(
            Instant::now() < deadline,
            "no {n}th `{message}`:\n{}",
            gw.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `kid` of the identity header an upstream received.
fn kid(r: &common::Resp) -> String {
    let jwt = r
        .echoed("x-varco-assertion")
        .pop()
        .expect("no identity header");
    let head = jwt.split('.').next().unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap();
    v["kid"].as_str().unwrap().to_string()
}

async fn get(gw: &Gateway, path: &str, cookie: &str) -> common::Resp {
    request(
        "GET",
        &gw.url(path),
        &[("accept", "application/json"), ("cookie", cookie)],
        Bytes::new(),
    )
    .await
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_reloads_under_load_lose_no_request() {
    let up = upstreams::echo().await;
    let k1 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let k2 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let gw = Arc::new(Gateway::start_with(
        &config(up, "k1", false),
        &[("k1.pem", &k1), ("k2.pem", &k2)],
    ));
    let cookie = dev_login(&gw, "cittadino").await;
    assert_eq!(kid(&get(&gw, "/fascicolo", &cookie).await), "k1");
    assert_eq!(get(&gw, "/nuovo", "").await.status, 401);

    // Load: four clients, protected and public routes, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (gw, stop, served, failed, cookie) = (
            gw.clone(),
            stop.clone(),
            served.clone(),
            failed.clone(),
            cookie.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 2 == 0 {
                    "/fascicolo"
                } else {
                    "/pubblico"
                };
                let r = get(&gw, path, &cookie).await;
                if r.status == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.lock().unwrap().push((path, r.status));
                }
            }
        }));
    }
    // Ten reloads, each changing the routes and the signing key.
    for n in 1..=10 {
        let active = if n % 2 == 1 { "k2" } else { "k1" };
        write_config(&gw, &config(up, active, n % 2 == 1));
        gw.signal("HUP");
        wait_logs(&gw, "configuration reloaded", n);
        let r = get(&gw, "/fascicolo", &cookie).await;
        assert_eq!(r.status, 200, "the session survives reload {n}");
        assert_eq!(kid(&r), active, "reload {n} signs with the new key");
        let expected = if n % 2 == 1 { 200 } else { 401 };
        assert_eq!(get(&gw, "/nuovo", "").await.status, expected, "reload {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "requests failed across reloads: {failed:?}"
    );
    assert!(served.load(Ordering::Relaxed) > 100, "too little load");

    // The JWKS follows the keys; the metrics count the reloads.
    let m = request("GET", &gw.url("/_varco/metrics"), &[], Bytes::new())
        .await
        .text();
    assert_eq!(
        metric(&m, "varco_config_reload_total{outcome=\"ok\"}"),
        Some(10.0),
        "{m}"
    );
    assert!(metric(&m, "varco_config_last_reload_success_timestamp_seconds").unwrap() > 1.7e9);

    // A configuration that does not load is refused with its reason; the previous one
    // stays in force.
    write_config(
        &gw,
        &config(up, "k1", false).replace(
            "[[route]]\npath = \"/pubblico\"",
            "[[route]]\npath = \"pubblico\"",
        ),
    );
    gw.signal("HUP");
    wait_logs(
        &gw,
        "configuration not reloaded: the previous one stays in force",
        1,
    );
    let line = gw
        .logs()
        .into_iter()
        .find(|l| l.contains("configuration not reloaded"))
        .unwrap();
    assert!(line.contains("route[0].path"), "{line}");
    let r = get(&gw, "/fascicolo", &cookie).await;
    assert_eq!((r.status, kid(&r)), (200, "k1".to_string()));
    assert_eq!(get(&gw, "/nuovo", "").await.status, 401);
    // A key file that does not parse: refused too.
    std::fs::write(gw.dir.path().join("k2.pem"), "not a key").unwrap();
    write_config(&gw, &config(up, "k2", true));
    gw.signal("HUP");
    wait_logs(
        &gw,
        "configuration not reloaded: the previous one stays in force",
        2,
    );
    assert_eq!(kid(&get(&gw, "/fascicolo", &cookie).await), "k1");
    assert_eq!(get(&gw, "/nuovo", "").await.status, 401);
    let m = request("GET", &gw.url("/_varco/metrics"), &[], Bytes::new())
        .await
        .text();
    assert_eq!(
        metric(&m, "varco_config_reload_total{outcome=\"failed\"}"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_reloads_a_changed_file_and_names_what_needs_a_restart() {
    let up = upstreams::echo().await;
    let k1 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let k2 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let gw = Gateway::start_with_args(
        &config(up, "k1", false),
        &[("k1.pem", &k1), ("k2.pem", &k2)],
        &["--watch"],
    );
    // Let the watch read the file once before it changes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(&gw, "/nuovo", "").await.status, 401);
    write_config(&gw, &config(up, "k1", true));
    wait_logs(&gw, "configuration reloaded", 1);
    assert_eq!(get(&gw, "/nuovo", "").await.status, 200);
    // A listener address cannot move while running: the reload applies the rest and says
    // what stays as it was.
    write_config(
        &gw,
        &config(up, "k2", true).replace("address = \"127.0.0.1:0\"", "address = \"127.0.0.1:1\""),
    );
    wait_logs(&gw, "configuration reloaded", 2);
    let warning = gw
        .wait_log(|l| l.contains("change only with a restart"))
        .expect("the restart-only settings are named");
    assert!(warning.contains("server.listener"), "{warning}");
    let cookie = dev_login(&gw, "cittadino").await;
    assert_eq!(kid(&get(&gw, "/fascicolo", &cookie).await), "k2");

    // The session cookie's name cannot change while running (the old cookie would be
    // forwarded to the upstream): refused, the old configuration stays.
    write_config(
        &gw,
        &config(up, "k1", false).replace("cookie_name = \"varco\"", "cookie_name = \"varco2\""),
    );
    wait_logs(
        &gw,
        "configuration not reloaded: the previous one stays in force",
        1,
    );
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("`session.cookie_name` cannot change without a restart"))
    );
    assert_eq!(get(&gw, "/nuovo", "").await.status, 200);
    // A configuration naming a key file that is not there yet (a Secret mounted after its
    // ConfigMap) fails, and is tried again until the file appears.
    let k3 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    write_config(
        &gw,
        &config(up, "k3", false).replace(
            "kid = \"k2\"\nprivate_key = \"@DIR@/k2.pem\"",
            "kid = \"k3\"\nprivate_key = \"@DIR@/k3.pem\"",
        ),
    );
    wait_logs(
        &gw,
        "configuration not reloaded: the previous one stays in force",
        2,
    );
    assert_eq!(get(&gw, "/nuovo", "").await.status, 200);
    std::fs::write(gw.dir.path().join("k3.pem"), k3).unwrap();
    wait_logs(&gw, "configuration reloaded", 3);
    assert_eq!(get(&gw, "/nuovo", "").await.status, 401);
    let cookie = dev_login(&gw, "cittadino").await;
    assert_eq!(kid(&get(&gw, "/fascicolo", &cookie).await), "k3");
}

/// In demo mode without configured keys the ephemeral signing key survives a reload (the
/// sessions and the backends' cached JWKS stay valid), and the reloaded configuration's
/// header lifetime applies at once; keys from files are not kept once the configuration
/// drops them.
#[tokio::test(flavor = "multi_thread")]
async fn a_demo_reload_keeps_its_ephemeral_key_and_applies_the_new_lifetime() {
    let up = upstreams::echo().await;
    let demo = |ttl: &str| {
        config(up, "k1", false)
            .replace("active_kid = \"k1\"\n", &format!("ttl = \"{ttl}\"\n"))
            .split("[[assertion.key]]")
            .next()
            .unwrap()
            .to_string()
            + &format!(
                "[upstream.app]\nurl = \"http://{up}\"\n[[route]]\npath = \"/\"\nupstream = \"app\"\npublic = false\n"
            )
    };
    let k1 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let k2 = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let gw = Gateway::start_with(&demo("300s"), &[("k1.pem", &k1), ("k2.pem", &k2)]);
    let cookie = dev_login(&gw, "cittadino").await;
    let claims = |r: &common::Resp| -> serde_json::Value {
        let jwt = r.echoed("x-varco-assertion").pop().expect("a header");
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let lifetime = |c: &serde_json::Value| c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    let jwks = || async { get(&gw, "/_varco/jwks.json", "").await.text() };
    let before = claims(&get(&gw, "/a", &cookie).await);
    assert_eq!(lifetime(&before), 300);
    let keys = jwks().await;

    write_config(&gw, &demo("60s"));
    gw.signal("HUP");
    wait_logs(&gw, "configuration reloaded", 1);
    let after = claims(&get(&gw, "/a", &cookie).await);
    assert_eq!(lifetime(&after), 60);
    assert_eq!(after["sid"], before["sid"], "the session survives");
    assert_eq!(jwks().await, keys, "the same ephemeral key");

    // Keys from files, then none again: the file keys are not kept once the configuration
    // no longer names them; a new ephemeral key signs.
    write_config(&gw, &config(up, "k1", false));
    gw.signal("HUP");
    wait_logs(&gw, "configuration reloaded", 2);
    assert_eq!(kid(&get(&gw, "/a", &cookie).await), "k1");
    write_config(&gw, &demo("60s"));
    gw.signal("HUP");
    wait_logs(&gw, "configuration reloaded", 3);
    assert_eq!(kid(&get(&gw, "/a", &cookie).await), "demo-ephemeral");
    let fresh = jwks().await;
    assert!(!fresh.contains("\"k1\"") && fresh != keys, "{fresh}");
}

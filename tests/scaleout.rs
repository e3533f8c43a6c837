//! Two replicas sharing a real `redis-server` (Debian's, started here on a free loopback
//! port; `make test` installs it): a login on one is a session on the other, a logout on
//! one ends it on both, and Redis going away gives 503 on protected routes (public ones
//! keep working, readiness goes false) until it returns, without a restart.

mod common;

use common::free_port;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, Redis, dev_login, request, upstreams};

fn config(up: SocketAddr, redis_port: u16) -> String {
    format!(
        r#"
mode = "demo"
[[server.listener]]
address = "127.0.0.1:0"
[log]
format = "json"
[session]
secure = false
cookie_name = "varco"
store = "redis"
[session.redis]
url = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "test:"
command_timeout = "300ms"
connect_timeout = "300ms"
[assertion]
issuer = "https://gw.test/"
[upstream.app]
url = "http://{up}"
[[route]]
path = "/"
upstream = "app"
public = false
[[route]]
path = "/pubblico"
upstream = "app"
public = true
"#
    )
}

async fn status(gw: &Gateway, path: &str, cookie: Option<&str>) -> u16 {
    let mut h = vec![("accept", "application/json")];
    if let Some(c) = cookie {
        h.push(("cookie", c));
    }
    request("GET", &gw.url(path), &h, Bytes::new()).await.status
}

/// Waits until `f` holds (the health loop pings every 2 s).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_sessions_through_redis_and_fail_closed_without_it() {
    let mut redis = Redis::start(free_port());
    let up = upstreams::echo().await;
    let a = Gateway::start(&config(up, redis.port));
    let b = Gateway::start(&config(up, redis.port));
    eventually("ready", async || {
        status(&a, "/_varco/readyz", None).await == 200
    })
    .await;

    // A login on A is a session on B.
    let cookie = dev_login(&a, "operatore").await;
    assert_eq!(status(&b, "/x", Some(&cookie)).await, 200);
    // A logout on B ends it on A too.
    let r = request(
        "POST",
        &b.url("/_varco/logout"),
        &[("cookie", cookie.as_str())],
        Bytes::new(),
    )
    .await;
    assert!(r.status < 400, "{}", r.text());
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 401);

    // Redis goes away: protected requests get 503 (never through), public ones work,
    // readiness goes false, the metric and the log say so.
    let cookie = dev_login(&a, "cittadino").await;
    assert_eq!(status(&b, "/x", Some(&cookie)).await, 200);
    redis.stop();
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 503);
    assert_eq!(status(&b, "/x", Some(&cookie)).await, 503);
    assert_eq!(status(&a, "/pubblico", None).await, 200);
    let login = request(
        "POST",
        &a.url("/_varco/dev-login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "user=cittadino&return=%2F",
    )
    .await;
    assert_eq!(login.status, 503, "no session without the store");
    assert!(login.headers.get("set-cookie").is_none());
    eventually("readiness false", async || {
        status(&a, "/_varco/readyz", None).await == 503
    })
    .await;
    eventually("varco_store_up 0", async || {
        let m = request("GET", &a.url("/_varco/metrics"), &[], Bytes::new()).await;
        m.text().contains("varco_store_up 0")
    })
    .await;
    assert!(
        a.wait_log(|l| l.contains("Redis does not answer"))
            .is_some()
    );

    // Redis returns (empty: the sessions are gone, as after a Redis restart without
    // persistence): service resumes without a restart of the gateways.
    let redis = Redis::start(redis.port);
    eventually("ready again", async || {
        status(&a, "/_varco/readyz", None).await == 200
    })
    .await;
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 401);
    let cookie = dev_login(&b, "cittadino").await;
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 200);
    drop(redis);
}

/// A value in Redis that does not parse (another version, corrupted) is no session.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_session_value_is_no_session() {
    let redis = Redis::start(free_port());
    let up = upstreams::echo().await;
    let a = Gateway::start(&config(up, redis.port));
    let cookie = dev_login(&a, "operatore").await;
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 200);
    // Overwrite every session value with garbage.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            "test:s:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8(out.stdout).unwrap();
    assert!(
        !keys.trim().is_empty(),
        "the session is in Redis under its hash"
    );
    assert!(
        !keys.contains(cookie.split('=').nth(1).unwrap()),
        "never the id itself"
    );
    for key in keys.lines() {
        let set = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "SET", key, "9{not json"])
            .output()
            .unwrap();
        assert!(set.status.success());
    }
    assert_eq!(status(&a, "/x", Some(&cookie)).await, 401);
}

/// A full Redis (`noeviction`: writes refused with OOM) refuses the writes — a new login
/// gets 503 and no cookie — but is not an outage: sessions are still served and the
/// replica stays ready, so one client's writes cannot take the service down. A key of
/// another type under a session's name is no more than that session's failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_refuses_writes_without_taking_the_replica_out() {
    let redis = Redis::start(free_port());
    let up = upstreams::echo().await;
    let gw = Gateway::start(&config(up, redis.port));
    eventually("ready", async || {
        status(&gw, "/_varco/readyz", None).await == 200
    })
    .await;
    let cookie = dev_login(&gw, "operatore").await;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["config", "set", "maxmemory", "1"]), "OK");
    for _ in 0..20 {
        let login = request(
            "POST",
            &gw.url("/_varco/dev-login"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "user=cittadino&return=%2F",
        )
        .await;
        assert_eq!(login.status, 503);
        assert!(login.headers.get("set-cookie").is_none());
    }
    assert_eq!(status(&gw, "/x", Some(&cookie)).await, 200);
    assert_eq!(status(&gw, "/_varco/readyz", None).await, 200);
    assert!(
        gw.wait_log(|l| l.contains("Redis refused a command"))
            .is_some()
    );
    assert!(
        !gw.logs()
            .iter()
            .any(|l| l.contains("Redis does not answer"))
    );
    assert_eq!(cli(&["config", "set", "maxmemory", "0"]), "OK");
    // An eviction policy other than noeviction is named at connection.
    assert_eq!(
        cli(&["config", "set", "maxmemory-policy", "allkeys-lru"]),
        "OK"
    );
    let other = Gateway::start(&config(up, redis.port));
    eventually("ready", async || {
        status(&other, "/_varco/readyz", None).await == 200
    })
    .await;
    assert!(
        other
            .wait_log(|l| l.contains("maxmemory-policy is not noeviction"))
            .is_some()
    );
}

//! The gateway as ops see it: configuration errors that name the key, health, readiness,
//! metrics, the access log, fail-closed protected routes, and graceful shutdown.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Gateway, get_json, request, simple_config, upstreams};

fn check_config(text: &str) -> (bool, String) {
    check_config_env(text, &[])
}

/// `varco check-config` on `text`, with these environment variables set.
fn check_config_env(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let good = simple_config("127.0.0.1:9".parse().unwrap(), "");
    let (ok, out) = check_config(&good);
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"), "{out}");

    // A misspelt key.
    let (ok, out) = check_config(&good.replace("public = true", "pubic = true"));
    assert!(!ok);
    assert!(out.contains("route[0]") && out.contains("pubic"), "{out}");
    assert!(out.contains("bad.toml"), "{out}");

    // A wrong type.
    let (ok, out) = check_config(&good.replace("[server]", "[server]\nidle_timeout = 5"));
    assert!(!ok);
    assert!(out.contains("server.idle_timeout"), "{out}");

    // Login CPUs this process may not run on: found by the deep check, from the file or
    // the environment (a list), and `serve` refuses them at start.
    let (ok, out) = check_config(&good.replace("[server]", "[server]\nlogin_cpus = [4095]"));
    assert!(!ok);
    assert!(
        out.contains("server.login_cpus") && out.contains("CPU 4095 is not one"),
        "{out}"
    );
    let (ok, text) = check_config_env(&good, &[("VARCO__SERVER__LOGIN_CPUS", "4094,4095")]);
    assert!(!ok);
    assert!(text.contains("CPU 4094 is not one"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpus.toml");
    std::fs::write(&path, &good).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("VARCO__SERVER__LOGIN_CPUS", "4095")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            serve.kill().unwrap();
            panic!("serve started with login CPUs it may not run on");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("server.login_cpus"), "{err}");

    // A wrong type from the environment says where it came from.
    let (ok, text) = check_config_env(&good, &[("VARCO__SERVER__LOGIN_THREADS_NICE", "-1")]);
    assert!(!ok);
    assert!(
        text.contains("key `server.login_threads_nice`: invalid type")
            && text.contains("(from the environment)"),
        "{text}"
    );

    // Several semantic problems, all listed.
    let bad = good
        .replace("url = \"http://127.0.0.1:9\"", "url = \"ftp://x\"")
        .replace("public = true", "")
        .replace(
            "[server]",
            "[server]\nreserved_prefix = \"nope\"\nlogin_threads_nice = 20\nlogin_cpus = [1, 1]",
        );
    let (ok, out) = check_config(&bad);
    assert!(!ok);
    for key in [
        "upstream.app.url",
        "route[0].public",
        "server.reserved_prefix",
        "server.login_threads_nice",
        "server.login_cpus",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }

    // A TLS file that is not a certificate: found by the deep check.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let tls = good.replace(
        "address = \"127.0.0.1:0\"",
        &format!(
            "address = \"127.0.0.1:0\"\n[server.listener.tls]\ncert = \"{0}\"\nkey = \"{0}\"",
            junk.display()
        ),
    );
    let (ok, out) = check_config(&tls);
    assert!(!ok);
    assert!(out.contains("server.listener[0].tls"), "{out}");

    // `serve` refuses the same file and exits non-zero without listening.
    let path = dir.path().join("v.toml");
    std::fs::write(&path, good.replace("public = true", "pubic = true")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pubic"));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.toml");
    std::fs::write(&path, simple_config("127.0.0.1:9".parse().unwrap(), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("VARCO__SERVER__IDLE_TIMEOUT", "0s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.idle_timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_access_log() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let r = request("GET", &gw.url("/_varco/healthz"), &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = request("GET", &gw.url("/_varco/readyz"), &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));

    let r = get_json(&gw.url("/some/page?q=1"), &[]).await;
    assert_eq!(r.status, 200);
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    let line = gw
        .wait_log(|l| l.contains("\"access\"") && l.contains(&rid))
        .expect("no access log line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], "varco::access");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/some/page");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream"], "app");
    assert_eq!(v["route"], "route[0]");
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(v["duration_ms"].as_f64().is_some());

    let _ = get_json(&gw.url("/_varco/none"), &[]).await;
    let m = request("GET", &gw.url("/_varco/metrics"), &[], "").await;
    assert_eq!(m.status, 200);
    let m = m.text();
    assert!(
        m.contains("varco_requests_total{route=\"route[0]\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("varco_requests_total{route=\"internal\",status=\"404\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("varco_request_duration_seconds_count{route=\"route[0]\"} 1"),
        "{m}"
    );
    assert!(m.contains("varco_open_connections "), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_to_allowed_peers() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, "metrics_allow = [\"10.0.0.0/8\"]"));
    let r = request("GET", &gw.url("/_varco/metrics"), &[], "").await;
    assert_eq!(r.status, 404);
    let r = request("GET", &gw.url("/_varco/healthz"), &[], "").await;
    assert_eq!(r.status, 200);
}

/// With an admin listener, metrics (and health) are served there, and the main listener
/// serves no metrics, even to loopback peers such as a same-host ingress (issue 11, item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_takes_the_metrics_off_the_main_one() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, "admin_address = \"127.0.0.1:0\""));
    let line = gw
        .wait_log(|l| l.contains("\"admin listening\""))
        .expect("the admin listener logs its address");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let admin: std::net::SocketAddr = v["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(admin, gw.addr());
    // Main listener: no metrics, although the peer is loopback (in metrics_allow).
    let r = request("GET", &gw.url("/_varco/metrics"), &[], "").await;
    assert_eq!(r.status, 404);
    let r = request("GET", &gw.url("/_varco/healthz"), &[], "").await;
    assert_eq!(r.status, 200);
    let r = request("GET", &gw.url("/_varco/readyz"), &[], "").await;
    assert_eq!(r.status, 200);
    // Admin listener: metrics, health, readiness and nothing else.
    let at = |p: &str| format!("http://{admin}{p}");
    let m = request("GET", &at("/metrics"), &[], "").await;
    assert_eq!(m.status, 200);
    assert!(m.text().contains("varco_requests_total"), "{}", m.text());
    assert_eq!(request("GET", &at("/healthz"), &[], "").await.status, 200);
    assert_eq!(request("GET", &at("/readyz"), &[], "").await.status, 200);
    assert_eq!(request("GET", &at("/"), &[], "").await.status, 404);
    assert_eq!(
        request("GET", &at("/_varco/metrics"), &[], "").await.status,
        404
    );
    assert_eq!(request("POST", &at("/metrics"), &[], "").await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefix_is_configurable() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, "reserved_prefix = \"/.gw/\""));
    let r = request("GET", &gw.url("/.gw/healthz"), &[], "").await;
    assert_eq!(r.status, 200);
    // The old prefix is an ordinary path now.
    let r = get_json(&gw.url("/_varco/healthz"), &[]).await;
    assert_eq!(r.json()["path"], "/_varco/healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_refuse_requests_without_a_session() {
    let up = upstreams::echo().await;
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cfg = simple_config(up, "").replace("public = true", "public = false")
        + "[assertion]\nissuer = \"https://gw.test/\"\n[[assertion.key]]\nkid = \"k1\"\nprivate_key = \"@DIR@/k1.pem\"\n";
    let gw = Gateway::start_with(&cfg, &[("k1.pem", &key)]);
    let r = get_json(&gw.url("/private"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "login_required");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("/_varco/login?return=%2Fprivate")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let up = upstreams::slow(Duration::from_millis(1200)).await;
    let mut gw = Gateway::start(&simple_config(up, "drain_timeout = \"10s\""));
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { request("GET", &url, &[], "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    gw.signal("TERM");
    // New connections are refused once the listener is closed.
    let addr = gw.addr();
    let mut refused = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow");
    let status = gw.wait_exit(Duration::from_secs(5)).expect("did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "exited before the drain"
    );
    assert!(
        gw.wait_log(|l| l.contains("all connections drained"))
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_what_is_left() {
    let up = upstreams::slow(Duration::from_secs(30)).await;
    let mut gw = Gateway::start(&simple_config(up, "drain_timeout = \"300ms\""));
    let url = gw.url("/stuck");
    let _stuck = tokio::spawn(async move { request("GET", &url, &[], "").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(5)).expect("did not exit");
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        gw.wait_log(|l| l.contains("drain timeout passed"))
            .is_some()
    );
}

/// `varco healthcheck` (the container's probe): 0 on 200, 1 on anything else or no answer,
/// over plain HTTP and over TLS (the certificate is not checked, the host must be loopback).
#[tokio::test]
async fn the_healthcheck_subcommand_probes_a_running_gateway() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let probe = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_varco"))
            .args(["healthcheck", "--timeout", "2s", "--url", url])
            .output()
            .unwrap()
    };
    let ok = probe(&gw.url("/_varco/healthz"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = probe(&gw.url("/_varco/nope"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("status 404"));
    let closed = probe(&format!(
        "http://127.0.0.1:{}/_varco/healthz",
        common::free_port()
    ));
    assert_eq!(closed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&closed.stderr).contains("cannot connect"));
    let remote = probe("http://192.0.2.1/_varco/healthz");
    assert_eq!(remote.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("loopback"));
    // A listener that never answers: the deadline holds.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let hung = probe(&format!("http://{}/", silent.local_addr().unwrap()));
    assert_eq!(hung.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&hung.stderr).contains("no answer"));
    // A TLS server that trickles its handshake a byte at a time: the deadline holds too.
    let trickle = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = trickle.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = trickle.accept() {
            use std::io::Write as _;
            for b in [0x16u8, 0x03, 0x03, 0x00, 0x40, 0x02] {
                let _ = s.write_all(&[b]);
                std::thread::sleep(Duration::from_millis(700));
            }
            std::thread::sleep(Duration::from_secs(10));
        }
    });
    let started = Instant::now();
    let hung = probe(&format!("https://{addr}/"));
    assert_eq!(hung.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The binary's allocator hands freed memory back to the system (issue 16, memory after a
/// long load): jemalloc with its background purging threads, the build's default. The
/// figures are `bench/soak.sh`'s; this guards the build (a binary built without the
/// `jemalloc` feature, or without background threads, keeps the high-water mark of a load).
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_jemalloc_with_its_background_thread() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, ""));
    let r = get_json(&gw.url("/page"), &[]).await;
    assert_eq!(r.status, 200);
    let threads = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    // jemalloc starts its first purging thread as it initializes, before the listeners.
    let names = threads();
    assert!(
        names.iter().any(|n| n == "jemalloc_bg_thd"),
        "no jemalloc background thread among {names:?}"
    );
}

/// `varco echo --fixed-body-bytes` (the load benchmarks' upstream): a size past its bound is
/// refused with a clear error before anything is allocated or bound, and a running echo
/// answers the fixed body whatever headers the request carries.
#[test]
fn the_echo_upstream_answers_a_fixed_body_when_asked() {
    let out = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args([
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--fixed-body-bytes",
            "99999999999",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--fixed-body-bytes"), "{stderr}");

    // Port 0: the echo says where it listens on its first line.
    let mut echo = Command::new(env!("CARGO_BIN_EXE_varco"))
        .args([
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--fixed-body-bytes",
            "20",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(echo.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let request = format!(
        "GET /bench/small HTTP/1.1\r\nhost: x\r\nx-varco-assertion: {}\r\nconnection: close\r\n\r\n",
        "v".repeat(600)
    );
    let answer = common::raw(addr, request.as_bytes(), Duration::from_secs(5));
    let _ = echo.kill();
    let _ = echo.wait();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body, "varco echo.........\n");
}

//! Test helpers: the real `varco` binary started on loopback with a configuration the test
//! writes, real upstreams started in the test process, and small HTTP clients (hyper for
//! ordinary requests, raw sockets for the attacks hyper would refuse to send).
#![allow(dead_code)]

pub mod upstreams;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The gateway binary, running with a configuration file in a temporary directory.
pub struct Gateway {
    child: Child,
    pub addrs: Vec<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `config` (TOML; `@DIR@` is replaced with the temp dir) and starts
    /// `varco serve`, waiting until every listener is up.
    pub fn start(config: &str) -> Gateway {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, files: &[(&str, &str)]) -> Gateway {
        Self::start_with_args(config, files, &[])
    }

    /// The same with more arguments for `varco serve` (e.g. `--watch`).
    pub fn start_with_args(config: &str, files: &[(&str, &str)], args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = config.replace("@DIR@", &dir.path().display().to_string());
        let path = dir.path().join("varco.toml");
        std::fs::write(&path, &text).unwrap();
        let listeners = text.matches("[[server.listener]]").count();
        let mut child = Command::new(env!("CARGO_BIN_EXE_varco"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                    && let Some(a) = v["address"].as_str()
                {
                    let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let mut addrs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => addrs.push(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "gateway did not start; output:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Gateway {
            child,
            addrs,
            logs,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred` (logs are written asynchronously).
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(l) = self.logs().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read by the test clients.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The `name=value` of the (first) `Set-Cookie`, as a browser sends it back.
    pub fn cookie(&self) -> String {
        self.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The headers the echo upstream saw (from its JSON answer), lower-case names.
    pub fn echoed_headers(&self) -> Vec<(String, String)> {
        self.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn echoed(&self, name: &str) -> Vec<String> {
        self.echoed_headers()
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }
}

/// Sends one request with hyper and reads the whole response.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("accept", "application/json")];
    h.extend_from_slice(headers);
    request("GET", url, &h, Bytes::new()).await
}

/// Writes raw bytes and reads until the server closes or `timeout` passes.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    exchange(TcpStream::connect(addr).unwrap(), bytes, timeout)
}

/// Writes `bytes` and reads until the peer closes (or `timeout` passes between reads).
fn exchange(mut s: TcpStream, bytes: &[u8], timeout: Duration) -> String {
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`raw`], from the local address `from` (any of 127.0.0.0/8 on Linux loopback):
/// many distinct clients from one test.
pub fn raw_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> String {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std_stream = rt.block_on(async {
        let s = socket.connect(addr).await.unwrap();
        s.into_std().unwrap()
    });
    std_stream.set_nonblocking(false).unwrap();
    exchange(std_stream, bytes, timeout)
}

/// Logs in with the development login (demo mode) as `user`; returns the cookie pair.
pub async fn dev_login(gw: &Gateway, user: &str) -> String {
    let r = request(
        "POST",
        &gw.url("/_varco/dev-login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("user={user}&return=%2F"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    r.cookie()
}

/// Opens a WebSocket to `path` through the gateway (with `cookie`, if any) and returns the
/// stream after the response head, and the head (lower case).
pub fn websocket_to(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{cookie}\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed before the answer head");
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// Whether the tunnel `s` is closed by the gateway within `limit` (an echo round trip
/// every 100 ms keeps it busy meanwhile, so only the gateway can end it).
pub fn tunnel_closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        if s.write_all(b"ping").is_err() {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The status code of the first response in a raw answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// A minimal plain-HTTP gateway configuration in front of `upstream`.
pub fn simple_config(upstream: SocketAddr, extra_server: &str) -> String {
    format!(
        r#"
[server]
{extra_server}

[[server.listener]]
address = "127.0.0.1:0"

[log]
format = "json"

[upstream.app]
url = "http://{upstream}"

[[route]]
path = "/"
upstream = "app"
public = true
"#
    )
}

/// A loopback port free a moment ago (for servers the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on loopback, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (make test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

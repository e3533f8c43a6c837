//! Limits and failures through the real gateway: upstream down → 502, slow → 504, body
//! and header limits → 413/431, streaming with bounded memory, slowloris and idle clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, get_json, raw, raw_status, request, simple_config, upstreams};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_with_a_page() {
    let gw = Gateway::start(&simple_config(upstreams::closed_port(), ""));
    let r = request("GET", &gw.url("/"), &[("accept", "text/html")], "").await;
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("non è al momento raggiungibile"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("cannot be reached"));
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    let r = get_json(&gw.url("/"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(
        r.json()["request_id"].as_str().unwrap(),
        r.headers["x-request-id"].to_str().unwrap()
    );
    let m = request("GET", &gw.url("/_varco/metrics"), &[], "")
        .await
        .text();
    assert!(
        m.contains("varco_upstream_errors_total{upstream=\"app\",kind=\"connect\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let up = upstreams::slow(Duration::from_secs(3)).await;
    let cfg = simple_config(up, "").replace(
        &format!("url = \"http://{up}\""),
        &format!("url = \"http://{up}\"\nrequest_timeout = \"300ms\""),
    );
    let gw = Gateway::start(&cfg);
    let t = Instant::now();
    let r = get_json(&gw.url("/"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, "max_body_bytes = 1000"));
    // Declared too large: refused before anything is forwarded.
    let r = request(
        "POST",
        &gw.url("/"),
        &[("accept", "application/json")],
        vec![b'a'; 1001],
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    // Within the limit: forwarded.
    let r = request(
        "POST",
        &gw.url("/"),
        &[("accept", "application/json")],
        vec![b'a'; 1000],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], 1000);
    // Chunked (no declared length): cut off while streaming.
    let answer = raw(
        gw.addr(),
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            800,
            "b".repeat(800),
            800,
            "c".repeat(800)
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&answer), 413, "{answer}");
    // A route may raise its own limit.
    drop(gw);
    let cfg = simple_config(up, "max_body_bytes = 1000")
        .replace("public = true", "public = true\nmax_body_bytes = 5000");
    let gw = Gateway::start(&cfg);
    let r = request(
        "POST",
        &gw.url("/"),
        &[("accept", "application/json")],
        vec![b'a'; 4000],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_are_431() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(
        up,
        "max_header_bytes = 2048\nmax_header_count = 20",
    ));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(gw.addr(), many.as_bytes(), Duration::from_secs(5));
    assert_eq!(raw_status(&answer), 431, "{answer}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "v".repeat(3000)
    );
    let answer = raw(gw.addr(), big.as_bytes(), Duration::from_secs(5));
    assert_eq!(raw_status(&answer), 431, "{answer}");

    let fine = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "v".repeat(1500)
    );
    let answer = raw(gw.addr(), fine.as_bytes(), Duration::from_secs(5));
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(up, "max_body_bytes = 2147483648"));
    let before = gw.peak_rss_kib();

    // Upload 1 GiB, generated while sending; the echo upstream counts what arrives.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let n = GIB / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let client: Client<HttpConnector, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::post(gw.url("/upload"))
        .header("accept", "application/json")
        .body(StreamBody::new(stream))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["body_bytes"], GIB);

    // Download 256 MiB from an upstream that streams it.
    let dl = upstreams::download(256 << 20).await;
    let gw2 = Gateway::start(&simple_config(dl, ""));
    let before2 = gw2.peak_rss_kib();
    let client: Client<HttpConnector, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = client.get(gw2.url("/file").parse().unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, 256 << 20);

    let grew = gw.peak_rss_kib().saturating_sub(before);
    let grew2 = gw2.peak_rss_kib().saturating_sub(before2);
    eprintln!("peak RSS growth: upload {grew} KiB, download {grew2} KiB");
    assert!(grew < 64 * 1024, "upload grew peak RSS by {grew} KiB");
    assert!(grew2 < 64 * 1024, "download grew peak RSS by {grew2} KiB");
}

fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            // A reset (the server closed while the client was still writing) is a close too;
            // only running out of time is not.
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_clients_are_cut_off() {
    let up = upstreams::echo().await;
    let gw = Gateway::start(&simple_config(
        up,
        "header_read_timeout = \"500ms\"\nidle_timeout = \"800ms\"",
    ));
    // A client dribbling its head: closed after the header read timeout.
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let writer = {
        let mut s2 = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(100));
                if s2.write_all(b"X-Slow: 1\r\n").is_err() {
                    break;
                }
            }
        })
    };
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "slowloris kept open"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    let _ = writer.join();

    // An idle keep-alive connection (after one request): closed after the idle timeout.
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut s, Duration::from_secs(4)),
        "idle connection kept open"
    );

    // A connection that never sends anything: closed too.
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(4)),
        "silent connection kept open"
    );
}

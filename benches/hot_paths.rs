//! Criterion benches for the functions on every request: path normalization, route
//! lookup, identity-header stripping and hop-by-hop removal.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use varco::config::Config;
use varco::proxy::headers::{IdentityPrefix, remove_hop_by_hop};
use varco::routes::{RouteTable, normalize_path};

fn table() -> RouteTable {
    let mut text = String::from(
        "[[server.listener]]\naddress = \"127.0.0.1:0\"\n[upstream.a]\nurl = \"http://127.0.0.1:1\"\n",
    );
    for (host, path) in [
        ("*", "/"),
        ("*", "/fascicolo"),
        ("*", "/domande"),
        ("*", "/domande/nuova"),
        ("*", "/stampa"),
        ("*", "/interni"),
        ("*", "/cittadino"),
        ("*.inps.example", "/"),
        ("app.inps.example", "/api"),
        ("app.inps.example", "/api/v2"),
    ] {
        text.push_str(&format!(
            "[[route]]\nhost = \"{host}\"\npath = \"{path}\"\nupstream = \"a\"\npublic = true\n"
        ));
    }
    RouteTable::new(&Config::from_toml("bench", &text).expect("bench config"))
}

fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.inps.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/130.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "it-IT,it;q=0.8,en-US;q=0.5,en;q=0.3"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "cookie",
            "__Host-varco=abcdefabcdefabcdefabcdefabcdefabcdef",
        ),
        ("connection", "keep-alive"),
        ("referer", "https://app.inps.example/fascicolo/"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let t = table();
    c.bench_function("normalize_path/normal", |b| {
        b.iter(|| normalize_path(black_box("/fascicolo/RSSMRA80A01H501U/documenti")))
    });
    c.bench_function("normalize_path/dirty", |b| {
        b.iter(|| normalize_path(black_box("/fascicolo/%2e%2e//domande/./x%2fy")))
    });
    c.bench_function("route_lookup/exact_host", |b| {
        b.iter(|| {
            t.lookup(
                black_box("app.inps.example"),
                black_box("/api/v2/pratiche/123"),
            )
        })
    });
    c.bench_function("route_lookup/any_host", |b| {
        b.iter(|| t.lookup(black_box("other.example"), black_box("/domande/nuova/x")))
    });
    let prefix = IdentityPrefix::new("x-varco-");
    let clean = typical_headers();
    c.bench_function("strip_identity/clean", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| prefix.strip(h),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut spoofed = typical_headers();
    spoofed.append("x-varco-assertion", HeaderValue::from_static("forged"));
    spoofed.append("x_varco_roles", HeaderValue::from_static("admin"));
    c.bench_function("strip_identity/spoofed", |b| {
        b.iter_batched_ref(
            || spoofed.clone(),
            |h| prefix.strip(h),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("remove_hop_by_hop", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            remove_hop_by_hop,
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

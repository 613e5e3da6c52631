//! What detection costs per request, on the request shapes of `cargo xtask bench`'s generated
//! traffic (xtask/src/bench/offline.rs) and on a browser-like request. Ignored by default (a
//! figure is only meaningful from an optimised build):
//!
//! `cargo test --release -p apisessions --lib analysis::attacks::cost -- --ignored --nocapture`

use std::time::Instant;

use super::*;
use crate::exchange::MessageMeta;

fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let mut meta = MessageMeta::default();
    for (name, value) in headers {
        meta.header_block.push(name, value);
    }
    meta.body = body.as_bytes().to_vec();
    meta.body_len = body.len() as u64;
    Request {
        method: method.into(),
        uri: uri.into(),
        meta,
    }
}

/// The bench's ten request shapes (offline.rs `exchange`), then a browser's.
fn shapes() -> Vec<Request> {
    let bench = [
        ("Host", "api.example.test"),
        ("User-Agent", "bench-client/1.0"),
        ("Accept", "*/*"),
    ];
    let json = [
        ("Host", "api.example.test"),
        ("User-Agent", "bench-client/1.0"),
        ("Accept", "*/*"),
        ("Content-Type", "application/json"),
        ("Content-Length", "26"),
    ];
    let mut shapes = Vec::new();
    for serial in 0..10u64 {
        shapes.push(match serial % 10 {
            0..=3 => request("GET", &format!("/api/items/{serial}"), &bench, ""),
            4 => request(
                "GET",
                &format!("/api/search?q=w{serial}&page=2"),
                &bench,
                "",
            ),
            5 => request(
                "POST",
                "/api/items",
                &json,
                "{\"name\":\"widget\",\"size\":3}",
            ),
            6 => request("DELETE", &format!("/api/items/{serial}"), &bench, ""),
            7 => request("GET", &format!("/static/app.js?v={serial}"), &bench, ""),
            8 => request("GET", &format!("/missing/{serial}"), &bench, ""),
            _ => request("PUT", &format!("/api/items/{serial}"), &bench, "{}"),
        });
    }
    shapes.push(request(
        "GET",
        "/api/v1/users/42/orders?page=2&sort=-created_at",
        &[
            ("Host", "shop.example"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
            ("Accept", "application/json"),
            ("Referer", "https://shop.example/account/orders"),
            ("Cookie", "sid=8f14e45fceea167a5a36dedd4bea2543; theme=dark"),
            ("Accept-Language", "en-GB,en;q=0.9"),
        ],
        "",
    ));
    shapes
}

fn median(mut ns: Vec<u64>) -> u64 {
    ns.sort_unstable();
    ns[ns.len() / 2]
}

#[test]
#[ignore = "a timing figure: run from a release build"]
fn detection_cost_per_request() {
    let detector = Detector::new(&AttacksConfig::default()).unwrap();
    let shapes = shapes();
    let hash = |v: &str| format!("h:{}", v.len());
    let rounds = 20_000;
    let mut bench_ns = Vec::new();
    for (i, request) in shapes.iter().enumerate() {
        assert!(
            detector.inspect(request, &hash).findings.is_empty(),
            "shape {i}"
        );
        let mut ns = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            std::hint::black_box(detector.inspect(std::hint::black_box(request), &hash));
            ns.push(start.elapsed().as_nanos() as u64);
        }
        let shape_median = median(ns.clone());
        println!(
            "attacks cost shape {i:>2} {:<48} median {shape_median:>6} ns",
            request.uri
        );
        if i < 10 {
            bench_ns.extend(ns);
        }
    }
    println!(
        "attacks cost bench traffic median {} ns per request",
        median(bench_ns)
    );
}

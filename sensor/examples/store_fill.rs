//! Fills a data directory's store with generated sessions, for `cargo xtask bench` (store and
//! query phase): measures the ingest rate and prints what the query runs need as one JSON line.
//!
//! `store_fill DATA_DIR EXCHANGES` — appends EXCHANGES exchanges spread over the last six days
//! (inside the retention, so nothing is pruned), written as an import and the daemon's writer
//! under load write them: [`BATCH`] exchanges per transaction, each commit durable (fsync). One session gets exactly 10,000 requests (the
//! `show` target); the rest are browsers, API clients and logged-in users of 1-400 requests,
//! 2,000 of them active at any time, so batches interleave sessions as live traffic does.
//!
//! The content is shaped like real API traffic (realistic user agents, templated paths with
//! ids, query strings, referrers) because bytes per exchange depend on it.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use apisessions::{
    record::{Assignment, KeyKind, StoredExchange},
    store::{DEFAULT_MAP_SIZE, Store},
};

// The daemon's and import's allocator (see src/bin/apisessions/main.rs), so that the figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The largest transaction of the daemon's writer and of an import (see pipeline::writer).
const BATCH: usize = apisessions::pipeline::writer::TRANSACTION_EXCHANGES;
const ACTIVE: usize = 2000;
const BIG_SESSION: u64 = 10_000;
const SPAN: Duration = Duration::from_secs(6 * 24 * 3600);

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "curl/8.11.0",
    "PostmanRuntime/7.42.0",
];
const HOSTS: &[&str] = &["api.shop.example", "shop.example", "partners.shop.example"];

/// splitmix64: a reproducible fill without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Session {
    assignment: Assignment,
    client_ip: String,
    agent: &'static str,
    host: &'static str,
    browser: bool,
    left: u64,
}

fn new_session(rng: &mut Rng, serial: u64, requests: u64) -> Session {
    let (key_kind, key_name, user) = match rng.below(10) {
        0..=5 => (KeyKind::Cookie, "cookie session", None),
        6 | 7 => (
            KeyKind::Jwt,
            "header authorization (jwt sub)",
            Some(format!("user-{}", rng.below(50_000))),
        ),
        8 => (KeyKind::ApiKey, "header x-api-key", None),
        _ => (KeyKind::IpUserAgent, "ip + user-agent", None),
    };
    let client_ip = if rng.below(5) == 0 {
        format!("2001:db8:{:x}::{:x}", rng.below(65_536), rng.below(65_536))
    } else {
        format!(
            "10.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        )
    };
    let agent = rng.pick(AGENTS);
    Session {
        assignment: Assignment {
            session_id: format!("{:016x}{:016x}", rng.next(), serial),
            key_kind,
            key_name: key_name.to_owned(),
            user,
            role: None,
            new_session: true,
            signals: None,
        },
        browser: agent.starts_with("Mozilla"),
        client_ip,
        agent,
        host: rng.pick(HOSTS),
        left: requests,
    }
}

/// 1 to 400 requests, most sessions short.
fn session_length(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=5 => 1 + rng.below(20),
        6..=8 => 20 + rng.below(100),
        _ => 120 + rng.below(280),
    }
}

fn exchange(rng: &mut Rng, session: &Session, ts_ns: u64) -> StoredExchange {
    let id = 1 + rng.below(200_000);
    let (method, uri, endpoint, status, request_body, response_body) = match rng.below(20) {
        0..=5 => (
            "GET",
            format!("/api/v1/products/{id}"),
            "/api/v1/products/{id}",
            200,
            None,
            Some(400 + rng.below(1600)),
        ),
        6..=8 => (
            "GET",
            format!(
                "/api/v1/search?q=item{}&page={}&limit=20",
                rng.below(5000),
                1 + rng.below(9)
            ),
            "/api/v1/search",
            200,
            None,
            Some(2000 + rng.below(14_000)),
        ),
        9 | 10 => (
            "GET",
            format!("/api/v1/users/{id}/orders?page={}", 1 + rng.below(4)),
            "/api/v1/users/{id}/orders",
            200,
            None,
            Some(300 + rng.below(3000)),
        ),
        11 => (
            "POST",
            "/api/v1/cart/items".to_owned(),
            "/api/v1/cart/items",
            201,
            Some(40 + rng.below(200)),
            Some(60 + rng.below(200)),
        ),
        12 => (
            "PUT",
            format!("/api/v1/cart/items/{id}"),
            "/api/v1/cart/items/{id}",
            200,
            Some(30 + rng.below(100)),
            Some(60),
        ),
        13 => (
            "DELETE",
            format!("/api/v1/cart/items/{id}"),
            "/api/v1/cart/items/{id}",
            204,
            None,
            Some(0),
        ),
        14 => (
            "POST",
            "/api/v1/login".to_owned(),
            "/api/v1/login",
            if rng.below(4) == 0 { 401 } else { 200 },
            Some(60),
            Some(120),
        ),
        15 | 16 => (
            "GET",
            format!("/static/app.{:08x}.js", rng.below(16)),
            "/static/app.{hash}.js",
            if rng.below(2) == 0 { 304 } else { 200 },
            None,
            Some(0),
        ),
        17 => (
            "GET",
            format!("/api/v1/products/{id}/reviews?sort=recent"),
            "/api/v1/products/{id}/reviews",
            200,
            None,
            Some(900 + rng.below(4000)),
        ),
        18 => (
            "GET",
            format!("/api/v1/products/{}", id + 10_000_000),
            "/api/v1/products/{id}",
            404,
            None,
            Some(80),
        ),
        _ => (
            "GET",
            "/api/v1/health".to_owned(),
            "/api/v1/health",
            if rng.below(50) == 0 { 500 } else { 200 },
            None,
            Some(15),
        ),
    };
    let ttfb_us = 300 + rng.below(40_000);
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let client_port = 30_000 + rng.below(30_000) as u16;
    StoredExchange {
        ts_ns,
        client_ip: session.client_ip.clone(),
        client_port,
        server_ip: "10.0.0.1".to_owned(),
        server_port: 443,
        peer_ip: session.client_ip.clone(),
        peer_port: client_port,
        method: Some(method.to_owned()),
        host: Some(session.host.to_owned()),
        uri: Some(uri),
        endpoint: Some(endpoint.to_owned()),
        version: Some("HTTP/1.1".to_owned()),
        user_agent: Some(session.agent.to_owned()),
        referrer: session
            .browser
            .then(|| format!("https://shop.example/products/{id}")),
        request_content_type: request_body.map(|_| "application/json".to_owned()),
        response_content_type: Some(
            if endpoint.starts_with("/static") {
                "application/javascript"
            } else {
                "application/json"
            }
            .to_owned(),
        ),
        status_code: Some(status),
        status_msg: Some(reason.to_owned()),
        request_body_len: request_body,
        response_body_len: response_body,
        ttfb_us: Some(ttfb_us),
        duration_us: Some(ttfb_us + rng.below(2000)),
        request_truncated: false,
        response_truncated: false,
        gap: false,
        joined: false,
        upstream_us: None,
        upstream_ip: None,
        upstream_port: None,
        server_netns: None,
        server_cgroup: None,
        params: Vec::new(),
        attacks: Vec::new(),
        spec_status: None,
        slow: false,
        exchange_id: None,
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        bail!("usage: store_fill DATA_DIR EXCHANGES");
    };
    let data_dir = PathBuf::from(dir);
    let total: u64 = count.parse().context("EXCHANGES must be a number")?;
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    let (_, before) = store.counts()?;
    let mut rng = Rng(0x5eed ^ before);

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let first = now - SPAN.as_nanos() as u64;
    let step = (SPAN.as_nanos() as u64 / total.max(1)).max(1);
    let mut serial = before;
    let mut active: Vec<Session> = (0..ACTIVE)
        .map(|_| {
            serial += 1;
            let length = session_length(&mut rng);
            new_session(&mut rng, serial, length)
        })
        .collect();
    // The `show` target: one long session running through the whole fill.
    serial += 1;
    active[0] = new_session(&mut rng, serial, BIG_SESSION);
    let big = active[0].assignment.session_id.clone();
    let big_every = (total / BIG_SESSION).max(1);
    let probe_ip = active[1].client_ip.clone();

    let mut written = 0u64;
    let mut writing = Duration::ZERO;
    let mut batch = Vec::with_capacity(BATCH);
    let started = Instant::now();
    let mut last_report = Instant::now();
    while written < total {
        batch.clear();
        while batch.len() < BATCH && written + (batch.len() as u64) < total {
            let n = written + batch.len() as u64;
            let slot = if n.is_multiple_of(big_every) && active[0].left > 0 {
                0
            } else {
                1 + rng.below(ACTIVE as u64 - 1) as usize
            };
            let ts = first + n * step;
            let record = exchange(&mut rng, &active[slot], ts);
            batch.push((record, active[slot].assignment.clone()));
            active[slot].assignment.new_session = false;
            active[slot].left = active[slot].left.saturating_sub(1);
            if active[slot].left == 0 && slot != 0 {
                serial += 1;
                let length = session_length(&mut rng);
                active[slot] = new_session(&mut rng, serial, length);
            }
        }
        let t = Instant::now();
        store.write(&batch)?;
        writing += t.elapsed();
        written += batch.len() as u64;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "store_fill: {written} of {total} exchanges ({:.0}/s writing)",
                written as f64 / writing.as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let (sessions, exchanges) = store.counts()?;
    drop(store);
    let file = Store::dir(&data_dir).join("data.mdb");
    let bytes = std::fs::metadata(&file)
        .with_context(|| format!("reading the size of {}", file.display()))?
        .len();
    let line = serde_json::json!({
        "written": written,
        "transaction_exchanges": BATCH,
        "write_seconds": writing.as_secs_f64(),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "sessions": sessions,
        "exchanges": exchanges,
        "file_bytes": bytes,
        "big_session": big,
        "probe_ip": probe_ip,
        "probe_endpoint": "/api/v1/users/{id}/orders",
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}

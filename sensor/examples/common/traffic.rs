//! Generated API traffic for the example binaries behind `cargo xtask bench` (`store_fill`,
//! `central_ship`): sessions of browsers, API clients and logged-in users whose exchanges are
//! shaped like real API traffic (realistic user agents, templated paths with ids, query
//! strings, referrers), because bytes per exchange depend on it. Reproducible (a seeded
//! splitmix64), without a dependency.

// Each example uses a part of it.
#![allow(dead_code)]

use apisessions::record::{Assignment, KeyKind, StoredExchange};

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
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

pub struct Session {
    pub assignment: Assignment,
    pub client_ip: String,
    agent: &'static str,
    host: &'static str,
    browser: bool,
    /// Requests still to come.
    pub left: u64,
}

pub fn new_session(rng: &mut Rng, serial: u64, requests: u64) -> Session {
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
pub fn session_length(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=5 => 1 + rng.below(20),
        6..=8 => 20 + rng.below(100),
        _ => 120 + rng.below(280),
    }
}

pub fn exchange(rng: &mut Rng, session: &Session, ts_ns: u64) -> StoredExchange {
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
        tls: false,
        http2: None,
        exchange_id: None,
    }
}

/// Live traffic: `active` sessions at a time, each exchange from one picked at random, a
/// session replaced by a new one when it has made its requests (so that batches interleave
/// sessions as live traffic does).
pub struct Mix {
    rng: Rng,
    serial: u64,
    active: Vec<Session>,
}

impl Mix {
    pub fn new(seed: u64, active: usize) -> Self {
        let mut rng = Rng(seed);
        let active = (1..=active as u64)
            .map(|serial| {
                let length = session_length(&mut rng);
                new_session(&mut rng, serial, length)
            })
            .collect::<Vec<_>>();
        Self {
            rng,
            serial: active.len() as u64,
            active,
        }
    }

    /// The next exchange, at `ts_ns`, with its session.
    pub fn next(&mut self, ts_ns: u64) -> (StoredExchange, Assignment) {
        let slot = self.rng.below(self.active.len() as u64) as usize;
        let record = exchange(&mut self.rng, &self.active[slot], ts_ns);
        let session = &mut self.active[slot];
        let assignment = session.assignment.clone();
        session.assignment.new_session = false;
        session.left = session.left.saturating_sub(1);
        if session.left == 0 {
            self.serial += 1;
            let length = session_length(&mut self.rng);
            self.active[slot] = new_session(&mut self.rng, self.serial, length);
        }
        (record, assignment)
    }
}

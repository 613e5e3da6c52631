//! Session key extraction on arbitrary exchanges: cookies, `Authorization` (Basic, Bearer, JWT
//! claims), token headers, query tokens, JSON and form bodies, values handed out by responses,
//! with the built-in keys and with a configuration of custom keys and parameters on both sides.
//! No input may panic the grouping or the record built from it.
#![no_main]

use std::{net::SocketAddr, path::Path, sync::OnceLock};

use apisessions::{
    config::Config,
    exchange::{Exchange, MessageMeta, Request, Response},
    record::{Redaction, Secret},
    sessions::{
        SessionConfig, Sessionizer,
        extract::{Credential, jwt_claims},
    },
};
use libfuzzer_sys::fuzz_target;

/// Custom keys and parameters on every location a configuration can name, JWT claims included.
const CUSTOM: &str = r#"
[sessions]
keys = [
    "request.header.Authorization.jwt.sub",
    "request.cookie.sid",
    "request.query.token",
    "request.body.json.user.id",
    "request.body.form.user",
    "request.header.X-Api-Key",
    "response.header.X-Session",
    "response.cookie.sid",
    "response.body.json.data.token.jwt.sub",
    "response.body.form.session",
]
cookies = ["app_*", "*_auth", "*sess*"]
exclude_cookies = ["track*"]
headers = ["X-Tenant-Token"]

[[parameters]]
name = "user"
path = "request.body.json.user.name"
type = "user"

[[parameters]]
name = "role"
path = "request.header.Authorization.jwt.role"
type = "role"
hashed = true

[[parameters]]
name = "tenant"
path = "response.cookie.tenant.jwt.tid"
"#;

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "",
];

fn configs() -> &'static [SessionConfig; 2] {
    static CONFIGS: OnceLock<[SessionConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let custom = Config::parse(CUSTOM, Path::new("fuzz.toml")).expect("the custom keys parse");
        [SessionConfig::default(), SessionConfig::from(&custom)]
    })
}

/// `Name: value` lines; a line without a colon is a header with an empty value.
fn headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .take(32)
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.trim().to_owned(), value.trim().to_owned()),
            None => (line.trim().to_owned(), String::new()),
        })
        .collect()
}

fn meta(head: &str, body: &[u8], kind: u8, start_ns: u64) -> MessageMeta {
    let mut headers = headers(head);
    let content_type = CONTENT_TYPES[usize::from(kind) % CONTENT_TYPES.len()];
    if !content_type.is_empty() {
        headers.push(("Content-Type".to_owned(), content_type.to_owned()));
    }
    MessageMeta {
        start_ns,
        end_ns: start_ns + 1,
        version: "1.1",
        headers,
        body_len: body.len() as u64,
        body: body.to_vec(),
        ..MessageMeta::default()
    }
}

/// One exchange from `uri \0 request head \0 request body \0 response head \0 response body`;
/// `flags` picks the body types and whether each side is there.
fn exchange(flags: u8, input: &[u8], start_ns: u64) -> Exchange {
    let mut parts = input.splitn(5, |b| *b == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (uri, request_head, request_body, response_head, response_body) =
        (text(), text(), text(), text(), text());
    let request = (flags & 1 == 0).then(|| Request {
        method: "POST".into(),
        uri,
        meta: meta(&request_head, request_body.as_bytes(), flags >> 2, start_ns),
    });
    let response = (flags & 2 == 0).then(|| Response {
        status: Some(200),
        reason: "OK".into(),
        interim: Vec::new(),
        meta: meta(&response_head, response_body.as_bytes(), flags >> 4, start_ns),
    });
    Exchange {
        client: SocketAddr::from(([10, 0, 0, 1 + (flags >> 6)], 40000)),
        server: SocketAddr::from(([10, 0, 0, 100], 8080)),
        request,
        response,
        forwarding: Default::default(),
        tls: false,
        upstream: None,
        stream_id: None,
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the configuration; then up to 4 exchanges of one sessionizer (so
    // values handed out by one are looked up by the next), separated by 0xFF.
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let config = configs()[usize::from(choice & 1)].clone();
    let redaction = Redaction::new(choice & 2 != 0, &["x-api-key".to_owned()]);
    let mut sessionizer = Sessionizer::new(config, Secret::from_bytes([7; 32]));
    for (i, part) in rest.split(|b| *b == 0xFF).take(4).enumerate() {
        let Some((&flags, input)) = part.split_first() else {
            continue;
        };
        let exchange = exchange(flags, input, 1_000_000_000 * (i as u64 + 1));
        let _ = sessionizer.record(&exchange, &redaction);
        if let Some(request) = &exchange.request {
            for (_, value) in request.meta.all_headers() {
                let _ = Credential::from_authorization(value);
                let _ = jwt_claims(value);
            }
        }
    }
});

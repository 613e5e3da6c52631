//! The attack detector on arbitrary requests: no input may panic it or make it exceed its
//! bounds (findings, excerpt length, bytes inspected).
#![no_main]

use std::sync::OnceLock;

use apisessions::{
    analysis::attacks::{AttacksConfig, Detector, MAX_EXCERPT, MAX_FINDINGS},
    exchange::{MessageMeta, Request},
};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/xml",
    "text/plain",
    "",
];

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        Detector::new(&AttacksConfig {
            headers: vec!["X-Input".into()],
            max_bytes: 4096,
            secret_names: Vec::new(),
        })
        .expect("the built-in rules compile")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the body's type; then URI, header value and body split at NULs.
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == 0);
    let uri = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default().to_vec();
    let content_type = CONTENT_TYPES[usize::from(kind) % CONTENT_TYPES.len()];
    let mut headers = vec![
        ("User-Agent".to_owned(), header.clone()),
        ("Cookie".to_owned(), header.clone()),
        ("X-Input".to_owned(), header),
    ];
    if !content_type.is_empty() {
        headers.push(("Content-Type".to_owned(), content_type.to_owned()));
    }
    let request = Request {
        method: "POST".into(),
        uri,
        meta: MessageMeta {
            headers,
            body_len: body.len() as u64,
            body,
            ..MessageMeta::default()
        },
    };
    let inspection = detector().inspect(&request, &|_| "h:secret".to_owned());
    assert!(inspection.findings.len() <= MAX_FINDINGS);
    assert!(inspection.bytes_inspected <= 4096);
    for finding in &inspection.findings {
        assert!(finding.excerpt.len() <= MAX_EXCERPT, "{finding:?}");
    }
});

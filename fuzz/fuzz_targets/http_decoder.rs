//! The HTTP decoder on arbitrary conversations: any bytes, on either side, with gaps and ends in
//! between, must never panic or wedge it.
#![no_main]

use apisessions::http::{HttpConfig, HttpConnection, HttpCounters};
use libfuzzer_sys::fuzz_target;

#[path = "common/conversation.rs"]
mod conversation;

fuzz_target!(|data: &[u8]| {
    // Small caps so the bounds are reached too.
    let config = HttpConfig {
        body_cap: 64,
        max_head_bytes: 512,
        max_headers: 8,
        max_line_bytes: 64,
        max_pending: 4,
        ..HttpConfig::default()
    };
    let mut connection = HttpConnection::new("10.0.0.2:1000".parse().unwrap(), "10.0.0.1:80".parse().unwrap());
    let mut counters = HttpCounters::default();
    let mut out = Vec::new();
    let events = conversation::events(data);
    let end = events.len() as u64 + 1;
    for (side, event) in events {
        connection.on_event(side, event, &config, &mut counters, &mut out);
    }
    connection.finish(end, &config, &mut counters, &mut out);
});

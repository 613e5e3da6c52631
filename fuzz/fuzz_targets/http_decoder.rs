//! The HTTP decoder on arbitrary conversations: any bytes, on either side, with gaps and ends in
//! between, must never panic or wedge it.
#![no_main]

use apisessions::{
    http::{HttpConfig, HttpConnection, HttpCounters, Side},
    reassembly::{EndReason, StreamEvent},
};
use libfuzzer_sys::fuzz_target;

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
    // Records: a control byte (side, kind, length) followed by that many bytes.
    let mut rest = data;
    let mut ts = 0;
    while let Some((&control, tail)) = rest.split_first() {
        ts += 1;
        let side = if control & 1 == 0 { Side::Client } else { Side::Server };
        let len = usize::from(control >> 3).min(tail.len());
        let event = match (control >> 1) & 3 {
            0 | 1 => StreamEvent::Data { ts_ns: ts, bytes: tail[..len].to_vec() },
            2 => StreamEvent::Gap { ts_ns: ts, len: (len > 0).then_some(len as u64) },
            _ => StreamEvent::End { ts_ns: ts, reason: EndReason::Fin },
        };
        connection.on_event(side, event, &config, &mut counters, &mut out);
        rest = &tail[len..];
    }
    connection.finish(ts + 1, &config, &mut counters, &mut out);
});

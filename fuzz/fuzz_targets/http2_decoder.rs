//! The HTTP/2 decoder on arbitrary input: HPACK header blocks against a small dynamic table,
//! and whole conversations (the client's preface, or an HTTP/1.1 upgrade to h2c, then any frames
//! on either side, with gaps and ends in between). Nothing may panic, wedge, or let the table outgrow its bound.
#![no_main]

use apisessions::{
    http::{
        HttpConfig, HttpConnection, HttpCounters, Side,
        h2::{PREFACE, hpack},
    },
    reassembly::StreamEvent,
};
use libfuzzer_sys::fuzz_target;

#[path = "common/conversation.rs"]
mod conversation;

fuzz_target!(|data: &[u8]| {
    // HPACK alone: blocks of the lengths the control bytes give, one context, as a connection
    // decodes them.
    let bound = 512;
    let mut decoder = hpack::Decoder::new(bound);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let mut fields = 0usize;
        if decoder.decode(&tail[..len], |_, _| fields += 1).is_err() {
            decoder = hpack::Decoder::new(bound);
        }
        assert!(decoder.table_size() <= bound);
        assert!(decoder.table_len() <= bound / 32);
        rest = &tail[len..];
    }
    let _ = hpack::huffman_decode(data);

    // A conversation that began with the preface, with small bounds so they are reached.
    let config = HttpConfig {
        body_cap: 64,
        max_head_bytes: 512,
        max_headers: 8,
        h2_max_frame_bytes: 256,
        h2_max_header_block_bytes: 512,
        h2_max_table_bytes: bound,
        h2_max_streams: 4,
        ..HttpConfig::default()
    };
    let client = "10.0.0.2:1000".parse().unwrap();
    let mut connection = HttpConnection::new(client, "10.0.0.1:80".parse().unwrap());
    let mut counters = HttpCounters::default();
    let mut out = Vec::new();
    // Odd inputs start as an HTTP/1.1 upgrade to h2c, the others with the preface.
    let start: &[(Side, &[u8])] = if data.first().is_some_and(|b| b & 1 == 1) {
        &[
            (Side::Client, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"),
            (Side::Server, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
            (Side::Client, PREFACE),
        ]
    } else {
        &[(Side::Client, PREFACE)]
    };
    for (side, bytes) in start {
        let event = StreamEvent::Data { ts_ns: 0, bytes: bytes.to_vec() };
        connection.on_event(*side, event, &config, &mut counters, &mut out);
    }
    let events = conversation::events(data);
    let end = events.len() as u64 + 1;
    for (side, event) in events {
        connection.on_event(side, event, &config, &mut counters, &mut out);
    }
    connection.finish(end, &config, &mut counters, &mut out);
    assert!(out.iter().all(|e| e.stream_id.is_some()));
    assert_eq!(counters.h2_connections, 1);
});

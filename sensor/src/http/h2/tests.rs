//! Tests of the HTTP/2 connection decoder, through [`HttpConnection`] as the flow table drives
//! it: conversations built frame by frame, fed whole and cut at every byte.

use std::net::SocketAddr;

use super::frame::{flag, kind};
use crate::{
    exchange::Exchange,
    http::{HttpConfig, HttpConnection, HttpCounters, Side},
    reassembly::{EndReason, StreamEvent},
};

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream_id.to_be_bytes());
    out.extend(payload);
    out
}

/// A header block of literals without indexing (short names and values).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        out.push(name.len() as u8);
        out.extend(name.as_bytes());
        out.push(value.len() as u8);
        out.extend(value.as_bytes());
    }
    out
}

fn headers(stream_id: u32, end_stream: bool, fields: &[(&str, &str)]) -> Vec<u8> {
    let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::HEADERS, flags, stream_id, &block(fields))
}

fn get(stream_id: u32, path: &str) -> Vec<u8> {
    headers(
        stream_id,
        true,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "api.test"),
        ],
    )
}

fn status(stream_id: u32, end_stream: bool, status: &str) -> Vec<u8> {
    headers(
        stream_id,
        end_stream,
        &[(":status", status), ("content-type", "application/json")],
    )
}

fn data(stream_id: u32, end_stream: bool, bytes: &[u8]) -> Vec<u8> {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, flags, stream_id, bytes)
}

fn settings() -> Vec<u8> {
    frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
}

fn client_start() -> Vec<u8> {
    let mut out = super::PREFACE.to_vec();
    out.extend(settings());
    out.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0xf, 0, 1]));
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feeds each side's bytes as one event per `piece` bytes, in script order, then ends the
/// connection.
fn run_pieces(script: &[(Side, Vec<u8>)], piece: usize) -> (Vec<Exchange>, HttpCounters) {
    let events = script
        .iter()
        .flat_map(|(side, bytes)| {
            bytes
                .chunks(piece.max(1))
                .enumerate()
                .map(move |(i, chunk)| {
                    (
                        *side,
                        StreamEvent::Data {
                            ts_ns: 1000 + i as u64,
                            bytes: chunk.to_vec(),
                        },
                    )
                })
        })
        .collect();
    run_events(events)
}

fn run_events(events: Vec<(Side, StreamEvent)>) -> (Vec<Exchange>, HttpCounters) {
    let config = HttpConfig::default();
    let mut connection = HttpConnection::new(addr("10.0.0.2:40000"), addr("10.0.0.1:8080"));
    let mut counters = HttpCounters::default();
    let mut out = Vec::new();
    for (side, event) in events {
        connection.on_event(side, event, &config, &mut counters, &mut out);
    }
    for side in [Side::Client, Side::Server] {
        let end = StreamEvent::End {
            ts_ns: 99_999,
            reason: EndReason::Fin,
        };
        connection.on_event(side, end, &config, &mut counters, &mut out);
    }
    connection.finish(99_999, &config, &mut counters, &mut out);
    (out, counters)
}

/// `stream method uri host => status body_len flags`, sorted by stream.
fn render(exchanges: &[Exchange]) -> Vec<String> {
    let mut lines: Vec<(Option<u32>, String)> = exchanges
        .iter()
        .map(|e| {
            let request = e.request.as_ref().map_or("-".to_owned(), |r| {
                let mut text = format!(
                    "{} {} {} host={}",
                    r.meta.version,
                    r.method,
                    r.uri,
                    r.meta.header("host").unwrap_or("-")
                );
                if r.meta.body_len > 0 {
                    text += &format!(" body={}", r.meta.body_len);
                }
                if r.meta.truncated {
                    text += " trunc";
                }
                text
            });
            let response = e.response.as_ref().map_or("-".to_owned(), |r| {
                let mut text = format!("{} body={}", r.status.unwrap_or(0), r.meta.body_len);
                for interim in &r.interim {
                    text += &format!(" after {interim}");
                }
                if let Some(grpc) = r.meta.header("grpc-status") {
                    text += &format!(" grpc-status={grpc}");
                }
                if r.meta.truncated {
                    text += " trunc";
                }
                if r.meta.gap {
                    text += " gap";
                }
                text
            });
            (
                e.stream_id,
                format!("{:?} {request} => {response}", e.stream_id),
            )
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

/// Every cut of the script gives the same exchanges.
fn check(script: &[(Side, Vec<u8>)], want: &[&str]) -> HttpCounters {
    let total: usize = script.iter().map(|(_, b)| b.len()).max().unwrap_or(1);
    let mut counters = None;
    for piece in [usize::MAX, 1, 2, 7, 9, 10, 13, 24, 25, total / 2] {
        let (exchanges, c) = run_pieces(script, piece);
        assert_eq!(render(&exchanges), want, "pieces of {piece}");
        counters.get_or_insert(c);
    }
    counters.unwrap()
}

#[test]
fn one_stream_one_exchange() {
    let mut client = client_start();
    client.extend(get(1, "/api/user.json?s=1"));
    let mut server = settings();
    server.extend(status(1, false, "200"));
    server.extend(data(1, false, b"{\"id\":"));
    server.extend(data(1, true, b"1}"));
    let counters = check(
        &[(Side::Client, client), (Side::Server, server)],
        &["Some(1) HTTP/2 GET /api/user.json?s=1 host=api.test => 200 body=8"],
    );
    assert_eq!(
        (
            counters.h2_connections,
            counters.exchanges,
            counters.requests
        ),
        (1, 1, 1)
    );
    let (exchanges, _) = run_pieces(
        &[
            (Side::Client, {
                let mut c = client_start();
                c.extend(get(1, "/x"));
                c
            }),
            (Side::Server, {
                let mut s = status(1, false, "200");
                s.extend(data(1, true, b"abc"));
                s
            }),
        ],
        usize::MAX,
    );
    let response = exchanges[0].response.as_ref().unwrap();
    assert_eq!(response.meta.body, b"abc");
    assert_eq!(
        response.meta.header("content-type"),
        Some("application/json")
    );
    assert_eq!(response.meta.version, "HTTP/2");
}

#[test]
fn concurrent_streams_pair_by_stream_not_by_order() {
    let mut client = client_start();
    for id in [1, 3, 5] {
        client.extend(get(id, &format!("/s/{id}")));
    }
    // Responses interleaved and out of order.
    let mut server = settings();
    server.extend(status(5, false, "200"));
    server.extend(status(1, false, "404"));
    server.extend(data(5, false, b"five"));
    server.extend(status(3, true, "204"));
    server.extend(data(1, true, b"one!!"));
    server.extend(data(5, true, b"5"));
    check(
        &[(Side::Client, client), (Side::Server, server)],
        &[
            "Some(1) HTTP/2 GET /s/1 host=api.test => 404 body=5",
            "Some(3) HTTP/2 GET /s/3 host=api.test => 204 body=0",
            "Some(5) HTTP/2 GET /s/5 host=api.test => 200 body=5",
        ],
    );
}

#[test]
fn request_bodies_continuation_padding_and_priority() {
    let mut client = client_start();
    // HEADERS with padding and priority, its block split over two CONTINUATIONs.
    let fields = block(&[
        (":method", "POST"),
        (":path", "/upload"),
        (":authority", "api.test"),
        ("content-type", "application/json"),
    ]);
    let mut payload = vec![4u8]; // padding length
    payload.extend([0, 0, 0, 0, 16]); // dependency and weight
    payload.extend(&fields[..10]);
    payload.extend([0; 4]);
    client.extend(frame(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY,
        1,
        &payload,
    ));
    client.extend(frame(kind::CONTINUATION, 0, 1, &fields[10..20]));
    client.extend(frame(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &fields[20..],
    ));
    // A padded DATA frame, then the rest.
    let mut padded = vec![3u8];
    padded.extend(b"{\"a\":");
    padded.extend([0; 3]);
    client.extend(frame(kind::DATA, flag::PADDED, 1, &padded));
    client.extend(frame(kind::PING, 0, 0, &[1; 8]));
    client.extend(data(1, true, b"1}"));
    let mut server = status(1, false, "100");
    server.extend(status(1, false, "201"));
    server.extend(data(1, true, b""));
    check(
        &[(Side::Client, client), (Side::Server, server)],
        &["Some(1) HTTP/2 POST /upload host=api.test body=7 => 201 body=0 after 100"],
    );
}

#[test]
fn head_and_trailers() {
    let mut client = client_start();
    client.extend(headers(
        1,
        true,
        &[(":method", "HEAD"), (":path", "/big"), ("host", "h.test")],
    ));
    client.extend(headers(
        3,
        false,
        &[
            (":method", "POST"),
            (":path", "/pkg.Svc/Call"),
            (":authority", "g.test"),
            ("content-type", "application/grpc"),
        ],
    ));
    client.extend(data(3, true, &[0, 0, 0, 0, 2, 8, 1]));
    let mut server = headers(1, true, &[(":status", "200"), ("content-length", "300000")]);
    server.extend(headers(
        3,
        false,
        &[(":status", "200"), ("content-type", "application/grpc")],
    ));
    server.extend(data(3, false, &[0, 0, 0, 0, 0]));
    server.extend(headers(
        3,
        true,
        &[("grpc-status", "0"), ("grpc-message", "")],
    ));
    check(
        &[(Side::Client, client), (Side::Server, server)],
        &[
            "Some(1) HTTP/2 HEAD /big host=h.test => 200 body=0",
            "Some(3) HTTP/2 POST /pkg.Svc/Call host=g.test body=7 => 200 body=5 grpc-status=0",
        ],
    );
}

#[test]
fn reset_and_goaway_end_streams() {
    let mut client = client_start();
    for id in [1, 3, 5] {
        client.extend(get(id, &format!("/s/{id}")));
    }
    client.extend(frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    let mut server = status(3, false, "200");
    server.extend(data(3, false, b"par"));
    server.extend(frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
    let counters = check(
        &[(Side::Client, client), (Side::Server, server)],
        &[
            "Some(1) HTTP/2 GET /s/1 host=api.test => -",
            "Some(3) HTTP/2 GET /s/3 host=api.test => 200 body=3 trunc",
            "Some(5) HTTP/2 GET /s/5 host=api.test => -",
        ],
    );
    assert_eq!(
        (counters.h2_streams_reset, counters.h2_streams_refused),
        (1, 1)
    );
}

#[test]
fn hpack_context_carries_across_blocks() {
    // RFC 7541 C.4's three requests (Huffman, incremental indexing) on streams 1, 3, 5.
    let hex = |t: &str| -> Vec<u8> {
        let d: String = t.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..d.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&d[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut client = client_start();
    for (id, b) in [
        (1, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        (3, "8286 84be 5886 a8eb 1064 9cbf"),
        (
            5,
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ),
    ] {
        client.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            &hex(b),
        ));
    }
    let mut server = Vec::new();
    for id in [1, 3, 5] {
        // Indexed :status 200 (static index 8).
        server.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            id,
            &[0x88],
        ));
    }
    check(
        &[(Side::Client, client), (Side::Server, server)],
        &[
            "Some(1) HTTP/2 GET / host=www.example.com => 200 body=0",
            "Some(3) HTTP/2 GET / host=www.example.com => 200 body=0",
            "Some(5) HTTP/2 GET /index.html host=www.example.com => 200 body=0",
        ],
    );
}

#[test]
fn a_broken_header_block_stops_the_connection() {
    let mut client = client_start();
    client.extend(get(1, "/ok"));
    // Index 70 refers to an empty dynamic table.
    client.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &[0x80 | 70],
    ));
    client.extend(get(5, "/never"));
    let server = status(1, true, "200");
    let counters = check(
        &[(Side::Client, client), (Side::Server, server)],
        &["Some(1) HTTP/2 GET /ok host=api.test => -"],
    );
    assert_eq!(
        (counters.h2_hpack_errors, counters.h2_decoding_stopped),
        (1, 1)
    );
}

#[test]
fn an_interrupted_header_block_stops_the_connection() {
    let mut client = client_start();
    let fields = block(&[(":method", "GET"), (":path", "/a")]);
    client.extend(frame(kind::HEADERS, flag::END_STREAM, 1, &fields[..5]));
    client.extend(data(1, true, b"x"));
    let counters = check(&[(Side::Client, client), (Side::Server, Vec::new())], &[]);
    assert_eq!(
        (counters.h2_protocol_errors, counters.h2_decoding_stopped),
        (1, 1)
    );
}

#[test]
fn oversized_frames_are_skipped_and_header_blocks_past_the_bound_stop() {
    let mut client = client_start();
    client.extend(get(1, "/a"));
    // A PING far over the bound: skipped by length.
    client.extend(frame(kind::PING, 0, 0, &vec![0; 70_000]));
    client.extend(get(3, "/b"));
    let value = "v".repeat(100);
    let many: Vec<(&str, &str)> = (0..120).map(|_| ("x-big", value.as_str())).collect();
    let mut big = vec![(":method", "GET"), (":path", "/c")];
    big.extend(many);
    let block = block(&big);
    client.extend(frame(kind::HEADERS, 0, 5, &block[..8000]));
    for piece in block[8000..].chunks(8000) {
        client.extend(frame(kind::CONTINUATION, 0, 5, piece));
    }
    let mut server = status(1, true, "200");
    server.extend(status(3, true, "200"));
    let config = HttpConfig::default();
    assert!(block.len() < config.h2_max_frame_bytes);
    let (exchanges, counters) = run_pieces(
        &[
            (Side::Client, client.clone()),
            (Side::Server, server.clone()),
        ],
        1000,
    );
    assert_eq!(render(&exchanges).len(), 2);
    assert_eq!(
        (counters.h2_frames_too_large, counters.h2_decoding_stopped),
        (1, 0)
    );
    // The same with a block over a smaller bound.
    let config = HttpConfig {
        h2_max_header_block_bytes: 10_000,
        ..HttpConfig::default()
    };
    let mut connection = HttpConnection::new(addr("10.0.0.2:40000"), addr("10.0.0.1:8080"));
    let (mut counters, mut out) = (HttpCounters::default(), Vec::new());
    for (side, bytes) in [(Side::Client, client), (Side::Server, server)] {
        let event = StreamEvent::Data { ts_ns: 1, bytes };
        connection.on_event(side, event, &config, &mut counters, &mut out);
    }
    connection.finish(2, &config, &mut counters, &mut out);
    assert_eq!(counters.h2_header_blocks_too_large, 1);
    assert_eq!(out.len(), 2);
}

#[test]
fn too_many_open_streams_are_counted_not_followed() {
    let config = HttpConfig {
        h2_max_streams: 2,
        ..HttpConfig::default()
    };
    let mut client = client_start();
    for id in [1, 3, 5, 7] {
        client.extend(get(id, "/"));
    }
    let mut connection = HttpConnection::new(addr("10.0.0.2:40000"), addr("10.0.0.1:8080"));
    let (mut counters, mut out) = (HttpCounters::default(), Vec::new());
    let event = StreamEvent::Data {
        ts_ns: 1,
        bytes: client,
    };
    connection.on_event(Side::Client, event, &config, &mut counters, &mut out);
    let mut server = Vec::new();
    for id in [1, 3, 5, 7] {
        server.extend(status(id, true, "200"));
    }
    let event = StreamEvent::Data {
        ts_ns: 2,
        bytes: server,
    };
    connection.on_event(Side::Server, event, &config, &mut counters, &mut out);
    connection.finish(3, &config, &mut counters, &mut out);
    assert_eq!(render(&out).len(), 2);
    assert_eq!(counters.h2_streams_over_limit, 2);
}

#[test]
fn a_connection_joined_midway_is_skipped() {
    let mut client = get(7, "/late");
    client.extend(data(7, true, b""));
    let server = status(7, true, "200");
    let events = vec![
        (
            Side::Client,
            StreamEvent::Gap {
                ts_ns: 1,
                len: None,
            },
        ),
        (
            Side::Server,
            StreamEvent::Gap {
                ts_ns: 1,
                len: None,
            },
        ),
        (
            Side::Client,
            StreamEvent::Data {
                ts_ns: 2,
                bytes: client,
            },
        ),
        (
            Side::Server,
            StreamEvent::Data {
                ts_ns: 3,
                bytes: server,
            },
        ),
    ];
    let (exchanges, counters) = run_events(events);
    assert!(exchanges.is_empty());
    assert_eq!(
        (counters.h2_midway_skipped, counters.h2_connections),
        (1, 0)
    );
    assert_eq!(
        counters.parse_errors + counters.requests + counters.responses,
        0
    );
}

#[test]
fn a_server_that_speaks_first_is_held_until_the_preface() {
    let mut server = settings();
    server.extend(status(1, true, "200"));
    let mut client = client_start();
    client.extend(get(1, "/first"));
    let (exchanges, _) = run_pieces(
        &[
            (Side::Server, settings()),
            (Side::Client, client),
            (Side::Server, status(1, true, "200")),
        ],
        5,
    );
    assert_eq!(
        render(&exchanges),
        ["Some(1) HTTP/2 GET /first host=api.test => 200 body=0"]
    );
}

#[test]
fn http1_is_untouched() {
    for piece in [1, 2, 3, 100] {
        let (exchanges, counters) = run_pieces(
            &[
                (
                    Side::Client,
                    b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
                ),
                (Side::Server, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
            ],
            piece,
        );
        assert_eq!(
            render(&exchanges),
            ["None 1.1 PUT /p host=a body=2 => 204 body=0"],
            "pieces of {piece}"
        );
        assert_eq!(counters.h2_connections, 0);
    }
}

#[test]
fn gaps_inside_data_keep_the_connection_and_elsewhere_stop_it() {
    let mut client = client_start();
    client.extend(get(1, "/big"));
    client.extend(get(3, "/after"));
    let head = status(1, false, "200");
    let body = data(1, true, &[b'z'; 1000]);
    let events = vec![
        (
            Side::Client,
            StreamEvent::Data {
                ts_ns: 1,
                bytes: client,
            },
        ),
        (
            Side::Server,
            StreamEvent::Data {
                ts_ns: 2,
                bytes: [head, body[..100].to_vec()].concat(),
            },
        ),
        (
            Side::Server,
            StreamEvent::Gap {
                ts_ns: 3,
                len: Some(500),
            },
        ),
        (
            Side::Server,
            StreamEvent::Data {
                ts_ns: 4,
                bytes: body[600..].to_vec(),
            },
        ),
        (
            Side::Server,
            StreamEvent::Data {
                ts_ns: 5,
                bytes: status(3, false, "200"),
            },
        ),
        (
            Side::Server,
            StreamEvent::Gap {
                ts_ns: 6,
                len: Some(5),
            },
        ),
    ];
    let (exchanges, counters) = run_events(events);
    assert_eq!(
        render(&exchanges),
        [
            "Some(1) HTTP/2 GET /big host=api.test => 200 body=1000 gap",
            "Some(3) HTTP/2 GET /after host=api.test => 200 body=0 trunc",
        ]
    );
    assert_eq!(
        (counters.messages_with_gaps, counters.h2_decoding_stopped),
        (1, 1)
    );
}

#[test]
fn push_promises_become_exchanges() {
    let mut client = client_start();
    client.extend(get(1, "/page"));
    let mut promise = vec![0, 0, 0, 2];
    promise.extend(block(&[
        (":method", "GET"),
        (":path", "/style.css"),
        (":authority", "api.test"),
    ]));
    let mut server = frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &promise);
    server.extend(status(1, true, "200"));
    server.extend(status(2, false, "200"));
    server.extend(data(2, true, b"css"));
    check(
        &[(Side::Client, client), (Side::Server, server)],
        &[
            "Some(1) HTTP/2 GET /page host=api.test => 200 body=0",
            "Some(2) HTTP/2 GET /style.css host=api.test => 200 body=3",
        ],
    );
}

#[test]
fn an_upgrade_to_h2c_switches_the_connection() {
    let request = b"GET /up HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                    Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
    let mut server =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    server.extend(settings());
    server.extend(status(1, false, "200"));
    server.extend(data(1, true, b"upgraded"));
    let mut client = client_start();
    client.extend(get(3, "/next"));
    let script = [
        (Side::Client, request.to_vec()),
        (Side::Server, server),
        (Side::Client, client),
        (Side::Server, status(3, true, "204")),
    ];
    let counters = check(
        &script,
        &[
            "Some(1) 1.1 GET /up host=api.test => 200 body=8 after 101",
            "Some(3) HTTP/2 GET /next host=api.test => 204 body=0",
        ],
    );
    assert_eq!((counters.h2_connections, counters.tunnels), (1, 0));
    // Not to h2c (a WebSocket): the connection stops being decoded, as before.
    let (exchanges, counters) = run_pieces(
        &[
            (
                Side::Client,
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            ),
            (
                Side::Server,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            ),
            (Side::Client, client_start()),
        ],
        usize::MAX,
    );
    assert_eq!(
        render(&exchanges),
        ["None 1.1 GET /ws host=a => 101 body=0"]
    );
    assert_eq!((counters.h2_connections, counters.tunnels), (0, 1));
}

#[test]
fn grpc_messages_are_counted_across_data_frames() {
    let mut client = client_start();
    client.extend(headers(
        1,
        false,
        &[
            (":method", "POST"),
            (":path", "/echo.Echo/Stream"),
            (":authority", "g.test"),
            ("content-type", "application/grpc+proto"),
        ],
    ));
    // Three messages (3, 0 and 300 bytes), their prefixes and bodies cut across frames.
    let mut messages = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 1, 0, 0, 1, 44];
    messages.extend([7; 300]);
    for (i, piece) in messages.chunks(7).enumerate() {
        let last = (i + 1) * 7 >= messages.len();
        client.extend(data(1, last, piece));
    }
    let mut server = status(1, false, "200");
    server.extend(data(1, false, &[0, 0, 0, 0, 1, 9]));
    server.extend(headers(
        1,
        true,
        &[("grpc-status", "7"), ("grpc-message", "denied")],
    ));
    let script = [(Side::Client, client), (Side::Server, server)];
    for piece in [1, 5, usize::MAX] {
        let (exchanges, _) = run_pieces(&script, piece);
        let [exchange] = &exchanges[..] else {
            panic!("{exchanges:?}");
        };
        let (request, response) = (
            exchange.request.as_ref().unwrap(),
            exchange.response.as_ref().unwrap(),
        );
        assert_eq!(request.meta.grpc_messages, Some(3));
        assert_eq!(request.meta.body_len, messages.len() as u64);
        assert_eq!(response.meta.grpc_messages, Some(1));
        assert_eq!(response.meta.header("grpc-status"), Some("7"));
        let record = crate::record::StoredExchange::new(
            exchange,
            &crate::record::Secret::from_bytes([0; 32]),
            &crate::record::Redaction::default(),
        );
        let json = record.to_json("s");
        assert_eq!(
            (
                &json["stream_id"],
                &json["grpc_status"],
                &json["grpc_request_messages"],
                &json["grpc_response_messages"],
                &json["endpoint"],
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(7),
                &serde_json::json!(3),
                &serde_json::json!(1),
                &serde_json::json!("/echo.Echo/Stream"),
            )
        );
    }
    // Not gRPC: no count.
    let mut client = client_start();
    client.extend(get(1, "/plain"));
    let mut server = status(1, false, "200");
    server.extend(data(1, true, &[0, 0, 0, 0, 1, 9]));
    let (exchanges, _) = run_pieces(
        &[(Side::Client, client), (Side::Server, server)],
        usize::MAX,
    );
    assert_eq!(
        exchanges[0].response.as_ref().unwrap().meta.grpc_messages,
        None
    );
}

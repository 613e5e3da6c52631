use std::net::SocketAddr;

use super::*;
use crate::exchange::{MessageMeta, Request, Response};

const MS: u64 = 1_000_000;

fn exchange(peer: &str, server: &str, headers: &[(&str, &str)], start: u64, end: u64) -> Exchange {
    Exchange {
        client: peer.parse().unwrap(),
        server: server.parse().unwrap(),
        request: Some(Request {
            method: "GET".into(),
            uri: "/items/1".into(),
            meta: MessageMeta {
                start_ns: start * MS,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                ..MessageMeta::default()
            },
        }),
        response: Some(Response {
            status: Some(200),
            meta: MessageMeta {
                start_ns: end * MS,
                end_ns: end * MS,
                ..MessageMeta::default()
            },
            ..Response::default()
        }),
        forwarding: Default::default(),
        tls: false,
        upstream: None,
        stream_id: None,
    }
}

fn push_all(stage: &mut ProxyStage, exchanges: Vec<Exchange>) -> Vec<Exchange> {
    let mut ready = Vec::new();
    for e in exchanges {
        stage.push(e, &mut ready);
    }
    stage.finish(&mut ready);
    ready
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn a_trusted_peer_names_the_client_and_an_untrusted_one_does_not() {
    let mut stage = ProxyStage::new(ProxyConfig {
        join: None,
        ..ProxyConfig::default()
    });
    let xff = [("X-Forwarded-For", "6.6.6.6, 203.0.113.9")];
    let out = push_all(
        &mut stage,
        vec![
            exchange("127.0.0.1:40000", "127.0.0.1:5000", &xff, 1, 2),
            exchange("203.0.113.7:40000", "10.0.0.1:80", &xff, 3, 4),
        ],
    );
    assert_eq!(out[0].client_addr(), addr("203.0.113.9:0"));
    assert_eq!(out[0].client, addr("127.0.0.1:40000"), "the peer stays");
    assert_eq!(
        out[1].client_addr(),
        addr("203.0.113.7:40000"),
        "spoofing ignored"
    );
    assert_eq!(stage.counters.forwarded_clients, 1);
    assert_eq!(stage.counters.forwarded_untrusted, 1);
    assert_eq!(stage.snapshot().len(), 12);
}

#[test]
fn headers_are_tried_in_the_configured_order() {
    let headers = [
        ("X-Real-IP", "198.51.100.1"),
        ("Forwarded", "for=\"[2001:db8::7]:4711\""),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    let client = |order: &[&str]| {
        let mut stage = ProxyStage::new(ProxyConfig {
            headers: order.iter().map(|h| (*h).to_owned()).collect(),
            ..ProxyConfig::default()
        });
        let e = exchange("[::1]:40000", "[::1]:5000", &headers, 1, 2);
        push_all(&mut stage, vec![e])[0].client_addr()
    };
    assert_eq!(
        client(&["x-forwarded-for", "forwarded"]),
        addr("203.0.113.9:0")
    );
    assert_eq!(
        client(&["forwarded", "x-real-ip"]),
        addr("[2001:db8::7]:4711")
    );
    assert_eq!(client(&["x-real-ip"]), addr("198.51.100.1:0"));
    assert_eq!(client(&["x-client-ip"]), addr("[::1]:40000"));
    assert_eq!(client(&[]), addr("[::1]:40000"));
}

#[test]
fn host_addresses_are_trusted_only_if_configured() {
    let xff = [("X-Forwarded-For", "203.0.113.9")];
    for trust in [true, false] {
        let mut stage = ProxyStage::new(ProxyConfig {
            trust_host_addresses: trust,
            ..ProxyConfig::default()
        });
        stage.set_host_addresses(vec!["10.200.0.1".parse().unwrap()]);
        assert_eq!(
            stage.is_trusted("::ffff:10.200.0.1".parse().unwrap()),
            trust
        );
        let out = push_all(
            &mut stage,
            vec![exchange("10.200.0.1:40000", "10.200.0.1:8080", &xff, 1, 2)],
        );
        let want = if trust {
            "203.0.113.9:0"
        } else {
            "10.200.0.1:40000"
        };
        assert_eq!(out[0].client_addr(), addr(want));
    }
}

#[test]
fn an_unusable_header_keeps_the_peer() {
    let mut stage = ProxyStage::new(ProxyConfig::default());
    let out = push_all(
        &mut stage,
        vec![exchange(
            "127.0.0.1:40000",
            "127.0.0.1:5000",
            &[("X-Forwarded-For", "203.0.113.9, unknown")],
            1,
            2,
        )],
    );
    assert_eq!(out[0].client_addr(), addr("127.0.0.1:40000"));
    assert_eq!(stage.counters.forwarded_unusable, 1);
}

/// The proxy's hop to its application on the loopback, for client 10.200.0.2, from 11 to 15 ms:
/// inside that client's exchange with the proxy (10 to 16 ms).
fn upstream_hop() -> Exchange {
    exchange(
        "127.0.0.1:40000",
        "127.0.0.1:5000",
        &[("X-Forwarded-For", "10.200.0.2")],
        11,
        15,
    )
}

#[test]
fn both_hops_give_one_exchange_unless_joining_is_off() {
    let hops = || {
        vec![
            upstream_hop(),
            exchange("10.200.0.2:50000", "10.200.0.1:80", &[], 10, 16),
            // Unrelated traffic passes straight through.
            exchange("10.200.0.3:50000", "10.200.0.1:80", &[], 20, 21),
        ]
    };
    let mut stage = ProxyStage::new(ProxyConfig::default());
    let mut ready = Vec::new();
    let mut input = hops().into_iter();
    stage.push(input.next().unwrap(), &mut ready);
    assert!(ready.is_empty(), "the upstream hop waits");
    for e in input {
        stage.push(e, &mut ready);
    }
    assert_eq!(ready.len(), 2);
    assert_eq!(ready[0].client_addr(), addr("10.200.0.2:50000"));
    assert!(ready[0].forwarding.joined);
    assert_eq!(ready[0].forwarding.upstream_ns, Some(4 * MS));
    assert!(!ready[1].forwarding.joined);
    let snapshot = stage.snapshot();
    assert!(snapshot.contains(&("joined", 1)), "{snapshot:?}");

    let mut off = ProxyStage::new(ProxyConfig {
        join: None,
        ..ProxyConfig::default()
    });
    let out = push_all(&mut off, hops());
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| !e.forwarding.joined));
    assert_eq!(out[0].client_addr(), addr("10.200.0.2:0"));
}

/// A client's exchange read from TLS comes through another ring than its proxy's hop to the
/// application, and may arrive first: it waits (`reorder_ns`) and the hop is joined into it; a
/// TLS exchange without a hop goes on once its wait is over.
#[test]
fn a_tls_client_exchange_that_arrives_before_its_upstream_hop_is_joined() {
    let tls = |e: Exchange| Exchange { tls: true, ..e };
    let mut stage = ProxyStage::new(ProxyConfig::default());
    let mut ready = Vec::new();
    stage.push(
        tls(exchange("10.200.0.2:50000", "10.200.0.1:443", &[], 10, 16)),
        &mut ready,
    );
    assert!(ready.is_empty(), "the TLS exchange waits for its hop");
    stage.push(upstream_hop(), &mut ready);
    assert_eq!(ready.len(), 1, "joined at once: {ready:?}");
    assert!(ready[0].tls && ready[0].forwarding.joined);
    assert_eq!(ready[0].client_addr(), addr("10.200.0.2:50000"));
    assert_eq!(ready[0].forwarding.upstream_ns, Some(4 * MS));

    // Without a hop: passed on when capture time is past its end and the wait.
    stage.push(
        tls(exchange("10.200.0.3:50000", "10.200.0.1:443", &[], 20, 21)),
        &mut ready,
    );
    assert_eq!(ready.len(), 1);
    stage.expire(21 * MS + JoinConfig::default().reorder_ns - 1, &mut ready);
    assert_eq!(ready.len(), 1, "still inside its wait");
    stage.expire(21 * MS + JoinConfig::default().reorder_ns + 1, &mut ready);
    assert_eq!(ready.len(), 2);
    assert!(!ready[1].forwarding.joined);
    let snapshot = stage.snapshot();
    for counter in [
        ("joined", 1),
        ("join_tls_held", 2),
        ("join_tls_joined_late", 1),
    ] {
        assert!(snapshot.contains(&counter), "{counter:?}: {snapshot:?}");
    }

    // Bounded: past `max_held` the oldest goes on, counted.
    let mut small = ProxyStage::new(ProxyConfig {
        join: Some(JoinConfig {
            max_held: 2,
            ..JoinConfig::default()
        }),
        ..ProxyConfig::default()
    });
    let mut ready = Vec::new();
    for port in [50001, 50002, 50003] {
        let client = format!("10.200.0.4:{port}");
        small.push(
            tls(exchange(&client, "10.200.0.1:443", &[], 30, 31)),
            &mut ready,
        );
    }
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].client.port(), 50001);
    assert!(small.snapshot().contains(&("unjoined_capacity", 1)));
}

#[test]
fn with_both_hops_the_proxy_own_entry_joins_even_if_the_client_header_was_spoofed() {
    // A proxy that sets only X-Real-IP passes a client's own X-Forwarded-For through: read
    // first, it names the client's choice. The upstream hop still joins its client's exchange
    // through the entry the proxy set, and the record is the client's.
    let mut stage = ProxyStage::new(ProxyConfig::default());
    let out = push_all(
        &mut stage,
        vec![
            exchange(
                "127.0.0.1:40000",
                "127.0.0.1:5000",
                &[("X-Forwarded-For", "6.6.6.6"), ("X-Real-IP", "10.200.0.2")],
                11,
                15,
            ),
            exchange(
                "10.200.0.2:50000",
                "10.200.0.1:80",
                &[("X-Forwarded-For", "6.6.6.6")],
                10,
                16,
            ),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].client_addr(), addr("10.200.0.2:50000"));
    assert!(out[0].forwarding.joined);
}

#[test]
fn sessions_and_records_use_the_real_client() {
    use crate::{
        record::{Redaction, Secret, StoredExchange},
        sessions::{SessionConfig, Sessionizer},
    };
    let mut stage = ProxyStage::new(ProxyConfig {
        join: None,
        ..ProxyConfig::default()
    });
    let mut via = |peer: &str, client: &str| {
        let e = exchange(
            peer,
            "127.0.0.1:5000",
            &[("X-Forwarded-For", client), ("User-Agent", "browser/1")],
            1,
            2,
        );
        let mut ready = Vec::new();
        stage.push(e, &mut ready);
        ready.pop().unwrap()
    };
    // Two users behind one proxy, and one user through two proxy connections.
    let alice = via("127.0.0.1:40000", "203.0.113.1");
    let bob = via("127.0.0.1:40000", "203.0.113.2");
    let alice_again = via("127.0.0.1:40001", "203.0.113.1");
    let mut sessions = Sessionizer::new(SessionConfig::default(), Secret::from_bytes([7; 32]));
    let ids: Vec<String> = [&alice, &bob, &alice_again]
        .iter()
        .map(|e| sessions.assign(e).session_id)
        .collect();
    assert_ne!(ids[0], ids[1], "the proxy's address does not merge users");
    assert_eq!(ids[0], ids[2]);

    let mut joined = alice;
    joined.forwarding.joined = true;
    joined.forwarding.upstream_ns = Some(1_234_567);
    let record = StoredExchange::new(&joined, &Secret::from_bytes([7; 32]), &Redaction::default());
    assert_eq!(
        (record.client_ip.as_str(), record.client_port),
        ("203.0.113.1", 0)
    );
    assert_eq!(
        (record.peer_ip.as_str(), record.peer_port),
        ("127.0.0.1", 40000)
    );
    assert_eq!(record.upstream_us, Some(1235));
    let json = record.to_json("s");
    assert_eq!(json["upstream_ms"], 1.235);
    assert_eq!(json["joined"], true);
    assert_eq!(json["peer_ip"], "127.0.0.1");
}

#[test]
fn the_dump_line_names_the_proxy_and_the_upstream_time() {
    let mut e = exchange(
        "127.0.0.1:40000",
        "127.0.0.1:5000",
        &[("X-Forwarded-For", "203.0.113.1")],
        1,
        5,
    );
    let mut stage = ProxyStage::new(ProxyConfig {
        join: None,
        ..ProxyConfig::default()
    });
    let mut ready = Vec::new();
    stage.push(e.clone(), &mut ready);
    e = ready.pop().unwrap();
    e.forwarding.joined = true;
    e.forwarding.upstream_ns = Some(2 * MS);
    let line = crate::dump::exchange_line(&e);
    assert!(
        line.contains(" 203.0.113.1:0 via 127.0.0.1:40000 GET /items/1 "),
        "{line}"
    );
    assert!(line.contains(" upstream=2.000ms "), "{line}");
    assert!(line.ends_with("[joined]"), "{line}");
}

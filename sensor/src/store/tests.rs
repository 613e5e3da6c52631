use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::*;
use crate::{
    exchange::{Exchange, MessageMeta, Request, Response},
    sessions::{Assignment, KeyKind, Secret},
};

const MINUTE: u64 = 60 * 1_000_000_000;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("apis-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

fn record(ip: &str, at_min: u64, method: &str, uri: &str, status: u16) -> StoredExchange {
    let exchange = Exchange {
        client: format!("{ip}:5000").parse().unwrap(),
        server: "10.0.0.1:80".parse().unwrap(),
        forwarding: Default::default(),
        request: Some(Request {
            method: method.into(),
            uri: uri.into(),
            meta: MessageMeta {
                start_ns: at_min * MINUTE,
                headers: vec![
                    ("Host".into(), "api.test".into()),
                    ("User-Agent".into(), "ua".into()),
                ],
                ..MessageMeta::default()
            },
        }),
        response: Some(Response {
            status: Some(status),
            meta: MessageMeta {
                start_ns: at_min * MINUTE + 1000,
                end_ns: at_min * MINUTE + 2000,
                ..MessageMeta::default()
            },
            ..Response::default()
        }),
    };
    StoredExchange::new(
        &exchange,
        &Secret::from_bytes([1; 32]),
        &Redaction::default(),
    )
}

fn assignment(session: u8, user: Option<&str>) -> Assignment {
    Assignment {
        session_id: id(session),
        key_kind: KeyKind::Cookie,
        key_name: "cookie sid".into(),
        user: user.map(str::to_owned),
        role: None,
        new_session: false,
    }
}

/// Three sessions: 1 (alice, two IPs), 2 (bob), 3 (anonymous, old).
fn populated(dir: &TempDir) -> Store {
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    store
        .write(&[
            (
                record("192.0.2.1", 100, "GET", "/users/1", 200),
                assignment(1, Some("alice")),
            ),
            (
                record("192.0.2.1", 101, "POST", "/orders", 201),
                assignment(1, Some("alice")),
            ),
            (
                record("192.0.2.9", 102, "GET", "/users/2?token=secret-abc", 404),
                assignment(1, Some("alice")),
            ),
            (
                record("198.51.100.5", 110, "GET", "/products", 200),
                assignment(2, Some("bob")),
            ),
            (
                record("203.0.113.7", 10, "GET", "/users/7", 500),
                assignment(3, None),
            ),
        ])
        .unwrap();
    store
}

fn ids(list: &[SessionSummary]) -> Vec<String> {
    list.iter().map(|s| s.session_id.clone()).collect()
}

#[test]
fn sessions_are_listed_newest_first_and_filtered() {
    let dir = TempDir::new("list");
    let store = populated(&dir);
    let all = store.list(&SessionFilter::default()).unwrap();
    assert_eq!(ids(&all), [id(2), id(1), id(3)]);
    let alice = &all[1];
    assert_eq!(alice.requests, 3);
    assert_eq!(alice.client_ips, ["192.0.2.1", "192.0.2.9"]);
    assert_eq!(alice.user.as_deref(), Some("alice"));
    assert_eq!(
        alice.endpoints[0].1, 2,
        "GET /users/{{id}} twice: {:?}",
        alice.endpoints
    );
    assert_eq!(alice.endpoints[0].0, "GET /users/{id}");
    let filter = |f: SessionFilter| ids(&store.list(&f).unwrap());
    assert_eq!(
        filter(SessionFilter {
            limit: 1,
            ..Default::default()
        }),
        [id(2)]
    );
    assert_eq!(
        filter(SessionFilter {
            ip: Some("192.0.2.9".into()),
            ..Default::default()
        }),
        [id(1)]
    );
    assert_eq!(
        filter(SessionFilter {
            user: Some("bob".into()),
            ..Default::default()
        }),
        [id(2)]
    );
    assert_eq!(
        filter(SessionFilter {
            endpoint: Some("/users/{id}".into()),
            ..Default::default()
        }),
        [id(1), id(3)]
    );
    assert_eq!(
        filter(SessionFilter {
            host: Some("API.test".into()),
            ..Default::default()
        })
        .len(),
        3
    );
    assert_eq!(
        filter(SessionFilter {
            method: Some("post".into()),
            ..Default::default()
        }),
        [id(1)]
    );
    assert_eq!(
        filter(SessionFilter {
            status: Some(500),
            ..Default::default()
        }),
        [id(3)]
    );
    assert_eq!(
        filter(SessionFilter {
            since_ns: Some(105 * MINUTE),
            ..Default::default()
        }),
        [id(2)]
    );
    assert_eq!(
        filter(SessionFilter {
            until_ns: Some(50 * MINUTE),
            ..Default::default()
        }),
        [id(3)]
    );
    assert_eq!(
        filter(SessionFilter {
            ip: Some("192.0.2.1".into()),
            status: Some(500),
            ..Default::default()
        }),
        Vec::<String>::new()
    );
}

#[test]
fn a_session_shows_its_exchanges_in_time_order_without_raw_secrets() {
    let dir = TempDir::new("show");
    let store = populated(&dir);
    let mut uris = Vec::new();
    store
        .exchanges(&id(1), |e| {
            uris.push(e.uri.unwrap_or_default());
            true
        })
        .unwrap();
    assert_eq!(uris.len(), 3);
    assert_eq!(uris[0], "/users/1");
    assert!(
        uris[2].starts_with("/users/2?token=h:") && !uris[2].contains("secret-abc"),
        "{}",
        uris[2]
    );
    assert!(store.session(&id(9)).unwrap().is_none());
    assert!(matches!(
        store.session("not-an-id"),
        Err(StoreError::BadId(_))
    ));
    assert_eq!(store.counts().unwrap(), (3, 5));
}

#[test]
fn pruning_removes_old_sessions_with_their_exchanges_and_index_entries() {
    let dir = TempDir::new("prune");
    let store = populated(&dir);
    // Session 3 ended at minute 10; the others after minute 100.
    let report = store.prune(50 * MINUTE, 100).unwrap();
    assert_eq!(
        report,
        PruneReport {
            sessions: 1,
            exchanges: 1,
            more: false
        }
    );
    assert_eq!(store.counts().unwrap(), (2, 4));
    assert!(
        store
            .list(&SessionFilter {
                ip: Some("203.0.113.7".into()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
    // In bounded steps: one session per call.
    let mut calls = 0;
    loop {
        calls += 1;
        if !store.prune(u64::MAX / 2, 1).unwrap().more {
            break;
        }
    }
    assert_eq!(calls, 2, "two sessions, one per call");
    assert_eq!(store.counts().unwrap(), (0, 0));
    let txn = store.read().unwrap();
    for db in [
        store.by_ip,
        store.by_host,
        store.by_endpoint,
        store.by_user,
        store.by_time,
    ] {
        assert_eq!(
            db.len(&txn).unwrap(),
            0,
            "no index entry outlives its session"
        );
    }
}

#[test]
fn readers_see_what_was_committed_and_a_missing_store_says_so() {
    let dir = TempDir::new("missing");
    assert!(matches!(
        Store::open_read_only(&dir.0),
        Err(StoreError::Missing(_))
    ));
    let message = Store::open_read_only(&dir.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("no sessions stored"), "{message}");
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    assert!(matches!(
        decode::<SessionSummary>(&[], "session"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        decode::<SessionSummary>(&[9, 1, 2], "session"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        decode::<SessionSummary>(&[FORMAT_VERSION, 0xff], "session"),
        Err(StoreError::Corrupt { .. })
    ));
    let summary = SessionSummary {
        session_id: id(4),
        requests: 3,
        ..SessionSummary::default()
    };
    assert_eq!(
        decode::<SessionSummary>(&encode(&summary).unwrap(), "session").unwrap(),
        summary
    );
}

#[test]
fn a_full_map_is_a_clear_error_and_the_store_stays_usable() {
    let dir = TempDir::new("full");
    let store = Store::open(&dir.0, 1 << 20).unwrap();
    let batch: Vec<_> = (0..5000u64)
        .map(|i| {
            (
                record(
                    "192.0.2.1",
                    i,
                    "GET",
                    &format!("/items/{i}?q={}", "x".repeat(200)),
                    200,
                ),
                assignment((i % 200) as u8, None),
            )
        })
        .collect();
    let error = store.write(&batch).unwrap_err();
    assert!(matches!(error, StoreError::MapFull), "{error}");
    // The failed batch left nothing half-written; smaller writes still work.
    assert_eq!(store.counts().unwrap(), (0, 0));
    store.write(&batch[..5]).unwrap();
    assert_eq!(store.counts().unwrap().1, 5);
}

#[test]
fn exchanges_read_back_as_written_across_batches_and_past_the_session_lists() {
    let dir = TempDir::new("roundtrip");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    let mut written = Vec::new();
    for batch in 0..3u64 {
        let mut items = Vec::new();
        for i in 0..20u64 {
            let n = batch * 20 + i;
            let mut e = record(
                &format!("192.0.2.{}", n % 7),
                100 + n,
                "GET",
                &format!("/items/{n}?page=2"),
                200,
            );
            // More agents than a session lists: the later ones are stored inline.
            e.user_agent = Some(format!("agent-{}", n % 20));
            e.status_msg = Some(if n % 5 == 0 { "Fine" } else { "OK" }.into());
            items.push((e, assignment(1, None)));
        }
        store.write(&items).unwrap();
        written.extend(items.into_iter().map(|(e, _)| e));
    }
    let mut read = Vec::new();
    store
        .exchanges(&id(1), |e| {
            read.push(e);
            true
        })
        .unwrap();
    assert_eq!(read, written);
    let summary = store.session(&id(1)).unwrap().unwrap();
    assert_eq!(summary.requests, 60);
    assert_eq!(summary.client_ips.len(), 7);
    assert_eq!(summary.user_agents.len(), 16);
}

#[test]
fn the_writer_stores_every_submitted_batch() {
    let dir = TempDir::new("writer");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    // The records are from 1970: a century of retention keeps the first sweep off them.
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let writer = StoreWriter::start(store, century, Duration::from_secs(3600));
    for batch in 0..30u64 {
        writer.submit(
            (0..100u64)
                .map(|i| {
                    let n = batch * 100 + i;
                    (
                        record("192.0.2.1", 1000 + n, "GET", "/items", 200),
                        assignment((n % 50) as u8, None),
                    )
                })
                .collect(),
        );
    }
    let counters = Arc::clone(&writer.counters);
    writer.finish();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(get(&counters.exchanges_dropped_queue_full), 0);
    assert_eq!(get(&counters.exchanges_written), 3000);
    // Batches that queue up are merged into fewer transactions, never split.
    assert!((1..=30).contains(&get(&counters.batches_written)));
    let store = Store::open_read_only(&dir.0).unwrap();
    assert_eq!(store.counts().unwrap(), (50, 3000));
}

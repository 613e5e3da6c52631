use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::*;
use crate::pipeline::StoreWriter;
use crate::{
    exchange::{Exchange, MessageMeta, Request, Response},
    record::{Assignment, KeyKind, Redaction, Secret, SessionState, StoredExchange},
    test_rng::Rng,
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
        tls: false,
        upstream: None,
        stream_id: None,
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
        signals: None,
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
fn sessions_are_found_through_an_endpoint_prefix_newest_first() {
    let dir = TempDir::new("prefix");
    let store = populated(&dir);
    // Session 4 wrote a learned template, the others first-pass ones.
    let mut learned = record("192.0.2.50", 120, "GET", "/users/alice.smith", 200);
    learned.endpoint = Some("/users/{param}".into());
    store.write(&[(learned, assignment(4, None))]).unwrap();
    let under_users = |s: &SessionSummary| s.endpoints.iter().any(|(k, _)| k.contains(" /users/"));
    let all = SessionFilter::default();
    let found = store
        .list_where(&all, Some("/users/"), under_users)
        .unwrap();
    assert_eq!(
        ids(&found),
        [id(4), id(1), id(3)],
        "each once, newest first"
    );
    let two = SessionFilter {
        limit: 2,
        ..SessionFilter::default()
    };
    let found = store
        .list_where(&two, Some("/users/"), under_users)
        .unwrap();
    assert_eq!(ids(&found), [id(4), id(1)], "the newest within the limit");
    // `keep` decides; the filter's other fields still apply.
    let found = store.list_where(&all, Some("/users/"), |_| true).unwrap();
    assert_eq!(ids(&found), [id(4), id(1), id(3)]);
    let bob = SessionFilter {
        user: Some("bob".into()),
        ..SessionFilter::default()
    };
    assert!(
        store
            .list_where(&bob, Some("/users/"), under_users)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_where(&all, Some("/nothing"), |_| true)
            .unwrap()
            .is_empty()
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

/// The daemon's writer (from the pipeline, which the store knows nothing of: tested here for the
/// store's helpers).
fn daemon(retention: Duration) -> crate::pipeline::WriterMode {
    crate::pipeline::WriterMode::Daemon {
        retention,
        prune_every: Duration::from_secs(3600),
    }
}

#[test]
fn the_writer_stores_every_submitted_batch() {
    let dir = TempDir::new("writer");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    // The records are from 1970: a century of retention keeps the first sweep off them.
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let writer = StoreWriter::start(store, daemon(century)).unwrap();
    for batch in 0..30u64 {
        writer
            .submit(
                (0..100u64)
                    .map(|i| {
                        let n = batch * 100 + i;
                        (
                            record("192.0.2.1", 1000 + n, "GET", "/items", 200),
                            assignment((n % 50) as u8, None),
                        )
                    })
                    .collect::<Vec<_>>()
                    .into(),
            )
            .unwrap();
    }
    let counters = Arc::clone(&writer.counters);
    writer.finish().unwrap();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(get(&counters.exchanges_dropped_queue_full), 0);
    assert_eq!(get(&counters.exchanges_written), 3000);
    // Batches that queue up are merged into fewer transactions, never split.
    assert!((1..=30).contains(&get(&counters.batches_written)));
    let store = Store::open_read_only(&dir.0).unwrap();
    assert_eq!(store.counts().unwrap(), (50, 3000));
}

#[test]
fn the_inventory_state_goes_through_the_writer_and_readers_see_the_newest() {
    let dir = TempDir::new("inventory");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    assert_eq!(store.inventory().unwrap(), None, "nothing written yet");
    let writer = StoreWriter::start(store, crate::pipeline::WriterMode::Import).unwrap();
    for state in [b"first".to_vec(), b"second".to_vec()] {
        let batch = crate::record::Batch {
            inventory: Some(state),
            ..Default::default()
        };
        writer.submit(batch).unwrap();
    }
    writer.finish().unwrap();
    let reader = Store::open_read_only(&dir.0).unwrap();
    assert_eq!(reader.inventory().unwrap().as_deref(), Some(&b"second"[..]));
}

/// Text of a random length up to the decoder's head bound, mostly short, now and then long,
/// with multi-byte characters so that cuts meet character boundaries.
fn random_text(rng: &mut Rng, tag: u64) -> String {
    let head_bound = crate::http::HttpConfig::default().max_head_bytes;
    let len = match rng.below(4) {
        0 => rng.below(32),
        1 => rng.below(600),
        2 => 400 + rng.below(200),
        _ => rng.below(head_bound),
    };
    let mut text = format!("{tag}-");
    while text.len() < len {
        text.push(if rng.below(16) == 0 { 'é' } else { 'a' });
    }
    text
}

#[test]
fn records_with_text_fields_of_any_length_are_each_stored() {
    let dir = TempDir::new("hostile");
    let store = Store::open(&dir.0, 4 << 30).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    let mut probes = Vec::new();
    for batch in 0..8u64 {
        let mut items = Vec::new();
        for i in 0..40u64 {
            let n = batch * 40 + i;
            let mut e = record("192.0.2.1", 100 + n, "GET", "/", 200);
            e.host = Some(random_text(&mut rng, n));
            e.uri = Some(random_text(&mut rng, n));
            e.endpoint = Some(random_text(&mut rng, n));
            e.user_agent = Some(random_text(&mut rng, n));
            e.referrer = Some(random_text(&mut rng, n));
            e.method = Some(random_text(&mut rng, n));
            e.status_msg = Some(random_text(&mut rng, n));
            e.request_content_type = Some(random_text(&mut rng, n));
            e.params = vec![(random_text(&mut rng, n), random_text(&mut rng, n))];
            let session = (rng.below(20) + 1) as u8;
            let mut a = assignment(session, None);
            a.user = Some(random_text(&mut rng, n));
            a.key_name = random_text(&mut rng, n);
            probes.push((
                e.host.clone(),
                e.endpoint.clone(),
                a.user.clone(),
                a.session_id.clone(),
            ));
            items.push((e, a));
        }
        let report = store
            .write_isolating(&items, &SessionState::default())
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(report.written, items.len());
        total += items.len() as u64;
    }
    assert_eq!(store.counts().unwrap().1, total);
    // Every session is found again through the indexes by the hosts, endpoints and user its
    // summary lists, however long they are (a summary lists a bounded number of each).
    let mut found = 0;
    for (host, endpoint, user, session) in &probes {
        let by = |filter: SessionFilter| ids(&store.list(&filter).unwrap()).contains(session);
        let summary = store.session(session).unwrap().unwrap();
        if host.as_ref().is_some_and(|h| summary.hosts.contains(h)) {
            assert!(by(SessionFilter {
                host: host.clone(),
                ..SessionFilter::default()
            }));
            found += 1;
        }
        if summary.user == *user {
            assert!(by(SessionFilter {
                user: user.clone(),
                ..SessionFilter::default()
            }));
            found += 1;
        }
        if summary.endpoints.iter().any(|(k, _)| {
            k.split_once(' ')
                .is_some_and(|(_, p)| Some(p) == endpoint.as_deref())
        }) {
            assert!(by(SessionFilter {
                endpoint: endpoint.clone(),
                ..SessionFilter::default()
            }));
            found += 1;
        }
    }
    assert!(found >= 40, "only {found} index lookups exercised");
    // Pruning finds and removes every index entry it made, long values included.
    let report = store.prune(u64::MAX, usize::MAX).unwrap();
    assert_eq!(report.exchanges, total);
    let txn = store.read().unwrap();
    for db in [store.by_ip, store.by_host, store.by_endpoint, store.by_user] {
        assert_eq!(db.len(&txn).unwrap(), 0);
    }
}

#[test]
fn a_record_that_cannot_be_stored_costs_only_itself() {
    let dir = TempDir::new("isolate");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    // Session 9's stored summary is unreadable: its records cannot be added, the others can.
    {
        let mut txn = store.env.write_txn().unwrap();
        store
            .sessions
            .put(&mut txn, &[9; 16], &[FORMAT_VERSION, 0xff, 0xff])
            .unwrap();
        txn.commit().unwrap();
    }
    let bad = format!("{:02x}", 9).repeat(16);
    let batch: Vec<_> = (0..100u64)
        .map(|i| {
            let mut a = assignment((i % 7) as u8 + 1, None);
            if matches!(i, 3 | 50 | 99) {
                a.session_id.clone_from(&bad);
            }
            (record("192.0.2.1", 1000 + i, "GET", "/items", 200), a)
        })
        .collect();
    assert!(store.write(&batch).unwrap_err().is_record_specific());

    let report = store
        .write_isolating(&batch, &SessionState::default())
        .unwrap();
    assert_eq!(report.written, 97);
    let positions: Vec<usize> = report.rejected.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, [3, 50, 99]);
    assert!(matches!(report.rejected[0].1, StoreError::Corrupt { .. }));
    let (sessions, exchanges) = {
        let txn = store.read().unwrap();
        let mut n = 0;
        for s in 1..=7u8 {
            n += store.summary(&txn, &[s; 16]).unwrap().unwrap().requests;
        }
        (store.sessions.len(&txn).unwrap(), n)
    };
    assert_eq!((sessions, exchanges), (8, 97));

    // Through the daemon's writer: counted by reason, nothing else lost.
    let dir = TempDir::new("isolate-writer");
    let fresh = Store::open(&dir.0, 1 << 30).unwrap();
    {
        let mut txn = fresh.env.write_txn().unwrap();
        fresh
            .sessions
            .put(&mut txn, &[9; 16], &[FORMAT_VERSION, 0xff, 0xff])
            .unwrap();
        txn.commit().unwrap();
    }
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let writer = StoreWriter::start(fresh, daemon(century)).unwrap();
    writer.submit(batch.into()).unwrap();
    let counters = Arc::clone(&writer.counters);
    writer.finish().unwrap();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(get(&counters.exchanges_written), 97);
    assert_eq!(get(&counters.exchanges_rejected_corrupt), 3);
    assert_eq!(get(&counters.exchanges_lost_write_error), 0);
    assert_eq!(get(&counters.write_errors), 0);
}

#[test]
fn a_key_over_the_limit_is_an_error_naming_its_database() {
    let dir = TempDir::new("keysize");
    let store = Store::open(&dir.0, 1 << 20).unwrap();
    let mut txn = store.env.write_txn().unwrap();
    put(
        store.by_ip,
        &mut txn,
        &[b'a'; LMDB_MAX_KEY],
        &(),
        "the by_ip index",
    )
    .unwrap();
    let error = put(
        store.by_endpoint,
        &mut txn,
        &[b'a'; LMDB_MAX_KEY + 1],
        &(),
        "the by_endpoint index",
    )
    .unwrap_err();
    assert!(error.is_record_specific());
    let message = error.to_string();
    assert!(
        message.contains("by_endpoint") && message.contains("512") && message.contains("511"),
        "{message}"
    );
}

#[test]
fn an_unreadable_summary_hides_no_other_session() {
    let dir = TempDir::new("unreadable");
    let store = populated(&dir);
    {
        let mut txn = store.env.write_txn().unwrap();
        store
            .sessions
            .put(&mut txn, &[2; 16], &[FORMAT_VERSION, 0xff, 0xff])
            .unwrap();
        txn.commit().unwrap();
    }
    let all = store.list(&SessionFilter::default()).unwrap();
    assert_eq!(ids(&all), [id(1), id(3)]);
    let by_ip = SessionFilter {
        ip: Some("198.51.100.5".into()),
        ..SessionFilter::default()
    };
    // Nothing readable at all: the error itself, not an empty list.
    assert!(matches!(
        store.list(&by_ip),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn an_exchange_imported_before_is_not_stored_again() {
    let dir = TempDir::new("imported");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    let batch: Vec<_> = (0..50u64)
        .map(|i| {
            let mut e = record("192.0.2.1", 100 + i, "GET", "/items", 200);
            e.exchange_id = Some([i as u8; 16]);
            (e, assignment((i % 5) as u8 + 1, None))
        })
        .collect();
    let first = store
        .write_isolating(&batch, &SessionState::default())
        .unwrap();
    assert_eq!((first.written, first.duplicates), (50, 0));
    let before = store.list(&SessionFilter::default()).unwrap();
    // The same batch again, and once more split differently: nothing changes.
    let again = store
        .write_isolating(&batch, &SessionState::default())
        .unwrap();
    assert_eq!((again.written, again.duplicates), (0, 50));
    store
        .write_isolating(&batch[..7], &SessionState::default())
        .unwrap();
    assert_eq!(store.list(&SessionFilter::default()).unwrap(), before);
    assert_eq!(store.counts().unwrap(), (5, 50));
    // Without an id (the daemon's records) nothing is recognised.
    let mut live = batch[0].clone();
    live.0.exchange_id = None;
    store.write(&[live]).unwrap();
    assert_eq!(store.counts().unwrap().1, 51);
    // Markers go with the retention: pruned along with their sessions.
    store.prune(u64::MAX, usize::MAX).unwrap();
    let txn = store.read().unwrap();
    assert_eq!(store.imported.unwrap().len(&txn).unwrap(), 0);
}

fn actor_state(last_ns: u64) -> crate::record::state::Active {
    crate::record::state::Active {
        id: id(1),
        start_ns: last_ns,
        began_ns: last_ns,
        last_ns,
        key_kind: KeyKind::Cookie,
        key_name: "cookie sid".into(),
        hand_outs: None,
    }
}

#[test]
fn the_session_state_goes_with_its_exchanges_and_loads_newest_first() {
    use crate::record::state::Link;
    let dir = TempDir::new("state");
    let store = Store::open(&dir.0, 1 << 30).unwrap();
    let state = SessionState {
        actors: (0..10u8)
            .map(|n| ([n; 32], Some(actor_state(u64::from(n) * MINUTE))))
            .collect(),
        links: vec![(
            [9; 32],
            Some(Link {
                actor: [1; 32],
                fallback_session: Some(5),
                split_from: Some(([2; 32], 4)),
                at_ns: 3 * MINUTE,
            }),
        )],
    };
    store
        .write_with_state(
            &[(record("192.0.2.1", 1, "GET", "/", 200), assignment(1, None))],
            &state,
        )
        .unwrap();
    // Updates move an entry in time; removals take it out.
    let later = SessionState {
        actors: vec![([0; 32], Some(actor_state(60 * MINUTE))), ([1; 32], None)],
        links: Vec::new(),
    };
    store.write_with_state(&[], &later).unwrap();

    let loaded = store.load_state(3, 10, 0).unwrap();
    let hashes: Vec<u8> = loaded.state.actors.iter().map(|(h, _)| h[0]).collect();
    assert_eq!(hashes, [0, 9, 8], "newest first, within the bound");
    assert_eq!(loaded.actors_cut, 6, "the rest of the 9 left");
    assert_eq!(
        loaded.state.actors[0].1.as_ref().unwrap().last_ns,
        60 * MINUTE
    );
    assert_eq!(loaded.state.links, state.links);
    // Only what is recent enough.
    let recent = store.load_state(100, 100, 7 * MINUTE).unwrap();
    assert_eq!(recent.state.actors.len(), 4, "0 (moved to 60 min), 7, 8, 9");
    assert_eq!((recent.actors_cut, recent.state.links.len()), (0, 0));

    // A corrupt entry costs only itself.
    {
        let dbs = store.state.unwrap();
        let mut txn = store.env.write_txn().unwrap();
        let mut key = vec![b'a'];
        key.extend_from_slice(&[9; 32]);
        let mut value = (9 * MINUTE).to_be_bytes().to_vec();
        value.extend_from_slice(&[FORMAT_VERSION, 0xff, 0xff, 0xff]);
        dbs.entries.put(&mut txn, &key, &value).unwrap();
        txn.commit().unwrap();
    }
    let loaded = store.load_state(100, 100, 0).unwrap();
    assert_eq!((loaded.state.actors.len(), loaded.unreadable), (8, 1));

    // Pruned with the retention.
    store.prune(8 * MINUTE + 1, 1000).unwrap();
    let left = store.load_state(100, 100, 0).unwrap();
    let hashes: Vec<u8> = left.state.actors.iter().map(|(h, _)| h[0]).collect();
    assert_eq!(
        (hashes, left.unreadable),
        (vec![0], 1),
        "0 and the corrupt 9 are newer"
    );
    assert!(left.state.links.is_empty());
}

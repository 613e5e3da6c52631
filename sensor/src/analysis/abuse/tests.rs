use super::*;
use crate::{
    exchange::{MessageMeta, Request, Response},
    record::{Redaction, Secret},
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
/// 2026-12-01, so that browser versions are judged as of then.
const T0: u64 = 1_796_083_200 * S;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";

struct Call<'a> {
    at_ns: u64,
    ip: &'a str,
    agent: Option<&'a str>,
    method: &'a str,
    uri: &'a str,
    status: u16,
    body: Option<(&'a str, &'a str)>,
    response_bytes: u64,
}

impl<'a> Call<'a> {
    fn get(at_ns: u64, uri: &'a str, status: u16) -> Self {
        Self {
            at_ns,
            ip: "192.0.2.10",
            agent: Some(CHROME),
            method: "GET",
            uri,
            status,
            body: None,
            response_bytes: 100,
        }
    }
}

fn exchange(call: &Call<'_>) -> Exchange {
    let mut headers = Vec::new();
    if let Some(agent) = call.agent {
        headers.push(("User-Agent".to_owned(), agent.to_owned()));
    }
    let mut body = Vec::new();
    if let Some((content_type, text)) = call.body {
        headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        body = text.as_bytes().to_vec();
    }
    Exchange {
        client: format!("{}:40000", call.ip).parse().unwrap(),
        server: "192.0.2.1:80".parse().unwrap(),
        request: Some(Request {
            method: call.method.into(),
            uri: call.uri.into(),
            meta: MessageMeta {
                start_ns: call.at_ns,
                end_ns: call.at_ns,
                version: "1.1",
                headers,
                body_len: body.len() as u64,
                body,
                ..MessageMeta::default()
            },
        }),
        response: Some(Response {
            status: Some(call.status),
            reason: String::new(),
            interim: Vec::new(),
            meta: MessageMeta {
                start_ns: call.at_ns + MS,
                end_ns: call.at_ns + 2 * MS,
                version: "1.1",
                body_len: call.response_bytes,
                ..MessageMeta::default()
            },
        }),
        forwarding: Default::default(),
        tls: false,
        upstream: None,
        stream_id: None,
    }
}

/// Runs `calls` as one session; its last signals.
fn session(
    tracker: &mut AbuseTracker,
    id: &str,
    fallback: bool,
    calls: &[Call<'_>],
) -> SessionSignals {
    let secret = Secret::from_bytes([7; 32]);
    let mut last = SessionSignals::default();
    for call in calls {
        let exchange = exchange(call);
        let record = StoredExchange::new(&exchange, &secret, &Redaction::default());
        let context = Context {
            session_id: id,
            fallback,
            attacks: 0,
        };
        tracker.observe(&exchange, &record, context, Some(0));
        // Handed on after every exchange: the newest reading is what the test looks at.
        if let Some((_, signals)) = tracker.take_updates().pop() {
            last = signals;
        }
    }
    last
}

fn score(signals: &SessionSignals, name: SignalName) -> u8 {
    signals
        .signals
        .iter()
        .find(|s| s.name == name)
        .map_or(0, |s| s.score)
}

fn reason(signals: &SessionSignals, name: SignalName) -> String {
    signals
        .signals
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.reason.clone())
        .unwrap_or_default()
}

/// A person: a login, then varied requests with pauses of 0.3-1.5 s (a fixed pseudo-random
/// sequence).
fn person(start: u64) -> Vec<Call<'static>> {
    const ROUTES: &[&str] = &[
        "/api/me",
        "/api/categories",
        "/api/products",
        "/api/products?page=2",
        "/api/products/12",
        "/api/products/12/reviews",
        "/api/search?q=lamp",
        "/api/products/3",
        "/api/cart",
        "/api/orders",
        "/api/orders/1003",
        "/api/notifications",
        "/api/settings",
    ];
    let mut calls = vec![Call {
        method: "POST",
        body: Some(("application/json", r#"{"user":"alice","password":"x"}"#)),
        ..Call::get(start, "/api/login", 200)
    }];
    let mut at = start;
    for (i, route) in ROUTES.iter().cycle().take(40).enumerate() {
        at += 300 * MS + (i as u64 * 7919 % 1200) * MS;
        calls.push(Call::get(at, route, 200));
    }
    calls
}

#[test]
fn ramps_score_at_their_thresholds() {
    let ramp = Ramp::new(10.0, 30.0, 100.0);
    assert_eq!(ramp.score(0.0), 0);
    assert_eq!(ramp.score(10.0), 0);
    assert_eq!(ramp.score(20.0), 25);
    assert_eq!(ramp.score(30.0), 50);
    assert_eq!(ramp.score(65.0), 75);
    assert_eq!(ramp.score(100.0), 100);
    assert_eq!(ramp.score(1e9), 100);
    assert_eq!(ramp.score(f64::NAN), 0);
}

#[test]
fn risk_combines_like_independent_evidence() {
    let config = AbuseConfig::default();
    assert_eq!(risk(&config, &[]), 0);
    assert_eq!(risk(&config, &[(SignalName::Attacks, 100)]), 100);
    assert_eq!(risk(&config, &[(SignalName::Enumeration, 100)]), 80);
    // Two signals of 50 add up to more than either and less than their sum.
    let both = risk(
        &config,
        &[(SignalName::WideScope, 50), (SignalName::Errors, 50)],
    );
    assert!(both > 35 && both < 65, "{both}");
    let weak = risk(&config, &[(SignalName::BadUserAgent, 50)]);
    assert_eq!(weak, 20);
}

#[test]
fn people_are_not_flagged() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let signals = session(&mut tracker, id, false, &person(T0 + i as u64 * 7 * S));
        assert!(signals.risk < 20, "{id}: {signals:?}");
        assert!(signals.signals.is_empty(), "{id}: {signals:?}");
    }
}

#[test]
fn a_scraper_walking_ids_is_enumeration() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let uris: Vec<String> = (1..=120).map(|i| format!("/api/users/{i}")).collect();
    let calls: Vec<Call<'_>> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| Call::get(T0 + i as u64 * 3 * MS, uri, if i < 50 { 200 } else { 404 }))
        .collect();
    let signals = session(&mut tracker, "scraper", true, &calls);
    assert_eq!(score(&signals, SignalName::Enumeration), 100, "{signals:?}");
    assert!(
        reason(&signals, SignalName::Enumeration)
            .starts_with("120 distinct values of {id} on GET /api/users/{id} in"),
        "{signals:?}"
    );
    assert!(signals.risk >= 50);
    // Below the low threshold, nothing.
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let signals = session(&mut tracker, "few", true, &calls[..10]);
    assert_eq!(score(&signals, SignalName::Enumeration), 0);
}

#[test]
fn enumeration_counts_id_query_parameters_within_the_window() {
    let config = AbuseConfig::default();
    let mut tracker = AbuseTracker::new(config.clone());
    let uris: Vec<String> = (0..40)
        .map(|i| format!("/api/orders?order_id={i}"))
        .collect();
    // One every 10 s: 40 values over 400 s, but only 12-13 within any 2-minute epoch.
    let slow: Vec<Call<'_>> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| Call::get(T0 + i as u64 * 10 * S, uri, 200))
        .collect();
    let signals = session(&mut tracker, "slow", true, &slow);
    let found = score(&signals, SignalName::Enumeration);
    assert!(found < config.report_score, "{signals:?}");
    let fast: Vec<Call<'_>> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| Call::get(T0 + i as u64 * S, uri, 200))
        .collect();
    let signals = session(&mut tracker, "fast", true, &fast);
    assert!(
        score(&signals, SignalName::Enumeration) >= 50,
        "{signals:?}"
    );
    assert!(reason(&signals, SignalName::Enumeration).contains("?order_id"));
}

#[test]
fn credential_stuffing_is_auth_failures_with_user_names() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let bodies: Vec<String> = (0..60)
        .map(|i| format!(r#"{{"user":"user{i}","password":"123456"}}"#))
        .collect();
    let calls: Vec<Call<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| Call {
            method: "POST",
            agent: Some("python-requests/2.32.3"),
            body: Some(("application/json", body)),
            ..Call::get(T0 + i as u64 * 30 * MS, "/api/login", 401)
        })
        .collect();
    let signals = session(&mut tracker, "stuffer", true, &calls);
    assert_eq!(
        score(&signals, SignalName::AuthFailures),
        100,
        "{signals:?}"
    );
    assert_eq!(
        reason(&signals, SignalName::AuthFailures),
        "60 failed logins on POST /api/login with 60 user names; 60 responses 401/403"
    );
    assert_eq!(score(&signals, SignalName::BadUserAgent), 30);
    assert!(signals.risk >= 90);
    // Four failures are a person who forgot a password.
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let signals = session(&mut tracker, "forgetful", true, &calls[..4]);
    assert_eq!(score(&signals, SignalName::AuthFailures), 0, "{signals:?}");
}

#[test]
fn a_crawler_is_wide_scope_and_errors() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let uris: Vec<String> = (0..40).map(|i| format!("/api/area{i}")).collect();
    let calls: Vec<Call<'_>> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| Call {
            agent: Some("Go-http-client/1.1"),
            ..Call::get(T0 + i as u64 * 50 * MS, uri, if i < 10 { 200 } else { 404 })
        })
        .collect();
    let signals = session(&mut tracker, "crawler", true, &calls);
    assert!(score(&signals, SignalName::WideScope) >= 50, "{signals:?}");
    assert_eq!(
        reason(&signals, SignalName::WideScope),
        "40 distinct endpoints in 2 s"
    );
    assert!(score(&signals, SignalName::Errors) >= 50, "{signals:?}");
    assert!(
        reason(&signals, SignalName::Errors).starts_with("30 of 40 responses 4xx (75 %), 30 × 404")
    );
    assert!(signals.risk >= 50, "{signals:?}");
}

#[test]
fn a_bot_with_a_perfect_rhythm_is_request_interval() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let calls: Vec<Call<'_>> = (0..30)
        .map(|i| Call::get(T0 + i * 2 * S, "/api/price", 200))
        .collect();
    let signals = session(&mut tracker, "bot", true, &calls);
    assert_eq!(
        score(&signals, SignalName::RequestInterval),
        100,
        "{signals:?}"
    );
    assert_eq!(
        reason(&signals, SignalName::RequestInterval),
        "30 requests 2.000 s apart ± 0.000 s"
    );
    // Fewer than the minimum: not judged.
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let signals = session(&mut tracker, "short", true, &calls[..19]);
    assert_eq!(score(&signals, SignalName::RequestInterval), 0);
}

#[test]
fn a_flood_is_request_rate() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let calls: Vec<Call<'_>> = (0..600)
        .map(|i| Call::get(T0 + i * 50 * MS, "/api/quote", 200))
        .collect();
    let signals = session(&mut tracker, "flood", true, &calls);
    // 600 requests in 30 s: all of them within one minute.
    assert_eq!(
        reason(&signals, SignalName::RequestRate),
        "600 requests in 60 s"
    );
    assert_eq!(score(&signals, SignalName::RequestRate), 75);
}

#[test]
fn one_token_from_many_addresses_is_ip_rotation() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let ips: Vec<String> = (1..=8).map(|i| format!("198.51.100.{i}")).collect();
    let calls: Vec<Call<'_>> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Call {
            ip,
            ..Call::get(T0 + i as u64 * S, "/api/me", 200)
        })
        .collect();
    let signals = session(&mut tracker, "token", false, &calls);
    assert!(score(&signals, SignalName::IpRotation) >= 50, "{signals:?}");
    assert_eq!(
        reason(&signals, SignalName::IpRotation),
        "8 client addresses in one session"
    );
}

#[test]
fn one_client_opening_many_sessions_is_session_rotation() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let mut last = SessionSignals::default();
    for i in 0..12 {
        let id = format!("churn{i}");
        last = session(
            &mut tracker,
            &id,
            false,
            &[Call::get(T0 + i * S, "/api/me", 200)],
        );
    }
    assert!(score(&last, SignalName::SessionRotation) >= 50, "{last:?}");
    assert!(reason(&last, SignalName::SessionRotation).starts_with("12 sessions from one address"));
}

#[test]
fn taking_far_more_than_usual_is_excessive_consumption() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    // Others get 10 KiB from /api/report.
    for i in 0..50 {
        session(
            &mut tracker,
            &format!("other{i}"),
            false,
            &[Call {
                response_bytes: 10 << 10,
                ip: "203.0.113.5",
                ..Call::get(T0 + i * S, "/api/report", 200)
            }],
        );
    }
    let calls: Vec<Call<'_>> = (0..20)
        .map(|i| Call {
            response_bytes: 5 << 20,
            ..Call::get(T0 + 100 * S + i * S, "/api/report", 200)
        })
        .collect();
    let signals = session(&mut tracker, "hog", false, &calls);
    assert!(
        score(&signals, SignalName::ExcessiveConsumption) >= 50,
        "{signals:?}"
    );
    assert!(
        reason(&signals, SignalName::ExcessiveConsumption).starts_with("100.0 MiB in responses")
    );
}

#[test]
fn session_state_is_bounded_and_evictions_counted() {
    let mut tracker = AbuseTracker::new(AbuseConfig {
        max_sessions: 3,
        ..AbuseConfig::default()
    });
    for i in 0..10 {
        session(
            &mut tracker,
            &format!("s{i}"),
            true,
            &[Call::get(T0 + i * S, "/", 200)],
        );
    }
    assert_eq!(tracker.sessions.len(), 3);
    assert_eq!(tracker.counters.sessions_tracked, 10);
    assert_eq!(tracker.counters.sessions_evicted, 7);
}

#[test]
fn unchanged_signals_are_not_handed_on_again() {
    let mut tracker = AbuseTracker::new(AbuseConfig::default());
    let secret = Secret::from_bytes([7; 32]);
    let call = Call::get(T0, "/api/me", 200);
    let exchange = exchange(&call);
    let record = StoredExchange::new(&exchange, &secret, &Redaction::default());
    let context = Context {
        session_id: "s",
        fallback: true,
        attacks: 0,
    };
    tracker.observe(&exchange, &record, context, Some(0));
    assert_eq!(tracker.take_updates().len(), 1);
    tracker.observe(&exchange, &record, context, Some(0));
    assert!(tracker.take_updates().is_empty());
}

/// Handed on once for many exchanges, the signals say what handing on each reading would
/// have (each signal at its strongest, the newest of equal ones): the store keeps the same.
#[test]
fn signals_handed_on_once_per_batch_merge_like_every_reading() {
    let calls: Vec<Call<'_>> = (0..400u64)
        .map(|i| Call {
            agent: Some("python-requests/2.31"),
            // A burst, then a slow tail: the rate's score rises, then its reading falls.
            ..Call::get(
                T0 + if i < 300 {
                    i * 20 * MS
                } else {
                    6_000 * MS + (i - 300) * 2_000 * MS
                },
                "/api/items",
                if i % 7 == 0 { 404 } else { 200 },
            )
        })
        .collect();
    let secret = Secret::from_bytes([7; 32]);
    let run = |every: usize| {
        let mut tracker = AbuseTracker::new(AbuseConfig::default());
        let mut stored = SessionSignals::default();
        for (i, call) in calls.iter().enumerate() {
            let exchange = exchange(call);
            let record = StoredExchange::new(&exchange, &secret, &Redaction::default());
            let context = Context {
                session_id: "s",
                fallback: true,
                attacks: 0,
            };
            tracker.observe(&exchange, &record, context, Some(i % every));
            if (i + 1) % every == 0 || i + 1 == calls.len() {
                for (at, signals) in tracker.take_updates() {
                    assert_eq!(at, i % every, "the session's newest exchange in the batch");
                    stored.merge(&signals);
                }
            }
        }
        stored
    };
    let each = run(1);
    assert!(each.risk > 0 && !each.signals.is_empty(), "{each:?}");
    assert_eq!(run(64), each);
    assert_eq!(run(1000), each);
}

#[test]
fn the_section_is_read_and_checked() {
    let text = r#"
[abuse]
report_score = 30
enumeration = { low = 5, flag = 20, high = 60 }
enumeration_window = "5m"
[abuse.weights]
attacks = 0.9
"#;
    let config = crate::config::Config::parse(text, std::path::Path::new("t.toml")).unwrap();
    assert_eq!(config.abuse.report_score, 30);
    assert_eq!(config.abuse.enumeration, Ramp::new(5.0, 20.0, 60.0));
    assert_eq!(
        config.abuse.enumeration_window,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(config.abuse.weight(SignalName::Attacks), 0.9);
    let bad = "[abuse]\nerrors = { low = 50, flag = 40, high = 90 }\n";
    let err = crate::config::Config::parse(bad, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml:2:") && err.contains("low < flag < high"),
        "{err}"
    );
    let unknown = "[abuse.weights]\nhunch = 0.5\n";
    assert!(crate::config::Config::parse(unknown, std::path::Path::new("t.toml")).is_err());
}

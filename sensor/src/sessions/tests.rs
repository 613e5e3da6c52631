use std::{collections::HashSet, os::unix::fs::PermissionsExt as _};

use base64::Engine as _;

use super::*;
use crate::exchange::{MessageMeta, Request, Response};

const MINUTE: u64 = 60 * 1_000_000_000;

fn jwt(claims: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
}

/// An exchange from `ip` at minute `at`, with request headers and optional response parts.
fn exchange(ip: &str, at: u64, headers: &[(&str, &str)]) -> Exchange {
    Exchange {
        client: format!("{ip}:40000").parse().unwrap(),
        server: "10.0.0.1:80".parse().unwrap(),
        forwarding: Default::default(),
        request: Some(Request {
            method: "GET".into(),
            uri: "/api/items".into(),
            meta: MessageMeta {
                start_ns: at * MINUTE,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                ..MessageMeta::default()
            },
        }),
        response: Some(Response {
            status: Some(200),
            ..Response::default()
        }),
    }
}

fn with_response(mut exchange: Exchange, headers: &[(&str, &str)], body: &str) -> Exchange {
    let response = exchange.response.as_mut().unwrap();
    response.meta.headers = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    response.meta.body = body.as_bytes().to_vec();
    exchange
}

fn sessionizer(config: SessionConfig) -> Sessionizer {
    Sessionizer::new(config, Secret::from_bytes([7; 32]))
}

fn config_with(text: &str) -> SessionConfig {
    SessionConfig::from(&Config::parse(text, Path::new("t.toml")).unwrap())
}

#[test]
fn five_clients_on_one_ip_are_told_apart_by_their_keys() {
    let mut s = sessionizer(SessionConfig::default());
    let token = jwt(r#"{"sub":"alice"}"#);
    let bearer_jwt = format!("Bearer {token}");
    let clients: Vec<Vec<(&str, &str)>> = vec![
        vec![("Cookie", "PHPSESSID=abc"), ("User-Agent", "same")],
        vec![("Authorization", &bearer_jwt), ("User-Agent", "same")],
        vec![
            ("Authorization", "Bearer opaque-xyz"),
            ("User-Agent", "same"),
        ],
        vec![("X-API-Key", "key-123"), ("User-Agent", "same")],
        vec![("User-Agent", "different-browser")],
    ];
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    for round in 0..3 {
        for headers in &clients {
            let assignment = s.assign(&exchange("192.0.2.7", round, headers));
            if round == 0 {
                ids.push(assignment.session_id);
                kinds.push(assignment.key_kind);
            } else {
                assert!(
                    ids.contains(&assignment.session_id),
                    "round {round} stays in its session"
                );
            }
        }
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5, "{ids:?}");
    assert_eq!(
        kinds,
        [
            KeyKind::Cookie,
            KeyKind::Jwt,
            KeyKind::Bearer,
            KeyKind::ApiKey,
            KeyKind::IpUserAgent
        ]
    );
    assert_eq!(s.counters.sessions_started, 5);
}

#[test]
fn precedence_custom_then_cookie_then_authorization_then_api_key_then_fallback() {
    let mut s = sessionizer(config_with(
        "[sessions]\nkeys = [\"request.header.X-User\"]\n",
    ));
    let all = [
        ("X-User", "u1"),
        ("Cookie", "sid=c1"),
        ("Authorization", "Bearer t1"),
        ("X-API-Key", "k1"),
        ("User-Agent", "ua"),
    ];
    for (drop, kind) in [
        (0, KeyKind::Custom),
        (1, KeyKind::Cookie),
        (2, KeyKind::Bearer),
        (3, KeyKind::ApiKey),
        (4, KeyKind::IpUserAgent),
    ] {
        let headers = &all[drop..];
        assert_eq!(
            s.assign(&exchange("192.0.2.1", 0, headers)).key_kind,
            kind,
            "keys {headers:?}"
        );
    }
    assert_eq!(
        s.assign(&exchange("192.0.2.1", 0, &[])).key_kind,
        KeyKind::Ip
    );
}

#[test]
fn the_same_user_with_another_key_value_or_ip_is_another_session() {
    let mut s = sessionizer(SessionConfig::default());
    let a = s
        .assign(&exchange("192.0.2.1", 0, &[("Cookie", "sid=one")]))
        .session_id;
    let b = s
        .assign(&exchange("192.0.2.2", 1, &[("Cookie", "sid=one")]))
        .session_id;
    let c = s
        .assign(&exchange("192.0.2.1", 2, &[("Cookie", "sid=two")]))
        .session_id;
    assert_eq!(a, b, "a cookie follows the user across IPs");
    assert_ne!(a, c);
}

#[test]
fn a_login_response_links_the_authenticated_requests_to_the_session_before_it() {
    let mut s = sessionizer(SessionConfig::default());
    let browser = [("User-Agent", "Firefox")];
    let before = s.assign(&exchange("192.0.2.9", 0, &browser)).session_id;
    let token = jwt(r#"{"sub":"bob"}"#);
    let login = with_response(
        exchange("192.0.2.9", 1, &browser),
        &[("Set-Cookie", "JSESSIONID=j-77; Path=/; HttpOnly")],
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(s.assign(&login).session_id, before);
    let bearer = format!("Bearer {token}");
    let with_token = s.assign(&exchange("192.0.2.9", 2, &[("Authorization", &bearer)]));
    assert_eq!(
        with_token.session_id, before,
        "the token handed out at login"
    );
    let with_cookie = s.assign(&exchange("192.0.2.9", 3, &[("Cookie", "JSESSIONID=j-77")]));
    assert_eq!(with_cookie.session_id, before, "the cookie set at login");
    assert_eq!(s.counters.links_used, 2);
    // Someone else with their own token is not pulled in.
    let other = format!("Bearer {}", jwt(r#"{"sub":"eve"}"#));
    assert_ne!(
        s.assign(&exchange("192.0.2.9", 4, &[("Authorization", &other)]))
            .session_id,
        before
    );
}

#[test]
fn configured_response_keys_link_too() {
    let mut s = sessionizer(config_with(
        "[sessions]\nkeys = [\"request.header.X-Session\", \"response.header.X-New-Session\"]\n",
    ));
    let first = s.assign(&with_response(
        exchange("192.0.2.3", 0, &[("User-Agent", "app")]),
        &[("X-New-Session", "n-1")],
        "",
    ));
    let next = s.assign(&exchange("192.0.2.3", 1, &[("X-Session", "n-1")]));
    assert_eq!(next.session_id, first.session_id);
}

#[test]
fn inactivity_and_day_parts_start_new_sessions() {
    let mut s = sessionizer(SessionConfig::default());
    let cookie = [("Cookie", "sid=long")];
    let mut ids = vec![s.assign(&exchange("192.0.2.4", 0, &cookie)).session_id];
    ids.push(s.assign(&exchange("192.0.2.4", 29, &cookie)).session_id);
    ids.push(
        s.assign(&exchange("192.0.2.4", 29 + 31, &cookie))
            .session_id,
    );
    assert_eq!(ids[0], ids[1], "29 minutes apart: the same session");
    assert_ne!(ids[1], ids[2], "31 minutes of silence: a new one");
    assert_eq!(s.counters.split_inactivity, 1);
    // Active every 20 minutes for 25 hours: cut once, at a day.
    let mut s = sessionizer(SessionConfig::default());
    let parts: HashSet<String> = (0..=75)
        .map(|i| s.assign(&exchange("192.0.2.5", i * 20, &cookie)).session_id)
        .collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(s.counters.split_day, 1);
}

#[test]
fn ids_are_keyed_and_outputs_hold_no_raw_values() {
    let make = |key: u8| Sessionizer::new(SessionConfig::default(), Secret::from_bytes([key; 32]));
    let e = exchange(
        "192.0.2.6",
        0,
        &[("Authorization", "Bearer super-secret-token")],
    );
    let (a, b, c) = (make(1).assign(&e), make(1).assign(&e), make(2).assign(&e));
    assert_eq!(
        a.session_id, b.session_id,
        "same secret, same id: shareable across a fleet"
    );
    assert_ne!(a.session_id, c.session_id, "another secret, another id");
    assert_eq!(a.session_id.len(), 32);
    let text = format!("{a:?}");
    assert!(!text.contains("super-secret-token"), "{text}");
}

#[test]
fn typed_parameters_give_user_and_role_hashed_when_asked() {
    let mut s = sessionizer(config_with(
        "[[parameters]]\nname = \"user\"\npath = \"request.header.Authorization.jwt.sub\"\ntype = \"user\"\n\
         [[parameters]]\nname = \"role\"\npath = \"request.header.Authorization.jwt.role\"\ntype = \"role\"\nhashed = true\n",
    ));
    let bearer = format!("Bearer {}", jwt(r#"{"sub":"carol","role":"admin"}"#));
    let a = s.assign(&exchange("192.0.2.8", 0, &[("Authorization", &bearer)]));
    assert_eq!(a.user.as_deref(), Some("carol"));
    let role = a.role.unwrap();
    assert!(
        role.starts_with("h:") && role.len() == 34 && !role.contains("admin"),
        "{role}"
    );
}

#[test]
fn without_a_user_parameter_the_jwt_subject_or_basic_user_is_the_user() {
    let mut s = sessionizer(SessionConfig::default());
    let bearer = format!("Bearer {}", jwt(r#"{"sub":"dave"}"#));
    assert_eq!(
        s.assign(&exchange("192.0.2.11", 0, &[("Authorization", &bearer)]))
            .user
            .as_deref(),
        Some("dave")
    );
    let basic = s.assign(&exchange(
        "192.0.2.11",
        0,
        &[("Authorization", "Basic ZXZlOnB3")],
    ));
    assert_eq!(basic.user.as_deref(), Some("eve"));
    assert_eq!(
        s.assign(&exchange(
            "192.0.2.11",
            0,
            &[("Authorization", "Bearer opaque")]
        ))
        .user,
        None
    );
}

#[test]
fn active_sessions_are_bounded() {
    let mut s = sessionizer(SessionConfig {
        max_active: 3,
        ..SessionConfig::default()
    });
    for i in 0..10 {
        s.assign(&exchange(
            "192.0.2.10",
            0,
            &[("X-API-Key", &format!("k{i}"))],
        ));
    }
    assert_eq!(s.active.len(), 3);
    assert_eq!(s.counters.evicted, 7);
}

#[test]
fn the_secret_is_created_once_private_and_reused() {
    let dir = std::env::temp_dir().join(format!("apis-secret-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let first = Secret::load_or_create(&dir).unwrap();
    let mode = fs::metadata(dir.join(Secret::FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Secret::load_or_create(&dir).unwrap();
    assert_eq!(first.0, again.0);
    fs::write(dir.join(Secret::FILE), b"short").unwrap();
    assert!(matches!(
        Secret::load_or_create(&dir),
        Err(SessionError::BadSecret(_))
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn handed_out_json_values_link_however_their_key_is_spelled() {
    // The scan that spares parsing bodies without such keys must still see escaped ones.
    for body in [
        r#"{"access_token":"tok-a"}"#,
        r#"{"tok\u0065n":"tok-a"}"#,
        r#"{"sessionId":"tok-a"}"#,
    ] {
        let mut s = sessionizer(SessionConfig::default());
        let first = s.assign(&with_response(
            exchange("192.0.2.4", 0, &[("User-Agent", "app")]),
            &[],
            body,
        ));
        let next = s.assign(&exchange("192.0.2.4", 1, &[("X-Auth-Token", "tok-a")]));
        assert_eq!(next.session_id, first.session_id, "{body}");
        assert_eq!(s.counters.links_registered, 1, "{body}");
    }
    let mut s = sessionizer(SessionConfig::default());
    s.assign(&with_response(
        exchange("192.0.2.4", 0, &[]),
        &[],
        r#"{"id":7,"name":"widget"}"#,
    ));
    assert_eq!(s.counters.links_registered, 0);
}

#[test]
fn cookie_key_names_follow_the_cookie_list() {
    for (name, key_name) in SESSION_COOKIES.iter().zip(COOKIE_KEY_NAMES) {
        assert_eq!(key_name, format!("cookie {name}"));
    }
}

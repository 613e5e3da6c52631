use std::{collections::HashSet, path::Path};

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
        tls: false,
        upstream: None,
        stream_id: None,
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

/// A browser behind a shared address: the office's one IP and User-Agent.
const OFFICE: &str = "198.51.100.20";
const OFFICE_UA: [(&str, &str); 1] = [("User-Agent", "Chrome/142")];

/// A login from the office whose response sets `sid` and returns `token`.
fn office_login(at: u64, sid: &str, token: &str) -> Exchange {
    with_response(
        exchange(OFFICE, at, &OFFICE_UA),
        &[("Set-Cookie", &format!("sid={sid}; HttpOnly"))],
        &format!(r#"{{"token":"{token}"}}"#),
    )
}

fn office_request(at: u64, header: (&str, &str)) -> Exchange {
    exchange(OFFICE, at, &[OFFICE_UA[0], header])
}

#[test]
fn six_users_behind_one_address_and_browser_get_six_sessions_when_they_log_in() {
    let mut s = sessionizer(SessionConfig::default());
    let users: Vec<(String, String)> = (0..6)
        .map(|i| (format!("sid-{i}"), format!("tok-{i}")))
        .collect();
    let mut anonymous = HashSet::new();
    for _ in 0..2 {
        for _ in &users {
            anonymous.insert(s.assign(&exchange(OFFICE, 0, &OFFICE_UA)).session_id);
        }
    }
    assert_eq!(
        anonymous.len(),
        1,
        "anonymous requests cannot be told apart"
    );
    let logins: Vec<String> = users
        .iter()
        .map(|(sid, token)| s.assign(&office_login(1, sid, token)).session_id)
        .collect();
    let mut sessions = HashSet::new();
    for (i, (sid, token)) in users.iter().enumerate() {
        let cookie = format!("sid={sid}");
        let bearer = format!("Bearer {token}");
        for at in 2..7 {
            let with_cookie = s.assign(&office_request(at, ("Cookie", &cookie)));
            let with_token = s.assign(&office_request(at, ("Authorization", &bearer)));
            assert_eq!(
                with_cookie.session_id, logins[i],
                "user {i}: cookie with its login"
            );
            assert_eq!(
                with_token.session_id, logins[i],
                "user {i}: token with its login"
            );
        }
        sessions.insert(logins[i].clone());
    }
    assert_eq!(sessions.len(), 6, "{logins:?}");
    // The first login continues the anonymous session (it cannot know of the others yet); the
    // later ones are sessions of their own, named by the cookie they handed out.
    assert!(anonymous.contains(&logins[0]));
    let own = s.assign(&office_request(8, ("Cookie", "sid=sid-3")));
    assert_eq!(
        (own.key_kind, own.key_name.as_str()),
        (KeyKind::Cookie, "cookie sid")
    );
    assert_eq!(s.counters.links_ambiguous, 5);
    assert_eq!(s.counters.links_expired, 0);
}

#[test]
fn a_lone_users_requests_before_login_stay_in_the_session_its_cookie_continues() {
    let mut s = sessionizer(SessionConfig::default());
    let before = s.assign(&exchange(OFFICE, 0, &OFFICE_UA)).session_id;
    assert_eq!(
        s.assign(&office_login(1, "solo", "tok-solo")).session_id,
        before
    );
    for header in [("Cookie", "sid=solo"), ("Authorization", "Bearer tok-solo")] {
        assert_eq!(s.assign(&office_request(2, header)).session_id, before);
    }
    // Its own anonymous requests (an asset fetched without the cookie) stay there too.
    assert_eq!(
        s.assign(&exchange(OFFICE, 3, &OFFICE_UA)).session_id,
        before
    );
    assert_eq!(s.counters.links_ambiguous, 0);
}

#[test]
fn a_second_credential_after_the_first_expired_is_the_next_users_and_not_ambiguous() {
    let mut s = sessionizer(SessionConfig::default());
    let first = s.assign(&office_login(0, "one", "tok-one")).session_id;
    assert_eq!(
        s.assign(&office_request(1, ("Cookie", "sid=one")))
            .session_id,
        first
    );
    // 40 minutes of silence: the fallback's next session may be someone else's.
    let before = s.assign(&exchange(OFFICE, 41, &OFFICE_UA)).session_id;
    assert_ne!(before, first);
    assert_eq!(
        s.assign(&office_login(42, "two", "tok-two")).session_id,
        before
    );
    assert_eq!(
        s.assign(&office_request(43, ("Cookie", "sid=two")))
            .session_id,
        before
    );
    assert_eq!(
        s.counters.links_ambiguous, 0,
        "one user per fallback session"
    );
    // The first user comes back: not into the second user's session.
    let back = s.assign(&office_request(44, ("Cookie", "sid=one")));
    assert_ne!(back.session_id, before);
    assert_ne!(back.session_id, first, "after 40 minutes: a new session");
    assert_eq!(back.key_kind, KeyKind::Cookie);
    assert_eq!(
        s.assign(&office_request(45, ("Cookie", "sid=one")))
            .session_id,
        back.session_id
    );
    assert_eq!(s.counters.links_expired, 1);
}

#[test]
fn the_same_credential_handed_out_twice_is_one_session() {
    let mut s = sessionizer(SessionConfig::default());
    let a = s.assign(&office_login(0, "a", "tok-a")).session_id;
    assert_eq!(s.assign(&office_login(1, "a", "tok-a")).session_id, a);
    assert_eq!(s.counters.links_ambiguous, 0);
    let b = s.assign(&office_login(2, "b", "tok-b")).session_id;
    assert_ne!(b, a);
    assert_eq!(
        s.assign(&office_login(3, "b", "tok-b")).session_id,
        b,
        "b's again"
    );
    assert_eq!(
        s.assign(&office_login(4, "a", "tok-a")).session_id,
        a,
        "a's again"
    );
    assert_eq!(s.counters.links_ambiguous, 1);
    // A third, new credential: its own, since the fallback session is known to be shared.
    let c = s.assign(&office_login(5, "c", "tok-c")).session_id;
    assert!(c != a && c != b);
    assert_eq!(s.counters.links_ambiguous, 2);
    assert_eq!(s.counters.sessions_started, 3);
}

#[test]
fn a_json_token_and_a_cookie_from_one_login_are_one_session() {
    let mut s = sessionizer(SessionConfig::default());
    s.assign(&office_login(0, "first", "tok-first"));
    let jwt_token = jwt(r#"{"sub":"zoe"}"#);
    let login = s.assign(&office_login(1, "zoe-sid", &jwt_token)).session_id;
    let bearer = format!("Bearer {jwt_token}");
    let with_token = s.assign(&office_request(2, ("Authorization", &bearer)));
    let with_cookie = s.assign(&office_request(3, ("Cookie", "sid=zoe-sid")));
    assert_eq!(with_token.session_id, login);
    assert_eq!(with_cookie.session_id, login);
    assert_eq!(with_token.user.as_deref(), Some("zoe"));
    assert_eq!(s.counters.links_ambiguous, 1, "one hand-out, counted once");
    // A JSON token alone, as the first hand-out's second value of that key, is split off too.
    let token_only = with_response(
        exchange(OFFICE, 4, &OFFICE_UA),
        &[],
        r#"{"access_token":"at-9"}"#,
    );
    let own = s.assign(&token_only);
    assert!(
        own.session_id != login && own.key_kind == KeyKind::Bearer,
        "{own:?}"
    );
    let later = s.assign(&office_request(5, ("Authorization", "Bearer at-9")));
    assert_eq!(later.session_id, own.session_id);
}

#[test]
fn a_cookie_refreshed_by_its_user_keeps_the_session() {
    let mut s = sessionizer(SessionConfig::default());
    let one = s.assign(&office_login(0, "one", "tok-one")).session_id;
    let two = s.assign(&office_login(1, "two", "tok-two")).session_id;
    assert_ne!(one, two);
    // Each user's next request carries its cookie, and the response replaces it.
    for (old, new, session) in [("one", "one-b", &one), ("two", "two-b", &two)] {
        let refresh = with_response(
            office_request(2, ("Cookie", &format!("sid={old}"))),
            &[("Set-Cookie", &format!("sid={new}; HttpOnly"))],
            "",
        );
        assert_eq!(&s.assign(&refresh).session_id, session);
        let next = s.assign(&office_request(3, ("Cookie", &format!("sid={new}"))));
        assert_eq!(&next.session_id, session, "{new}");
    }
    assert_eq!(
        s.counters.links_ambiguous, 1,
        "a refresh is not a second user"
    );
}

#[test]
fn a_fallback_session_split_at_a_day_keeps_its_links() {
    let mut s = sessionizer(SessionConfig::default());
    s.assign(&office_login(0, "long", "tok-long"));
    let parts: HashSet<String> = (1..=75)
        .map(|i| {
            s.assign(&office_request(i * 20, ("Cookie", "sid=long")))
                .session_id
        })
        .collect();
    assert_eq!(parts.len(), 2, "cut once, at a day");
    assert_eq!(s.counters.links_expired, 0);
    // The second part still knows its first cookie: another one is a second user.
    let other = s
        .assign(&office_login(75 * 20 + 1, "other", "tok-other"))
        .session_id;
    assert!(!parts.contains(&other));
    assert_eq!(s.counters.links_ambiguous, 1);
}

#[test]
fn the_hand_outs_remembered_per_fallback_session_are_bounded_and_counted() {
    let keys: Vec<String> = (0..MAX_FIRST_HAND_OUTS + 2)
        .map(|i| format!("\"response.header.X-K{i}\""))
        .collect();
    let mut s = sessionizer(config_with(&format!(
        "[sessions]\nkeys = [{}]\n",
        keys.join(", ")
    )));
    let headers: Vec<(String, String)> = (0..MAX_FIRST_HAND_OUTS + 2)
        .map(|i| (format!("X-K{i}"), format!("v{i}")))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    s.assign(&with_response(
        exchange(OFFICE, 0, &OFFICE_UA),
        &headers,
        "",
    ));
    assert_eq!(s.counters.hand_outs_untracked, 2);
    let state = s
        .active
        .iter()
        .find_map(|(_, a)| a.hand_outs.as_ref())
        .unwrap();
    assert_eq!(state.first.len(), MAX_FIRST_HAND_OUTS);
}

#[test]
fn session_counters_name_the_ambiguity_counters() {
    let names: Vec<&str> = SessionCounters::default()
        .snapshot()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    for name in [
        "links_ambiguous",
        "links_expired",
        "hand_outs_untracked",
        "links_kept_unreturned",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
}

/// An exchange of the office's fallback actor whose response sets `sid` (and nothing else).
fn cookie_hand_out(at: u64, sid: &str) -> Exchange {
    with_response(
        exchange(OFFICE, at, &OFFICE_UA),
        &[("Set-Cookie", &format!("sid={sid}; Path=/"))],
        "",
    )
}

#[test]
fn a_client_that_ignores_its_cookies_gets_a_bounded_number_of_split_off_sessions() {
    // A health check or crawler without a cookie jar, against an app that gives every
    // cookieless request a new session cookie.
    let mut s = sessionizer(SessionConfig::default());
    let ids: Vec<String> = (0..30)
        .map(|i| s.assign(&cookie_hand_out(0, &format!("c{i}"))).session_id)
        .collect();
    let max = MAX_UNRETURNED_SPLITS as usize;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1 + max);
    assert!(
        ids[max + 1..].iter().all(|id| *id == ids[0]),
        "kept in the fallback session"
    );
    assert_eq!(s.counters.links_ambiguous, max as u64);
    assert_eq!(s.counters.links_kept_unreturned, (30 - 1 - max) as u64);
}

#[test]
fn a_split_off_value_that_comes_back_makes_room_for_the_next() {
    let mut s = sessionizer(SessionConfig::default());
    let max = MAX_UNRETURNED_SPLITS as usize;
    let mut split = Vec::new();
    for i in 0..=max {
        split.push(s.assign(&cookie_hand_out(0, &format!("u{i}"))).session_id);
    }
    let kept = s.assign(&cookie_hand_out(1, "full")).session_id;
    assert_eq!(kept, split[0], "no room: kept in the fallback session");
    // User 3 uses its cookie, twice: it counts once.
    for at in [2, 3] {
        let back = s.assign(&office_request(at, ("Cookie", "sid=u3")));
        assert_eq!(back.session_id, split[3]);
    }
    let next = s.assign(&cookie_hand_out(4, "next")).session_id;
    assert!(!split.contains(&next), "a slot again");
    let after = s.assign(&cookie_hand_out(5, "after")).session_id;
    assert_eq!(after, split[0], "and full again");
    assert_eq!(s.counters.links_ambiguous, max as u64 + 1);
    assert_eq!(s.counters.links_kept_unreturned, 2);
}

/// What a store would hold after the changes `s` made: the later change of a key wins.
fn persisted(changes: &[SessionState]) -> crate::record::LoadedState {
    let mut actors = std::collections::HashMap::new();
    let mut links = std::collections::HashMap::new();
    for change in changes {
        actors.extend(change.actors.iter().cloned());
        links.extend(change.links.iter().cloned());
    }
    let mut actors: Vec<_> = actors.into_iter().filter(|(_, a)| a.is_some()).collect();
    actors.sort_by_key(|(_, a)| std::cmp::Reverse(a.as_ref().map(|a| a.last_ns)));
    let state = SessionState {
        actors,
        links: links.into_iter().filter(|(_, l)| l.is_some()).collect(),
    };
    crate::record::LoadedState {
        state,
        ..crate::record::LoadedState::default()
    }
}

#[test]
fn a_restored_sessionizer_continues_the_sessions_and_links_it_was_given() {
    let mut before = sessionizer(SessionConfig::default());
    before.restore(crate::record::LoadedState::default());
    let ua = ("User-Agent", "lone/1");
    let anonymous = before.assign(&exchange("192.0.2.9", 0, &[ua]));
    let login = with_response(
        exchange("192.0.2.9", 1, &[ua]),
        &[("Set-Cookie", "sid=s3cr3t; HttpOnly")],
        "",
    );
    assert_eq!(before.assign(&login).session_id, anonymous.session_id);
    let mut changes = vec![before.take_changes()];
    assert!(!changes[0].actors.is_empty() && !changes[0].links.is_empty());
    let cookie = [ua, ("Cookie", "sid=s3cr3t")];
    assert_eq!(
        before.assign(&exchange("192.0.2.9", 2, &cookie)).session_id,
        anonymous.session_id
    );
    changes.push(before.take_changes());
    assert!(before.take_changes().is_empty(), "nothing changed since");

    // A new process, from what the store holds.
    let mut after = sessionizer(SessionConfig::default());
    after.restore(persisted(&changes));
    assert_eq!(after.counters.state_actors_loaded, 1);
    assert_eq!(after.counters.state_links_loaded, 1);
    let next = after.assign(&exchange("192.0.2.9", 5, &cookie));
    assert_eq!(next.session_id, anonymous.session_id);
    assert!(!next.new_session);
    // Past the inactivity timeout it is a new session, as without a restart.
    let later = after.assign(&exchange("192.0.2.9", 50, &cookie));
    assert_ne!(later.session_id, anonymous.session_id);

    // Without restore nothing is noted (no store to write it to).
    let mut plain = sessionizer(SessionConfig::default());
    plain.assign(&exchange("192.0.2.9", 0, &[ua]));
    assert!(plain.take_changes().is_empty());
}

#[test]
fn a_restore_past_the_bound_keeps_the_newest_and_counts_the_rest() {
    let config = SessionConfig {
        max_active: 3,
        ..SessionConfig::default()
    };
    let mut before = sessionizer(config.clone());
    before.restore(crate::record::LoadedState::default());
    let ids: Vec<String> = (0..5u64)
        .map(|n| {
            let ua = format!("agent-{n}");
            before
                .assign(&exchange("192.0.2.1", n, &[("User-Agent", &ua)]))
                .session_id
        })
        .collect();
    // The bound held in memory: the two oldest were evicted and are gone from the changes too.
    let mut loaded = persisted(&[before.take_changes()]);
    assert_eq!(loaded.state.actors.len(), 3);
    loaded.actors_cut = 2;
    let mut after = sessionizer(config);
    after.restore(loaded);
    assert_eq!(after.counters.state_actors_loaded, 3);
    assert_eq!(after.counters.state_actors_cut, 2);
    // Newest first: the two that start anew then evict the oldest loaded ones. Starting anew
    // within the same inactivity window, they get the id they had: the store's session goes on.
    for (n, id) in ids.iter().enumerate().rev() {
        let ua = format!("agent-{n}");
        let again = after.assign(&exchange("192.0.2.1", 6, &[("User-Agent", &ua)]));
        assert_eq!(again.new_session, n < 2, "session {n}");
        assert_eq!(&again.session_id, id, "session {n}");
    }
}

#[test]
fn an_exchange_from_long_before_a_session_does_not_join_it() {
    let mut s = sessionizer(SessionConfig::default());
    let ua = [("User-Agent", "ua/1")];
    let today = s.assign(&exchange("192.0.2.3", 600, &ua)).session_id;
    // An older capture of the same client, imported afterwards.
    let yesterday = s.assign(&exchange("192.0.2.3", 10, &ua)).session_id;
    assert_ne!(today, yesterday);
    // Out of order by less than the timeout: the same session.
    let mut s = sessionizer(SessionConfig::default());
    let first = s.assign(&exchange("192.0.2.3", 600, &ua)).session_id;
    assert_eq!(s.assign(&exchange("192.0.2.3", 590, &ua)).session_id, first);
}

/// The key that decides a request with these headers (fresh sessionizer, so no links).
fn decided_by(config: SessionConfig, uri: &str, headers: &[(&str, &str)]) -> (KeyKind, String) {
    let mut s = sessionizer(config);
    let mut e = exchange("192.0.2.50", 0, headers);
    e.request.as_mut().unwrap().uri = uri.into();
    let a = s.assign(&e);
    (a.key_kind, a.key_name)
}

#[test]
fn framework_session_cookies_are_recognised_by_name_and_pattern() {
    for name in [
        "PHPSESSID",
        "_myshop_session",
        ".AspNetCore.Session",
        ".AspNetCore.Cookies",
        "next-auth.session-token",
        "__Secure-next-auth.session-token",
        "__Host-authjs.session-token",
        "koa.sess",
        "sessionId",
        "KEYCLOAK_SESSION",
        "ci_session",
        "PLAY_SESSION",
        "myapp.sid",
        "x_SeSsIoN_y",
        "connect.sid",
        "session",
    ] {
        let cookie = format!("{name}=v-0123456789abcdef");
        assert_eq!(
            decided_by(SessionConfig::default(), "/", &[("Cookie", &cookie)]),
            (KeyKind::Cookie, format!("cookie {name}")),
            "{name}"
        );
    }
    // A short value under a name only a pattern matches is a setting, not an id: it would
    // merge everyone who has it.
    for cookie in ["sessionTimeout=1800", "x_session=on", "app.sid=1"] {
        assert_eq!(
            decided_by(SessionConfig::default(), "/", &[("Cookie", cookie)]).0,
            KeyKind::Ip,
            "{cookie}"
        );
    }
    assert_eq!(
        decided_by(SessionConfig::default(), "/", &[("Cookie", "sid=c1")]).0,
        KeyKind::Cookie,
        "exact names take any value"
    );
}

#[test]
fn excluded_cookies_neither_split_nor_merge_sessions() {
    let excluded = [
        "_ga",
        "_ga_ABC123",
        "_gid",
        "_gat_UA1",
        "_fbp",
        "_fbc",
        "__utma",
        "_hjSessionUser_1",
        "AWSALB",
        "AWSALBCORS",
        "AWSALBTG",
        "SERVERID",
        "BIGipServerpool",
        "__cf_bm",
        "cf_clearance",
        "OptanonConsent",
        "cookieconsent_status",
        "csrftoken",
        "XSRF-TOKEN",
        "_csrf",
        "csrf_session",
        "__Host-csrf",
        "session.sig",
    ];
    for name in excluded {
        let cookie = format!("{name}=v-0123456789abcdef");
        assert_eq!(
            decided_by(
                SessionConfig::default(),
                "/",
                &[("Cookie", &cookie), ("User-Agent", "ua")]
            )
            .0,
            KeyKind::IpUserAgent,
            "{name} is no key"
        );
    }
    let mut s = sessionizer(SessionConfig::default());
    let mut id = |ip: &str, at: u64, cookie: &str| {
        s.assign(&exchange(
            ip,
            at,
            &[("Cookie", cookie), ("User-Agent", "ua")],
        ))
        .session_id
    };
    // One user whose analytics and CSRF cookies change: one session.
    let a1 = id("192.0.2.60", 0, "_ga=1; sid=alice; csrftoken=x1");
    let a2 = id("192.0.2.60", 1, "_ga=2; sid=alice; csrftoken=x2; __cf_bm=z");
    assert_eq!(a1, a2);
    // Two users behind one balancer share its stickiness cookie: two sessions.
    let b = id("192.0.2.60", 2, "AWSALB=pool-1; sid=bob");
    let c = id("192.0.2.60", 3, "AWSALB=pool-1; sid=carol");
    assert_ne!(b, c);
    assert_ne!(a1, b);
    // Nor are they handed out: a CSRF cookie set on a login form links nothing.
    let form = with_response(
        exchange("192.0.2.61", 0, &[("User-Agent", "ua")]),
        &[
            ("Set-Cookie", "csrftoken=t1; Path=/"),
            ("Set-Cookie", "_ga=g1"),
        ],
        "",
    );
    s.assign(&form);
    assert_eq!(s.counters.links_registered, 0);
}

#[test]
fn a_jwt_in_a_cookie_is_decoded_like_a_bearer_jwt() {
    let token = jwt(r#"{"sub":"alice","exp":1}"#);
    let mut s = sessionizer(SessionConfig::default());
    for (name, at) in [("access_token", 0), ("jwt", 1), ("app_identity", 2)] {
        let cookie = format!("{name}={token}");
        let a = s.assign(&exchange("192.0.2.70", at, &[("Cookie", &cookie)]));
        assert_eq!(a.key_kind, KeyKind::Jwt, "{name}");
        assert_eq!(a.key_name, format!("cookie {name}"));
        assert_eq!(a.user.as_deref(), Some("alice"), "{name}");
    }
    // The subject is the key: a refreshed token of the same user stays in the session.
    let first = s
        .assign(&exchange(
            "192.0.2.71",
            5,
            &[("Cookie", &format!("jwt={token}"))],
        ))
        .session_id;
    let refreshed = jwt(r#"{"sub":"alice","exp":2}"#);
    let again = s
        .assign(&exchange(
            "192.0.2.71",
            6,
            &[("Cookie", &format!("jwt={refreshed}"))],
        ))
        .session_id;
    assert_eq!(first, again);
    // An opaque token cookie is a key of its own; an excluded cookie even with a JWT is not.
    assert_eq!(
        decided_by(SessionConfig::default(), "/", &[("Cookie", "token=opaque")]),
        (KeyKind::Cookie, "cookie token".into())
    );
    let csrf = format!("_csrf={token}");
    assert_eq!(
        decided_by(SessionConfig::default(), "/", &[("Cookie", &csrf)]).0,
        KeyKind::Ip
    );
}

#[test]
fn precedence_among_several_recognised_keys_follows_the_documented_tiers() {
    let subject_jwt = jwt(r#"{"sub":"sam"}"#);
    let bearer_jwt = format!("Bearer {subject_jwt}");
    let cookie_jwt = format!("access_token={subject_jwt}");
    // Most specific first; dropping the front one at a time shows each tier deciding.
    let all: Vec<(&str, &str)> = vec![
        (
            "Cookie",
            "remember_token=r1; _shop_session=s-0123456789abcdef",
        ),
        ("Authorization", &bearer_jwt),
        ("Cookie", &cookie_jwt),
        ("Authorization", "Token t1"),
        ("Cookie", "auth_token=opaque"),
        ("X-Token", "x1"),
        ("Cookie", "remember_token=r1"),
    ];
    let expected = [
        (KeyKind::Cookie, "cookie _shop_session"),
        (KeyKind::Jwt, "Authorization"),
        (KeyKind::Jwt, "cookie access_token"),
        (KeyKind::Bearer, "Authorization"),
        (KeyKind::Cookie, "cookie auth_token"),
        (KeyKind::ApiKey, "X-Token"),
        (KeyKind::Cookie, "cookie remember_token"),
        (KeyKind::Bearer, "query access_token"),
    ];
    for (drop, (kind, name)) in expected.iter().enumerate() {
        // A request has one Authorization header: the first one left stands for it.
        let mut headers: Vec<(&str, &str)> = Vec::new();
        let mut authorization = false;
        let mut cookies = Vec::new();
        for (n, v) in &all[drop.min(all.len())..] {
            match *n {
                "Authorization" if authorization => {}
                "Authorization" => {
                    authorization = true;
                    headers.push((n, v));
                }
                "Cookie" => cookies.push(*v),
                _ => headers.push((n, v)),
            }
        }
        let cookie = cookies.join("; ");
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        assert_eq!(
            decided_by(SessionConfig::default(), "/x?access_token=q1&a=b", &headers),
            (*kind, (*name).to_owned()),
            "tier {drop}: {headers:?}"
        );
    }
    assert_eq!(
        decided_by(SessionConfig::default(), "/x?apikey=q1", &[]),
        (KeyKind::ApiKey, "query apikey".into())
    );
}

#[test]
fn more_token_headers_and_authorization_schemes_are_keys() {
    for (header, value, kind) in [
        ("X-Token", "t", KeyKind::ApiKey),
        ("X-User-Token", "t", KeyKind::ApiKey),
        ("X-Amz-Security-Token", "t", KeyKind::ApiKey),
        ("Authorization", "Token abc", KeyKind::Bearer),
        ("Authorization", "ApiKey abc", KeyKind::ApiKey),
        ("Authorization", "Key abc", KeyKind::ApiKey),
    ] {
        assert_eq!(
            decided_by(SessionConfig::default(), "/", &[(header, value)]).0,
            kind,
            "{header}: {value}"
        );
    }
}

#[test]
fn the_configuration_extends_the_built_in_table_without_repeating_it() {
    let config = || {
        config_with(
            "[sessions]\ncookies = [\"app_auth\", \"csrftoken\"]\nexclude_cookies = [\"sid\"]\nheaders = [\"X-Tenant-Token\"]\n",
        )
    };
    let cookie = |value: &str| decided_by(config(), "/", &[("Cookie", value)]);
    assert_eq!(
        cookie("app_auth=1"),
        (KeyKind::Cookie, "cookie app_auth".into())
    );
    assert_eq!(
        cookie("csrftoken=1").0,
        KeyKind::Cookie,
        "a configured cookie wins over a built-in exclusion"
    );
    assert_eq!(
        cookie("sid=1").0,
        KeyKind::Ip,
        "excluded by the configuration"
    );
    assert_eq!(
        cookie("sid=1; PHPSESSID=2"),
        (KeyKind::Cookie, "cookie PHPSESSID".into()),
        "the built-in names stay"
    );
    assert_eq!(
        cookie("PHPSESSID=2; app_auth=1"),
        (KeyKind::Cookie, "cookie app_auth".into()),
        "configured cookies come first"
    );
    assert_eq!(
        decided_by(
            config(),
            "/",
            &[("X-Tenant-Token", "t"), ("X-API-Key", "k")]
        ),
        (KeyKind::ApiKey, "x-tenant-token".into())
    );
    assert_eq!(
        decided_by(config(), "/", &[("X-API-Key", "k")]),
        (KeyKind::ApiKey, "X-API-Key".into())
    );
}

#[test]
fn pattern_and_remember_me_cookies_handed_out_at_login_link() {
    let mut s = sessionizer(SessionConfig::default());
    let ua = [("User-Agent", "Safari")];
    let before = s.assign(&exchange("192.0.2.80", 0, &ua)).session_id;
    let login = with_response(
        exchange("192.0.2.80", 1, &ua),
        &[
            ("Set-Cookie", "__Host-csrf=c; Path=/"),
            (
                "Set-Cookie",
                "_shop_session=s-0123456789abcdef; Path=/; HttpOnly",
            ),
            ("Set-Cookie", "remember_token=r-1; Max-Age=31536000"),
        ],
        "",
    );
    assert_eq!(s.assign(&login).session_id, before);
    assert_eq!(s.counters.links_registered, 2);
    for (at, cookie) in [
        (2, "_shop_session=s-0123456789abcdef"),
        (3, "remember_token=r-1"),
    ] {
        assert_eq!(
            s.assign(&exchange("192.0.2.99", at, &[("Cookie", cookie)]))
                .session_id,
            before,
            "{cookie}"
        );
    }
    // A deletion hands nothing out.
    let logout = with_response(
        exchange("192.0.2.80", 4, &ua),
        &[
            (
                "Set-Cookie",
                "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT",
            ),
            ("Set-Cookie", "PHPSESSID=deleted; Max-Age=0"),
        ],
        "",
    );
    s.assign(&logout);
    assert_eq!(s.counters.links_registered, 2);
}

#[test]
fn the_readme_lists_every_built_in_name_and_pattern() {
    let readme = include_str!("../../../README.md");
    let missing: Vec<&str> = keys::BUILTIN_COOKIES
        .iter()
        .map(|(p, _, _)| *p)
        .chain(keys::EXCLUDED_COOKIES.iter().map(|(p, _)| *p))
        .chain(keys::TOKEN_HEADERS.iter().copied())
        .chain(QUERY_TOKENS.iter().copied())
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
    for (pattern, _, _) in keys::BUILTIN_COOKIES {
        assert!(
            pattern.parse::<crate::config::NamePattern>().is_ok(),
            "{pattern}"
        );
    }
    for (pattern, _) in keys::EXCLUDED_COOKIES {
        assert!(
            pattern.parse::<crate::config::NamePattern>().is_ok(),
            "{pattern}"
        );
    }
}

/// Not a check but a measurement of the grouping keys' cost per exchange (the daemon's hot
/// path): `cargo test --release -p apisessions --lib per_exchange_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn per_exchange_cost_of_finding_the_keys() {
    const BROWSER: &str = "_ga=GA1.1.123456789.1700000000; _gid=GA1.1.987654321.1700000000; \
        _fbp=fb.1.1700000000000.1234567890; AWSALB=q8Xv2dZ7mJ0bW4kH5nC3rT6yU1iO9pA; \
        AWSALBCORS=q8Xv2dZ7mJ0bW4kH5nC3rT6yU1iO9pA; csrftoken=0123456789abcdef0123456789abcdef; \
        OptanonConsent=isGpcEnabled=0&datestamp=Mon+Nov+30+2026; theme=dark; lang=en; \
        sessionid=vr6dwhis1a2qvqxjek34xwl5aaqc03uh";
    let token = jwt(r#"{"sub":"alice","iat":1700000000}"#);
    let bearer = format!("Bearer {token}");
    let jwt_cookie = format!("_ga=GA1.1.1.1; access_token={token}");
    let ua = (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0.0.0",
    );
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("no key (IP + User-Agent)", vec![ua]),
        (
            "browser: 10 cookies, Django's last",
            vec![ua, ("Cookie", BROWSER)],
        ),
        ("bearer JWT", vec![ua, ("Authorization", &bearer)]),
        ("JWT in a cookie", vec![ua, ("Cookie", &jwt_cookie)]),
        ("API key", vec![ua, ("X-API-Key", "k-0123456789")]),
    ];
    let s = sessionizer(SessionConfig::default());
    for (name, headers) in cases {
        let e = exchange("192.0.2.200", 0, &headers);
        let rounds: u32 = 200_000;
        let started = std::time::Instant::now();
        let mut found = 0;
        for _ in 0..rounds {
            found += std::hint::black_box(s.candidates(std::hint::black_box(&e))).len();
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "{name}: {per:.0} ns per exchange ({} keys)",
            found / rounds as usize
        );
    }
}

#[test]
fn hosts_sharing_the_secret_give_one_user_one_session_id() {
    // Two hosts behind a load balancer see the user's first requests a moment apart.
    let key = [("X-API-Key", "k-7"), ("User-Agent", "app/1")];
    let mut host_a = sessionizer(SessionConfig::default());
    let mut host_b = sessionizer(SessionConfig::default());
    let a = host_a.assign(&exchange("192.0.2.9", 3, &key)).session_id;
    let b = host_b.assign(&exchange("192.0.2.9", 4, &key)).session_id;
    assert_eq!(a, b);
    // Another installation's secret gives other ids.
    let mut other = Sessionizer::new(SessionConfig::default(), Secret::from_bytes([8; 32]));
    assert_ne!(other.assign(&exchange("192.0.2.9", 3, &key)).session_id, a);
    // After the inactivity timeout the user's next session has an id of its own.
    let later = host_a
        .assign(&exchange("192.0.2.9", 3 + 31, &key))
        .session_id;
    assert_ne!(later, a);
}

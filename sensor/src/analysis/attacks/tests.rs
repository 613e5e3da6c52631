//! The detector on whole requests: points, normalisation, secrets, bounds, protocol.

use super::*;
use crate::exchange::{Anomalies, MessageMeta};

fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
    Request {
        method: method.into(),
        uri: uri.into(),
        meta: MessageMeta {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            body_len: body.len() as u64,
            ..MessageMeta::default()
        },
    }
}

fn detector() -> Detector {
    Detector::new(&AttacksConfig::default()).unwrap()
}

fn hashed(value: &str) -> String {
    format!("h:{}", value.len())
}

/// (class, point) of each finding.
fn found(request: &Request) -> Vec<(String, String)> {
    detector()
        .inspect(request, &hashed)
        .findings
        .into_iter()
        .map(|f| (f.class.to_string(), f.point))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(c, p)| ((*c).to_owned(), (*p).to_owned()))
        .collect()
}

/// Built once and shared by the pipeline's threads.
#[test]
fn the_detector_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Detector>();
}

#[test]
fn classes_serialise_in_the_issues_vocabulary() {
    for class in AttackClass::ALL {
        let json = serde_json::to_string(&class).unwrap();
        assert_eq!(json, format!("\"{class}\""));
        assert_eq!(AttackClass::from_name(class.as_str()), Some(class));
    }
    assert_eq!(AttackClass::PathTraversal.as_str(), "path_traversal");
    assert_eq!(AttackClass::OpenRedirect.as_str(), "open_redirect");
    let finding = Finding {
        class: AttackClass::Sqli,
        point: "request.query.id".into(),
        excerpt: "1' or '1'='1".into(),
        rule: "libinjection-sqli:s&sos".into(),
    };
    let bytes = postcard::to_stdvec(&finding).unwrap();
    assert_eq!(postcard::from_bytes::<Finding>(&bytes).unwrap(), finding);
    assert_eq!(
        serde_json::to_value(&finding).unwrap(),
        serde_json::json!({"class": "sqli", "point": "request.query.id",
            "excerpt": "1' or '1'='1", "rule": "libinjection-sqli:s&sos"})
    );
}

#[test]
fn an_ordinary_request_has_no_findings() {
    let get = request(
        "GET",
        "/api/users/42/orders?page=2&sort=-created_at&q=O%27Reilly+books",
        &[
            ("Host", "shop.example"),
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            ),
            ("Referer", "https://shop.example/search?q=books&page=1"),
            ("Cookie", "sid=abc123; theme=dark"),
            ("Accept", "application/json"),
        ],
        b"",
    );
    assert_eq!(found(&get), vec![]);
    let post = request(
        "POST",
        "/api/notes",
        &[("Content-Type", "application/json")],
        br#"{"title":"Select a plan","body":"Use <b>bold</b> & 5 > 3; see https://docs.example/a?b=c","tags":["a-b","c.d"],"n":3}"#,
    );
    assert_eq!(found(&post), vec![]);
}

#[test]
fn points_are_named_in_key_path_syntax() {
    let get = request(
        "GET",
        "/files/..%2f..%2fetc%2fpasswd?id=1%27%20OR%20%271%27%3D%271&next=//evil.example&user[$ne]=x",
        &[
            ("User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)"),
            ("Cookie", "sid=abc; pref=<script>alert(1)</script>"),
        ],
        b"",
    );
    assert_eq!(
        found(&get),
        pairs(&[
            ("path_traversal", "request.path"),
            ("sqli", "request.query.id"),
            ("open_redirect", "request.query.next"),
            ("nosqli", "request.query.user[$ne]"),
            ("scanner", "request.header.User-Agent"),
            ("xss", "request.cookie.pref"),
        ])
    );
    let json = request(
        "POST",
        "/api/render",
        &[("Content-Type", "application/json")],
        br#"{"user":{"name":"{{7*7}}","urls":["https://ok.example","http://169.254.169.254/latest/meta-data/"]},"q":{"$where":"sleep(100)"}}"#,
    );
    assert_eq!(
        found(&json),
        pairs(&[
            ("nosqli", "request.body.json.q.$where"),
            // `sleep(100)` is also an SQL time-based probe.
            ("sqli", "request.body.json.q.$where"),
            ("ssti", "request.body.json.user.name"),
            ("ssrf", "request.body.json.user.urls.1"),
        ])
    );
    let form = request(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"login=admin%27--&comment=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E",
    );
    assert_eq!(
        found(&form),
        pairs(&[
            ("sqli", "request.body.form.login"),
            ("xss", "request.body.form.comment")
        ])
    );
    let xml = request(
        "POST",
        "/api/import",
        &[("Content-Type", "application/xml")],
        b"<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
    );
    assert_eq!(found(&xml), pairs(&[("xxe", "request.body.xml")]));
}

#[test]
fn evasions_are_normalised() {
    // Double URL-encoding, NUL bytes, JSON \u escapes, HTML references.
    for (uri, class) in [
        ("/?f=%252e%252e%252fetc%252fpasswd", "path_traversal"),
        ("/?id=1%2527%2520or%25201%253D1--", "sqli"),
        ("/?q=%3Cscr%00ipt%3Ealert(1)%3C/script%3E", "xss"),
        ("/?u=java%26%23x73%3Bcript%26colon%3Balert(1)", "xss"),
    ] {
        let classes: Vec<String> = found(&request("GET", uri, &[], b""))
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert!(classes.contains(&class.to_owned()), "{uri}: {classes:?}");
    }
    let json = request(
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        br#"{"cmd":"\u0024{jndi:ldap://x.example/a}"}"#,
    );
    assert_eq!(found(&json), pairs(&[("rce", "request.body.json.cmd")]));
}

#[test]
fn excerpts_are_bounded_and_secrets_hashed() {
    let long = format!("{}' UNION SELECT password FROM users--", "a".repeat(300));
    let uri = format!(
        "/?q={long}&password=x%27%20or%201%3D1--&api_token=%3Cscript%3Ealert(1)%3C/script%3E"
    );
    let inspection = detector().inspect(
        &request(
            "GET",
            &uri,
            &[
                ("Authorization", "Bearer ' or 1=1--"),
                ("Cookie", "sid=' or 1=1--"),
            ],
            b"",
        ),
        &hashed,
    );
    let by_point = |p: &str| inspection.findings.iter().find(|f| f.point == p).unwrap();
    let q = by_point("request.query.q");
    assert!(
        q.excerpt.len() <= MAX_EXCERPT && q.excerpt.contains('\''),
        "{q:?}"
    );
    assert_eq!(by_point("request.query.password").excerpt, "h:11");
    assert_eq!(by_point("request.query.api_token").excerpt, "h:25");
    assert_eq!(by_point("request.cookie.sid").excerpt, "h:10");
    // Authorization is not a client-input header unless configured.
    assert!(
        inspection
            .findings
            .iter()
            .all(|f| f.point != "request.header.Authorization")
    );
    let configured = Detector::new(&AttacksConfig {
        headers: vec!["Authorization".into(), "X-Search".into()],
        ..AttacksConfig::default()
    })
    .unwrap()
    .inspect(
        &request(
            "GET",
            "/",
            &[
                ("Authorization", "Bearer ' or 1=1--"),
                ("X-Search", "1' or '1'='1"),
            ],
            b"",
        ),
        &hashed,
    );
    let points: Vec<(&str, &str)> = configured
        .findings
        .iter()
        .map(|f| (f.point.as_str(), f.excerpt.as_str()))
        .collect();
    assert_eq!(
        points,
        [
            ("request.header.Authorization", "h:17"),
            ("request.header.X-Search", "1' or '1'='1")
        ]
    );
}

#[test]
fn work_is_bounded_and_the_cut_is_said() {
    let detector = Detector::new(&AttacksConfig {
        max_bytes: 1000,
        ..AttacksConfig::default()
    })
    .unwrap();
    let body = format!("a={}&b=1%27%20or%20%271%27%3D%271", "x".repeat(2000));
    let inspection = detector.inspect(
        &request(
            "POST",
            "/",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        ),
        &hashed,
    );
    assert!(inspection.bytes_capped);
    assert!(inspection.bytes_inspected <= 1000);
    // The small value after the big one is still inspected.
    assert_eq!(inspection.findings.len(), 1);
    // Many payloads: findings stop at the bound.
    let query: String = (0..100)
        .map(|i| format!("p{i}=%27%20or%201%3D1--&"))
        .collect();
    let inspection = detector.inspect(&request("GET", &format!("/?{query}"), &[], b""), &hashed);
    assert_eq!(inspection.findings.len(), MAX_FINDINGS);
    assert!(inspection.findings_capped);
    // Deep JSON: cut at the depth bound, no stack exhaustion.
    let deep = format!("{}\"x\"{}", "[".repeat(100), "]".repeat(100));
    let inspection = detector.inspect(
        &request(
            "POST",
            "/",
            &[("Content-Type", "application/json")],
            deep.as_bytes(),
        ),
        &hashed,
    );
    assert!(inspection.bytes_capped);
}

#[test]
fn compressed_bodies_are_inspected_decoded() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"q":"1 UNION SELECT username, password FROM users--"}"#)
        .unwrap();
    let body = gz.finish().unwrap();
    let req = request(
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &body,
    );
    assert_eq!(found(&req), pairs(&[("sqli", "request.body.json.q")]));
}

#[test]
fn protocol_findings_come_from_the_decoder_anomalies() {
    let mut req = request(
        "POST",
        "/",
        &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        b"",
    );
    req.meta.anomalies.insert(Anomalies::LENGTH_AND_CHUNKED);
    let inspection = detector().inspect(&req, &hashed);
    assert_eq!(
        inspection.findings,
        vec![Finding {
            class: AttackClass::Protocol,
            point: "request".into(),
            excerpt: "Content-Length: 5; Transfer-Encoding: chunked".into(),
            rule: "protocol-length-and-chunked".into(),
        }]
    );
}

#[test]
fn a_referer_from_the_site_itself_is_no_ssrf() {
    // An intranet shop on a private address: its pages refer to themselves.
    let own = request(
        "GET",
        "/api/products?page=2",
        &[
            ("Host", "127.0.0.1:8080"),
            ("Referer", "http://127.0.0.1:8080/shop"),
            ("Origin", "http://127.0.0.1:8080"),
        ],
        b"",
    );
    assert_eq!(found(&own), pairs(&[]));
    // A Referer naming another, internal host still is.
    let other = request(
        "GET",
        "/api/products",
        &[
            ("Host", "shop.example"),
            ("Referer", "http://169.254.169.254/latest/meta-data/"),
        ],
        b"",
    );
    assert_eq!(found(&other), pairs(&[("ssrf", "request.header.Referer")]));
}

/// A redirect-named parameter sending the browser to another site is an open redirect; to the
/// request's own site (or a sibling subdomain), a path, or under another name, it is not.
#[test]
fn offsite_redirect_targets_are_open_redirects() {
    let at = |uri: &str, host: &str| {
        found(&request("GET", uri, &[("Host", host)], b""))
            .into_iter()
            .filter(|(class, _)| class == "open_redirect")
            .map(|(_, point)| point)
            .collect::<Vec<_>>()
    };
    let offsite = [
        "/login?next=https://evil.example/account",
        "/login?next=http%3A%2F%2Fevil.example",
        "/logout?returnTo=https://shop.example.evil.example/",
        "/cart?continue=https://user@evil.example:8443/x",
        "/login?redirect_url=//evil.example/",
    ];
    for uri in offsite {
        assert_eq!(at(uri, "shop.example:8080").len(), 1, "{uri}");
    }
    let onsite = [
        "/login?next=https://shop.example/account",
        "/login?next=https://www.shop.example/account",
        "/login?next=/dashboard",
        "/login?next=%2Fdashboard",
        "/share?link=https://news.example/article",
        "/oauth/authorize?redirect_uri=https://client.example/cb",
    ];
    for uri in onsite {
        assert_eq!(at(uri, "api.shop.example"), Vec::<String>::new(), "{uri}");
    }
    // Without a Host, any absolute target is another site.
    assert_eq!(
        found(&request(
            "GET",
            "/login?next=https://evil.example/",
            &[],
            b""
        )),
        pairs(&[("open_redirect", "request.query.next")])
    );
}

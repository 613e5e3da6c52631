//! The console in a real browser: the daemon captures the demo API (a real Python server) in a
//! server namespace while clients in the client namespace call it, among them an attacker whose
//! URIs, User-Agent, Referer and JSON body carry XSS payloads. Then `apisessions ui` serves that
//! store inside the server namespace, and Debian's chromium, driven through chromedriver
//! (WebDriver), reads it there: the list shows every session, a filter typed into the form
//! narrows it, the session page shows the timeline, and the payloads are text (no dialog, no
//! injected element); the attacks-only toggle hides the requests without findings and the list
//! filters by attack class; the endpoints page shows the figures of `endpoints --json`, a
//! payload in a path as text, and is reached from a request's endpoint. Also: the JSON API
//! agrees with `sessions --json`, `show --json` and `endpoints --json`,
//! `/metrics` is valid text, a token guards the console, and an open address without a token
//! is refused. The session page's screenshot goes to target/console-session.png (and to
//! docs/console-session.png with APISESSIONS_UPDATE_SCREENSHOT=1); the attacker's requests
//! (attacks only) and the endpoints page to target/console-attacks.png and
//! target/console-endpoints.png.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, net::TcpStream, path::Path, process::Stdio, time::Duration};

use common::{
    DemoApi, KillOnDrop, TestNet, cli, http_get as get, in_namespace, request, start_daemon_in,
    wait_until,
};
use fantoccini::{Client, ClientBuilder, Locator};

const PORT: u16 = 8080;
const UI_PORT: u16 = 7878;
const TOKEN_UI_PORT: u16 = 7880;
const DAEMON_UI_PORT: u16 = 7881;
const DAEMON_METRICS_PORT: u16 = 7882;
const DRIVER_PORT: u16 = 9515;
const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const JS: &str = "javascript:alert(1)";
const TOKEN: &str = "console-test-token-0123456789";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Percent-encodes everything but unreserved characters (as a browser encodes a path segment).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn wait_for_port(ns: &str, port: u16) -> bool {
    wait_until(Duration::from_secs(20), || {
        in_namespace(ns, || TcpStream::connect(("127.0.0.1", port)).is_ok())
    })
}

fn start_ui(ns: &str, data_dir: &Path, port: u16, options: &[&Path]) -> KillOnDrop {
    let mut command = TestNet::command(ns, BIN);
    command
        .args(["ui", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(options)
        .stdout(Stdio::null());
    let ui = KillOnDrop(command.spawn().unwrap());
    assert!(wait_for_port(ns, port), "apisessions ui listens on {port}");
    ui
}

/// Checks the Prometheus text format line by line (the exposition format's grammar, as
/// Prometheus reads it); returns the number of samples.
fn prometheus_samples(text: &str) -> usize {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = 0;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(text.lines().last(), Some("# EOF"), "ends with # EOF");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    assert!(name_ok(parts.next().unwrap()), "{line}");
                    assert!(
                        ["counter", "gauge", "unknown"].contains(&parts.next().unwrap()),
                        "{line}"
                    );
                }
                Some("HELP") => assert!(name_ok(parts.next().unwrap()), "{line}"),
                Some("EOF") => {}
                other => panic!("unexpected comment {other:?}: {line}"),
            }
            continue;
        }
        let (name, value) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(name_ok(name), "metric name in {line}");
        assert!(value.parse::<f64>().is_ok(), "value in {line}");
        assert!(seen.insert(name.to_owned()), "{name} twice");
        samples += 1;
    }
    samples
}

#[test]
fn the_console_shows_live_sessions_and_never_runs_captured_script() {
    let net = TestNet::new();
    let api = DemoApi::start(&net, PORT);
    let server = api.addr;
    let dir = std::env::temp_dir().join(format!("apis-console-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // The daemon serves the console (`--ui`) and `/metrics` alone (`--metrics`) too.
    let mut daemon = start_daemon_in(
        &net.server_ns,
        BIN,
        &[
            "--iface",
            &net.server_if,
            "--port",
            &PORT.to_string(),
            "--ui",
            &format!("127.0.0.1:{DAEMON_UI_PORT}"),
            "--metrics",
            &format!("127.0.0.1:{DAEMON_METRICS_PORT}"),
        ],
        &dir,
    );

    // Two ordinary clients (their own User-Agents: IP + agent sessions) and the attacker, whose
    // API key keeps its requests in one session.
    in_namespace(&net.client_ns, || {
        for agent in ["console-test-alice/1.0", "console-test-bob/1.0"] {
            for path in [
                "/api/products",
                "/api/products/1",
                "/api/products/2",
                "/health",
            ] {
                request(
                    server,
                    &format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {agent}\r\n"),
                    "",
                );
            }
        }
        request(
            server,
            "POST /api/login HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: console-test-bob/1.0\r\n\
             Content-Type: application/json\r\n",
            r#"{"user":"nobody","password":"wrong"}"#,
        );
        let attacker = |method: &str, target: &str, agent: &str, extra: &str, body: &str| {
            request(
                server,
                &format!(
                    "{method} {target} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {agent}\r\n\
                     X-API-Key: console-test-attacker-key\r\n{extra}"
                ),
                body,
            );
        };
        attacker(
            "GET",
            &format!("/api/products/{}?q={}", encode(SCRIPT), encode(IMG)),
            IMG,
            "",
            "",
        );
        attacker(
            "GET",
            &format!("/api/users/1?next={}", encode(JS)),
            SCRIPT,
            &format!("Referer: {JS}\r\n"),
            "",
        );
        let body = serde_json::json!({"comment": SCRIPT, "img": IMG, "link": JS}).to_string();
        attacker(
            "POST",
            "/api/orders",
            IMG,
            "Content-Type: application/json\r\n",
            &body,
        );
        attacker(
            "GET",
            &format!("/{}", encode(IMG)),
            &format!("Mozilla/5.0 {IMG}"),
            "",
            "",
        );
        // A path with the payload unencoded (httparse takes it; so does the server): the
        // endpoint template keeps it, and the endpoints page must show it as text.
        attacker("GET", &format!("/api{SCRIPT}"), IMG, "", "");
        // And one request without findings in the attacker's session, for the toggle.
        attacker("GET", "/api/products", "console-test-attacker/1.0", "", "");
    });
    let sessions_json = || -> Vec<serde_json::Value> {
        serde_json::from_str(&cli(BIN, &["sessions", "--json", "--limit", "0"], &dir)).unwrap()
    };
    let stored = wait_until(Duration::from_secs(20), || {
        sessions_json()
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= 15
    });
    assert!(stored, "15 exchanges stored: {:#?}", sessions_json());
    // The daemon's own console reads its store while it runs.
    let (status, _, body) = get(&net.server_ns, DAEMON_UI_PORT, "/api/v1/sessions", None);
    assert_eq!(status, 200, "{body}");
    let live: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(live.len(), 3, "run --ui: {live:#?}");
    let (status, _, body) = get(&net.server_ns, DAEMON_METRICS_PORT, "/metrics", None);
    assert_eq!(status, 200);
    assert!(body.contains("\napisessions_daemon_running 1\n"), "{body}");
    assert_eq!(get(&net.server_ns, DAEMON_METRICS_PORT, "/", None).0, 404);
    // The daemon stops so that the CLI and the console read the same store.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();

    let sessions = sessions_json();
    assert_eq!(sessions.len(), 3, "{sessions:#?}");
    let attacker = sessions
        .iter()
        .find(|s| s["key_kind"] == "api_key")
        .expect("the attacker's session");
    let attacker_id = attacker["session_id"].as_str().unwrap().to_owned();
    let busiest = sessions
        .iter()
        .filter(|s| s["key_kind"] != "api_key")
        .max_by_key(|s| s["requests"].as_u64())
        .unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let posting: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&cli(
        BIN,
        &["sessions", "--json", "--limit", "0", "--method", "POST"],
        &dir,
    ))
    .unwrap()
    .iter()
    .map(|s| s["session_id"].as_str().unwrap().to_owned())
    .collect();
    assert!(!posting.is_empty() && posting.len() < sessions.len());

    // An open address without a token: refused at once, naming the token.
    let refused = TestNet::command(&net.server_ns, BIN)
        .args(["ui", "--listen", "0.0.0.0:7879", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("token"),
        "{message}"
    );

    let ns = net.server_ns.clone();
    // The endpoints page compares the inventory with the demo API's own document.
    let spec = repo().join("xtask/demo/openapi.yaml");
    let _ui = start_ui(&ns, &dir, UI_PORT, &[Path::new("--spec"), &spec]);

    // The JSON API and the CLI: the same objects.
    let (status, head, body) = get(&ns, UI_PORT, "/api/v1/sessions", None);
    assert_eq!(status, 200, "{body}");
    let api: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(api, sessions, "GET /api/v1/sessions = sessions --json");
    for header in [
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(
            head.to_ascii_lowercase().contains(header),
            "{header} in {head}"
        );
    }
    for session in &sessions {
        let id = session["session_id"].as_str().unwrap();
        let (status, _, body) = get(&ns, UI_PORT, &format!("/api/v1/sessions/{id}"), None);
        assert_eq!(status, 200);
        let api: serde_json::Value = serde_json::from_str(&body).unwrap();
        let show: serde_json::Value =
            serde_json::from_str(&cli(BIN, &["show", id, "--json"], &dir)).unwrap();
        assert_eq!(api, show, "GET /api/v1/sessions/{id} = show --json");
    }
    let (_, _, body) = get(&ns, UI_PORT, "/api/v1/sessions?method=POST", None);
    let api_posting: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(api_posting.len(), posting.len());
    // The attack filters: as `sessions --attack xss` / `--attacks`.
    let by_class = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["sessions", "--json", "--limit", "0"];
        all.extend_from_slice(args);
        serde_json::from_str::<Vec<serde_json::Value>>(&cli(BIN, &all, &dir))
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let xss_sessions = by_class(&["--attack", "xss"]);
    assert_eq!(
        xss_sessions,
        std::slice::from_ref(&attacker_id),
        "only the attacker's session has xss findings"
    );
    for (query, cli_args) in [
        ("attack=xss", &["--attack", "xss"][..]),
        ("attacks=1", &["--attacks"][..]),
        ("attack=sqli", &["--attack", "sqli"][..]),
    ] {
        let (status, _, body) = get(&ns, UI_PORT, &format!("/api/v1/sessions?{query}"), None);
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, by_class(cli_args), "/api/v1/sessions?{query}");
    }
    // The attacker's requests with findings: as `show --attacks-only`.
    let attacked: serde_json::Value = serde_json::from_str(&cli(
        BIN,
        &["show", &attacker_id, "--json", "--attacks-only"],
        &dir,
    ))
    .unwrap();
    let attacked = attacked["exchanges"].as_array().unwrap().len();
    assert!(
        (1..6).contains(&attacked),
        "some but not all six attacker requests have findings: {attacked}"
    );

    // The inventory: the API gives what `endpoints --json --spec` prints.
    let spec_arg = spec.to_str().unwrap();
    let endpoints_cli = |more: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["endpoints", "--json", "--spec", spec_arg];
        args.extend_from_slice(more);
        serde_json::from_str(&cli(BIN, &args, &dir)).unwrap()
    };
    let endpoints = endpoints_cli(&[]);
    let (status, _, body) = get(&ns, UI_PORT, "/api/v1/endpoints", None);
    assert_eq!(status, 200, "{body}");
    let api_endpoints: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        api_endpoints, endpoints,
        "GET /api/v1/endpoints = endpoints --json"
    );
    assert!(
        endpoints
            .iter()
            .any(|e| e["endpoint"] == format!("/api{SCRIPT}")),
        "the payload path is an endpoint: {endpoints:#?}"
    );
    let (_, _, body) = get(&ns, UI_PORT, "/api/v1/endpoints?method=POST", None);
    let api_post: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let cli_post: Vec<&serde_json::Value> =
        endpoints.iter().filter(|e| e["method"] == "POST").collect();
    assert!(!cli_post.is_empty() && cli_post.len() < endpoints.len());
    assert_eq!(api_post.iter().collect::<Vec<_>>(), cli_post);
    for status in ["shadow", "zombie", "orphan"] {
        let (_, _, body) = get(
            &ns,
            UI_PORT,
            &format!("/api/v1/endpoints?status={status}"),
            None,
        );
        let api: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let cli_rows = endpoints_cli(&["--status", status]);
        assert!(
            !cli_rows.is_empty(),
            "the demo's traffic has {status} endpoints"
        );
        assert_eq!(api, cli_rows, "/api/v1/endpoints?status={status}");
    }

    // /metrics: valid text with every counter of `stats`.
    let (status, _, metrics) = get(&ns, UI_PORT, "/metrics", None);
    assert_eq!(status, 200);
    let stats: serde_json::Value =
        serde_json::from_str(&cli(BIN, &["stats", "--json"], &dir)).unwrap();
    let counters: usize = stats["stages"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_object().unwrap().len())
        .sum();
    assert!(counters >= 10);
    assert!(prometheus_samples(&metrics) > counters, "{metrics}");
    assert!(metrics.contains("\napisessions_kernel_"), "{metrics}");

    // With a token: nothing without it, everything with it.
    let token_file = dir.join("console-token");
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let _token_ui = start_ui(
        &ns,
        &dir,
        TOKEN_UI_PORT,
        &[Path::new("--token-file"), &token_file],
    );
    assert_eq!(get(&ns, TOKEN_UI_PORT, "/api/v1/sessions", None).0, 401);
    assert_eq!(
        get(
            &ns,
            TOKEN_UI_PORT,
            "/metrics",
            Some("wrong-token-0123456789")
        )
        .0,
        401
    );
    assert_eq!(
        get(&ns, TOKEN_UI_PORT, "/api/v1/sessions", Some(TOKEN)).0,
        200
    );
    assert_eq!(get(&ns, TOKEN_UI_PORT, "/", None).0, 303);

    // The browser.
    let profile = dir.join("chromium-profile");
    let _driver = KillOnDrop(
        TestNet::command(&ns, "chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (cargo xtask setup installs chromium-driver)"),
    );
    assert!(wait_for_port(&ns, DRIVER_PORT), "chromedriver listens");
    let screenshot = in_namespace(&ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(browse(
                &profile,
                &sessions,
                &attacker_id,
                &busiest,
                &posting,
                attacked,
                &endpoints,
            ))
    });
    let out = repo().join("target/console-session.png");
    fs::write(&out, &screenshot).unwrap();
    if std::env::var_os("APISESSIONS_UPDATE_SCREENSHOT").is_some() {
        fs::write(repo().join("docs/console-session.png"), &screenshot).unwrap();
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Drives chromium through the pages; returns the busiest session page's screenshot (PNG).
async fn browse(
    profile: &Path,
    sessions: &[serde_json::Value],
    attacker: &str,
    busiest: &str,
    posting: &[String],
    attacked: usize,
    endpoints: &[serde_json::Value],
) -> Vec<u8> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1100",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // A dialog stays open (and is found below) instead of being dismissed silently.
    capabilities.insert("unhandledPromptBehavior".into(), "ignore".into());
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser: Client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("a chromium session through chromedriver");
    let base = format!("http://127.0.0.1:{UI_PORT}");

    // The list shows every session, each a link to its page.
    browser.goto(&format!("{base}/")).await.unwrap();
    let links = browser.find_all(Locator::Css("td.id a")).await.unwrap();
    let mut shown = Vec::new();
    for link in &links {
        shown.push(link.text().await.unwrap());
    }
    for session in sessions {
        let id = session["session_id"].as_str().unwrap();
        assert!(shown.iter().any(|s| s == id), "{id} listed: {shown:?}");
    }
    assert_eq!(shown.len(), sessions.len());

    // A filter typed into the form narrows the list, and the URL keeps it.
    let method = browser
        .find(Locator::Css("input[name=method]"))
        .await
        .unwrap();
    method.send_keys("POST").await.unwrap();
    browser
        .find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut url = String::new();
    for _ in 0..100 {
        url = browser.current_url().await.unwrap().to_string();
        if url == format!("{base}/?method=POST") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        url == format!("{base}/?method=POST"),
        "the filter alone is in the URL: {url}"
    );
    let narrowed = browser.find_all(Locator::Css("td.id a")).await.unwrap();
    assert_eq!(
        narrowed.len(),
        posting.len(),
        "the method filter narrows the list"
    );
    for link in &narrowed {
        assert!(posting.contains(&link.text().await.unwrap()));
    }

    // The attacker's session, reached by its link: the timeline, and payloads as text only.
    browser.goto(&format!("{base}/")).await.unwrap();
    browser
        .find(Locator::Css(&format!("a[href='/sessions/{attacker}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| {
        url.ends_with(&format!("/sessions/{attacker}"))
    })
    .await;
    let rows = browser
        .find_all(Locator::Css("table.timeline tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 6, "the attacker's six requests in the timeline");
    assert!(
        browser.get_alert_text().await.is_err(),
        "no alert() dialog opened"
    );
    let injected = browser
        .execute(
            "return [document.querySelectorAll('img, script, [onerror], iframe').length, \
             document.querySelectorAll('a[href^=\"javascript\"]').length, \
             document.body.textContent]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected[0], 0, "no injected element");
    assert_eq!(injected[1], 0, "no javascript: link");
    let text = injected[2].as_str().unwrap();
    for payload in [IMG, SCRIPT, JS] {
        assert!(text.contains(payload), "{payload} shown as text");
    }
    // A request's details carry its endpoint's figures from the inventory.
    let orders = endpoints
        .iter()
        .find(|e| e["method"] == "POST" && e["endpoint"] == "/api/orders")
        .unwrap();
    let insight = format!(
        "Endpoint POST /api/orders: {} calls in {} sessions",
        orders["calls"], orders["sessions"]
    );
    assert!(text.contains(&insight), "{insight} in {text}");
    // Attack marks, as the CLI writes them (class@point).
    let marks = browser
        .find_all(Locator::Css("table.timeline td.attacks span.attack"))
        .await
        .unwrap();
    assert!(marks.len() >= attacked);
    for mark in &marks {
        let mark = mark.text().await.unwrap();
        assert!(mark.contains("@request"), "{mark}");
    }

    // The attacks-only toggle: the requests with findings, and only them.
    browser
        .find(Locator::Css("p.toggle a.toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| url.ends_with("?attacks=1")).await;
    let rows = browser
        .find_all(Locator::Css("table.timeline tbody tr"))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        attacked,
        "attacks only: as `show --attacks-only`"
    );
    browser
        .execute(
            "document.querySelector('section.timeline').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    let shot = browser.screenshot().await.unwrap();
    fs::write(repo().join("target/console-attacks.png"), shot).unwrap();
    for row in &rows {
        let cell = row.find(Locator::Css("td.attacks")).await.unwrap();
        assert!(
            cell.text().await.unwrap().contains('@'),
            "a finding in every row"
        );
    }
    // Off again: all six.
    browser
        .find(Locator::Css("p.toggle a.toggle.active"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| {
        url.ends_with(&format!("/sessions/{attacker}"))
    })
    .await;
    assert_eq!(
        browser
            .find_all(Locator::Css("table.timeline tbody tr"))
            .await
            .unwrap()
            .len(),
        6
    );

    // A request's endpoint links to its row of the endpoints page.
    browser
        .find(Locator::Css(
            "table.timeline td.endpoint a[href*='method=POST']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| url.contains("/endpoints?")).await;
    let linked = browser
        .find_all(Locator::Css("table.endpoints tbody tr"))
        .await
        .unwrap();
    assert_eq!(linked.len(), 1, "the request's own endpoint");
    let cell = linked[0].find(Locator::Css("td.endpoint")).await.unwrap();
    assert_eq!(cell.text().await.unwrap(), "/api/orders");

    // The list filtered by attack class: the attacker alone, its classes counted.
    browser.goto(&format!("{base}/?attack=xss")).await.unwrap();
    let listed = browser.find_all(Locator::Css("td.id a")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text().await.unwrap(), attacker);
    let counts = browser
        .find(Locator::Css("td.attacks"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(counts.contains("xss "), "{counts}");

    // The endpoints page: every row of `endpoints --json`, with its figures, payloads as text.
    browser.goto(&format!("{base}/endpoints")).await.unwrap();
    assert!(
        browser.get_alert_text().await.is_err(),
        "no alert() dialog opened"
    );
    let rows = browser
        .find_all(Locator::Css("table.endpoints tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), endpoints.len());
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"));
    for (row, json) in rows.iter().zip(endpoints) {
        let cell = |class: &'static str| async move {
            row.find(Locator::Css(&format!("td.{class}")))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        assert_eq!(cell("method").await, json["method"].as_str().unwrap());
        assert_eq!(cell("endpoint").await, json["endpoint"].as_str().unwrap());
        assert_eq!(cell("calls").await, json["calls"].to_string(), "{json}");
        assert_eq!(
            cell("sessions").await,
            json["sessions"].to_string(),
            "{json}"
        );
        for p in ["p50", "p95", "p99"] {
            assert_eq!(cell(p).await, ms(&json["latency_ms"][p]), "{p} of {json}");
        }
        assert_eq!(cell("score").await, json["risk"].to_string(), "{json}");
        let spec_status = json["spec_status"].as_str().unwrap_or("-");
        assert_eq!(cell("spec").await, spec_status, "{json}");
    }
    let injected = browser
        .execute(
            "return [document.querySelectorAll('img, script, [onerror], iframe').length, \
             document.querySelector('table.endpoints').textContent]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected[0], 0, "no injected element on the endpoints page");
    let shot = browser.screenshot().await.unwrap();
    fs::write(repo().join("target/console-endpoints.png"), shot).unwrap();
    assert!(
        injected[1]
            .as_str()
            .unwrap()
            .contains(&format!("/api{SCRIPT}"))
    );
    // Its filter form narrows the rows, and the URL keeps the filter.
    browser
        .find(Locator::Css("input[name=method]"))
        .await
        .unwrap()
        .send_keys("POST")
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| url.ends_with("/endpoints?method=POST")).await;
    let narrowed = browser
        .find_all(Locator::Css("table.endpoints tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(
        narrowed,
        endpoints.iter().filter(|e| e["method"] == "POST").count()
    );

    // The busiest ordinary session: its statistics filter the timeline; the screenshot.
    browser
        .goto(&format!("{base}/sessions/{busiest}"))
        .await
        .unwrap();
    let all = browser
        .find_all(Locator::Css("table.timeline tbody tr"))
        .await
        .unwrap()
        .len();
    assert!(all >= 4);
    browser
        .find(Locator::Css("ul.stats a[href*='endpoint=%2Fhealth']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(&browser, |url| url.contains("endpoint=")).await;
    let filtered = browser
        .find_all(Locator::Css("table.timeline tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(filtered, 1, "the /health statistic filters the timeline");
    browser
        .goto(&format!("{base}/sessions/{busiest}"))
        .await
        .unwrap();
    let screenshot = browser.screenshot().await.unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"));

    // The login form of a console with a token sets the cookie that opens it.
    browser
        .goto(&format!("http://127.0.0.1:{TOKEN_UI_PORT}/"))
        .await
        .unwrap();
    let field = browser
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap();
    field.send_keys(TOKEN).await.unwrap();
    browser
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click starts a navigation (the form's POST, then the redirect to the list): wait for
    // the list's page rather than reading the login page that is still shown.
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("td.id a"))
        .await
        .unwrap();
    let listed = browser.find_all(Locator::Css("td.id a")).await.unwrap();
    assert_eq!(listed.len(), sessions.len(), "logged in: the list");
    browser.close().await.unwrap();
    screenshot
}

/// Waits (10 s at most) until the browser's URL satisfies `done`: a click only starts a
/// navigation, and the page must be the new one before it is read.
async fn wait_for_url(browser: &Client, done: impl Fn(&str) -> bool) {
    for _ in 0..200 {
        if done(browser.current_url().await.unwrap().as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the browser did not get there: {}",
        browser.current_url().await.unwrap()
    );
}

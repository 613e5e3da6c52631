//! Abuse signals, live: the demo API (a real Python server) in a server namespace with the
//! daemon capturing it, and real clients in the client namespace (tests/data/abuse/clients.py):
//! a scraper walking ids, a credential stuffer, a crawler, a client using one token from eight
//! source addresses, and two people with human pauses. Each abusive session must carry its
//! signal with a reason in numbers; the people carry none and a low risk. (Machine-regular
//! timing is measured on an injected clock in the unit tests, not with sleeps here.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use common::{DemoApi, TestNet, cli, sh, start_daemon, wait_until};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn sessions(data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["sessions", "--json", "--limit", "0"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli(BIN, &all, data_dir)).unwrap()
}

/// The session whose User-Agent is `agent` (each client has its own).
fn session_of<'a>(list: &'a [serde_json::Value], agent: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = list
        .iter()
        .filter(|s| {
            s["user_agents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == agent)
        })
        .collect();
    assert_eq!(found.len(), 1, "one session with agent {agent}: {list:#?}");
    found[0]
}

/// (score, reason) of `name` in the session's signals.
fn signal(session: &serde_json::Value, name: &str) -> Option<(u64, String)> {
    session["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| {
            (
                s["score"].as_u64().unwrap(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
}

#[test]
fn abusive_sessions_carry_their_signals_and_people_none() {
    let net = TestNet::new();
    let client_if = format!("vc{}", net.id);
    let rotate: Vec<String> = (0..8)
        .map(|i| format!("10.213.{}.{}", net.id, 20 + i))
        .collect();
    for address in &rotate {
        sh(
            "ip",
            &[
                "-n",
                &net.client_ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &client_if,
            ],
        );
    }
    let api = DemoApi::start(&net, PORT);
    let dir = std::env::temp_dir().join(format!("apis-abuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut daemon = start_daemon(&net, BIN, &[PORT], &dir);

    let out = TestNet::command(&net.client_ns, "python3")
        .arg(repo().join("tests/data/abuse/clients.py"))
        .args([
            &net.server_v4.to_string(),
            &PORT.to_string(),
            &rotate.join(","),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clients: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    let statuses = |name: &str| manifest[name]["statuses"].clone();
    assert_eq!(
        statuses("scraper"),
        serde_json::json!({"200": 40, "404": 40})
    );
    assert_eq!(statuses("stuffer"), serde_json::json!({"401": 40}));
    assert_eq!(statuses("rotator"), serde_json::json!({"200": 9}));

    // Everything is stored within a second or two of the last request.
    let agent = |name: &str| manifest[name]["user_agent"].as_str().unwrap().to_owned();
    let total: u64 = 80 + 40 + 40 + 9 + 13 + 13;
    let complete = wait_until(Duration::from_secs(15), || {
        sessions(&dir, &[])
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= total
    });
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    drop(api);
    let list = sessions(&dir, &[]);
    assert!(complete, "all {total} requests stored: {list:#?}");

    let scraper = session_of(&list, &agent("scraper"));
    let (score, reason) = signal(scraper, "enumeration").expect("scraper: enumeration");
    assert!(score >= 50, "{reason}");
    assert!(
        reason.starts_with("80 distinct values of {id} on GET /api/users/{id}"),
        "{reason}"
    );
    let stuffer = session_of(&list, &agent("stuffer"));
    let (score, reason) = signal(stuffer, "auth_failures").expect("stuffer: auth_failures");
    assert_eq!(score, 100);
    assert!(
        reason.starts_with("40 failed logins on POST /api/login with 40 user names"),
        "{reason}"
    );
    let crawler = session_of(&list, &agent("crawler"));
    let (score, reason) = signal(crawler, "wide_scope").expect("crawler: wide_scope");
    assert!(score >= 50, "{reason}");
    // The ten known paths are four endpoints (/health, /api/products, and two templated).
    assert!(reason.starts_with("34 distinct endpoints in"), "{reason}");
    let (score, reason) = signal(crawler, "errors").expect("crawler: errors");
    assert!(
        score >= 50 && reason.starts_with("30 of 40 responses 4xx"),
        "{reason}"
    );
    let rotator = session_of(&list, &agent("rotator"));
    let (score, reason) = signal(rotator, "ip_rotation").expect("rotator: ip_rotation");
    assert!(score >= 50, "{reason}");
    assert_eq!(reason, "8 client addresses in one session");
    for person in ["bob", "carol"] {
        let session = session_of(&list, &agent(person));
        assert_eq!(session["requests"], 13, "{person}: {session:#}");
        assert!(
            session["risk"].as_u64().unwrap() < 20,
            "{person}: {session:#}"
        );
        assert_eq!(session["signals"], serde_json::json!([]), "{person}");
    }
    let ids = |list: &[serde_json::Value]| -> BTreeSet<String> {
        list.iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let abusive = ids(&[
        scraper.clone(),
        stuffer.clone(),
        crawler.clone(),
        rotator.clone(),
    ]);
    assert_eq!(ids(&sessions(&dir, &["--min-risk", "50"])), abusive);
    assert_eq!(
        ids(&sessions(&dir, &["--signal", "auth_failures"])),
        ids(std::slice::from_ref(stuffer))
    );
    // The table shows the risk; `show` gives the reasons.
    let table = cli(BIN, &["sessions", "--min-risk", "50"], &dir);
    assert!(table.lines().next().unwrap().contains("RISK"), "{table}");
    let id = stuffer["session_id"].as_str().unwrap();
    let page = cli(BIN, &["show", id], &dir);
    assert!(
        page.contains("signals   auth_failures 100: 40 failed logins"),
        "{page}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

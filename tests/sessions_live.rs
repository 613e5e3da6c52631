//! Sessions end to end: the `apisessions run` daemon on a real veth next to nginx, five clients
//! on one IP told apart only by their keys, a reader in another process while the daemon
//! writes, and no raw secret anywhere in the data directory afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use common::{Nginx, TestNet, in_namespace, request, sh, wait_until};

const PORT: u16 = 8080;

const COOKIE_SECRET: &str = "SECRETCOOKIE7f3a91";
const JWT_SIGNATURE: &str = "SECRETJWTSIGc4d2e8";
const OPAQUE_SECRET: &str = "SECRETOPAQUE5b9c17";
const API_KEY_SECRET: &str = "SECRETAPIKEY2e6f40";
const QUERY_SECRET: &str = "SECRETQUERYa81d3c";
const PASSWORD_SECRET: &str = "SECRETPASSWORD93b7";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apisessions"))
}

fn jwt(sub: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{JWT_SIGNATURE}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"{sub}"}}"#))
    )
}

fn sessions_json(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = bin()
        .args(["sessions", "--json", "--limit", "0", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file below `dir`, searched byte for byte for `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn five_clients_on_one_ip_five_sessions_and_no_secret_on_disk() {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, PORT);
    let data_dir = std::env::temp_dir().join(format!("apis-sessions-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let mut daemon = TestNet::command(&net.server_ns, env!("CARGO_BIN_EXE_apisessions"))
        .args([
            "run",
            "--iface",
            &net.server_if,
            "--port",
            &PORT.to_string(),
            "--summary-interval",
            "0",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || data_dir
            .join("stats.json")
            .exists()),
        "daemon up"
    );

    let server = net.server_addr(false, PORT);
    let bearer_jwt = jwt("alice");
    let clients: Vec<(&str, String)> = vec![
        (
            "cookie",
            format!("Cookie: theme=dark; sid={COOKIE_SECRET}\r\nUser-Agent: shared-agent\r\n"),
        ),
        (
            "jwt",
            format!("Authorization: Bearer {bearer_jwt}\r\nUser-Agent: shared-agent\r\n"),
        ),
        (
            "bearer",
            format!("Authorization: Bearer {OPAQUE_SECRET}\r\nUser-Agent: shared-agent\r\n"),
        ),
        (
            "api_key",
            format!("X-API-Key: {API_KEY_SECRET}\r\nUser-Agent: shared-agent\r\n"),
        ),
        (
            "ip_user_agent",
            "User-Agent: other-agent/2.0\r\n".to_owned(),
        ),
    ];
    in_namespace(&net.client_ns, || {
        for round in 0..3 {
            for (_, headers) in &clients {
                request(
                    server,
                    &format!("GET /small.txt?round={round} HTTP/1.1\r\nHost: test\r\n{headers}"),
                    "",
                );
            }
        }
        // Secrets in a query string and a form body, from the User-Agent-only client.
        request(
            server,
            &format!(
                "GET /small.txt?token={QUERY_SECRET}&page=2 HTTP/1.1\r\nHost: test\r\nUser-Agent: other-agent/2.0\r\n"
            ),
            "",
        );
        request(
            server,
            "PUT /uploads/login.txt HTTP/1.1\r\nHost: test\r\nUser-Agent: other-agent/2.0\r\nContent-Type: application/x-www-form-urlencoded\r\n",
            &format!("login=bob&password={PASSWORD_SECRET}"),
        );
    });

    // A reader in another process while the daemon writes (the writer flushes every second).
    assert!(
        wait_until(Duration::from_secs(10), || sessions_json(&data_dir).len()
            == 5),
        "the running daemon's sessions are readable: {:?}",
        sessions_json(&data_dir)
    );
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());

    let sessions = sessions_json(&data_dir);
    let mut kinds: Vec<&str> = sessions
        .iter()
        .map(|s| s["key_kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["api_key", "bearer", "cookie", "ip_user_agent", "jwt"],
        "{sessions:#?}"
    );
    for session in &sessions {
        let expected = if session["key_kind"] == "ip_user_agent" {
            5
        } else {
            3
        };
        assert_eq!(session["requests"], expected, "{session}");
        assert_eq!(
            session["client_ips"],
            serde_json::json!([net.client_v4.to_string()])
        );
    }
    let jwt_session = sessions.iter().find(|s| s["key_kind"] == "jwt").unwrap();
    assert_eq!(jwt_session["user"], "alice");

    // The query secret was captured and hashed, not dropped.
    let anonymous = sessions
        .iter()
        .find(|s| s["key_kind"] == "ip_user_agent")
        .unwrap();
    let out = bin()
        .args([
            "show",
            anonymous["session_id"].as_str().unwrap(),
            "--json",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uris: Vec<&str> = shown["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uri"].as_str().unwrap())
        .collect();
    assert!(
        uris.iter()
            .any(|u| u.starts_with("/small.txt?token=h:") && u.ends_with("&page=2")),
        "{uris:?}"
    );

    for secret in [
        COOKIE_SECRET,
        JWT_SIGNATURE,
        OPAQUE_SECRET,
        API_KEY_SECRET,
        QUERY_SECRET,
        PASSWORD_SECRET,
        bearer_jwt.as_str(),
    ] {
        assert_eq!(
            files_containing(&data_dir, secret),
            Vec::<String>::new(),
            "{secret} reached the disk"
        );
    }
    let _ = fs::remove_dir_all(&data_dir);
}

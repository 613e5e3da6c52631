//! The API inventory, live: the demo API (a real Python server) in a server namespace with the
//! daemon capturing it, and a real client in the client namespace calling every endpoint a
//! known number of times. After the daemon stops, `apisessions endpoints --json` (another
//! process, reading the store) must list each endpoint with its calls, statuses and latency,
//! and `--spec xtask/demo/openapi.yaml` must come out as the document was constructed: one
//! shadow, one zombie, one orphan, the rest documented.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{DemoApi, TestNet, cli, sh, start_daemon, wait_until};

const PORT: u16 = 8080;
const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Calls each endpoint of the demo API a known number of times over one keep-alive connection.
const CLIENT: &str = r#"
import http.client, json, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data
status, data = call("POST", "/api/login", {"user": "bob", "password": "hunter2"})
assert status == 200, status
token = json.loads(data)["token"]
for _ in range(2):
    assert call("POST", "/api/login", {"user": "carol", "password": "tr0ub4dor&3"})[0] == 200
for i in range(1, 6):
    assert call("GET", f"/api/users/{i}")[0] == 200
for _ in range(4):
    assert call("GET", "/api/users/2/orders", token=token)[0] == 200
for page in range(1, 7):
    assert call("GET", f"/api/products?page={page}")[0] == 200
for i in range(1, 8):
    assert call("GET", f"/api/products/{i}")[0] == 200
for i in range(1, 3):
    assert call("POST", "/api/orders", {"product_id": i, "quantity": 1}, token=token)[0] == 201
for _ in range(3):
    assert call("GET", "/health")[0] == 200
"#;

fn endpoints(data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["endpoints", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli(BIN, &all, data_dir)).unwrap()
}

/// (method, endpoint) -> row.
fn by_operation(rows: &[serde_json::Value]) -> BTreeMap<(String, String), serde_json::Value> {
    rows.iter()
        .map(|r| {
            (
                (
                    r["method"].as_str().unwrap().to_owned(),
                    r["endpoint"].as_str().unwrap().to_owned(),
                ),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn endpoints_lists_the_demo_api_and_compares_it_with_its_spec() {
    let net = TestNet::new();
    let api = DemoApi::start(&net, PORT);
    let dir = std::env::temp_dir().join(format!("apis-inventory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut daemon = start_daemon(&net, BIN, &[PORT], &dir);

    let out = TestNet::command(&net.client_ns, "python3")
        .args(["-c", CLIENT, &net.server_v4.to_string(), &PORT.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = 3 + 5 + 4 + 6 + 7 + 2 + 3;
    let stored = wait_until(Duration::from_secs(15), || {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&cli(BIN, &["sessions", "--json", "--limit", "0"], &dir)).unwrap();
        list.iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= total
    });
    assert!(stored, "all {total} requests stored");
    // The inventory reaches the store at the latest when the daemon stops.
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    drop(api);

    let rows = by_operation(&endpoints(&dir, &[]));
    let calls: BTreeMap<(String, String), u64> = rows
        .iter()
        .map(|(k, r)| (k.clone(), r["calls"].as_u64().unwrap()))
        .collect();
    let op = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    let expected: BTreeMap<_, _> = [
        (op("POST", "/api/login"), 3),
        (op("GET", "/api/users/{id}"), 5),
        (op("GET", "/api/users/{id}/orders"), 4),
        (op("GET", "/api/products"), 6),
        (op("GET", "/api/products/{id}"), 7),
        (op("POST", "/api/orders"), 2),
        (op("GET", "/health"), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(calls, expected, "{rows:#?}");
    for (key, row) in &rows {
        let latency = &row["latency_ms"];
        for p in ["p50", "p95", "p99"] {
            assert!(
                latency[p].as_f64().is_some_and(|ms| ms > 0.0),
                "{key:?}: latency {p}: {row:#}"
            );
        }
        assert!(
            latency["p50"].as_f64() <= latency["p99"].as_f64(),
            "{key:?}: {row:#}"
        );
        assert_eq!(
            row["spec_status"],
            serde_json::Value::Null,
            "no spec configured"
        );
        assert!(row["last_seen"].is_string() && row["sessions"].as_u64() >= Some(1));
    }
    assert_eq!(rows[&op("POST", "/api/orders")]["status_classes"]["2xx"], 2);
    assert!(
        rows[&op("GET", "/api/users/{id}/orders")]["auth"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "jwt" || a == "bearer"),
        "{:#}",
        rows[&op("GET", "/api/users/{id}/orders")]
    );

    let spec = repo().join("xtask/demo/openapi.yaml");
    let spec = spec.to_str().unwrap();
    let compared = by_operation(&endpoints(&dir, &["--spec", spec]));
    let statuses: BTreeMap<(String, String), String> = compared
        .iter()
        .map(|(k, r)| (k.clone(), r["spec_status"].as_str().unwrap().to_owned()))
        .collect();
    let status = |s: &str| s.to_owned();
    let expected: BTreeMap<_, _> = [
        (op("POST", "/api/login"), status("documented")),
        (op("GET", "/api/users/{id}"), status("zombie")),
        (op("PUT", "/api/users/{id}"), status("orphan")),
        (op("GET", "/api/users/{id}/orders"), status("shadow")),
        (op("GET", "/api/products"), status("documented")),
        (op("GET", "/api/products/{id}"), status("documented")),
        (op("POST", "/api/orders"), status("documented")),
        (op("GET", "/health"), status("documented")),
    ]
    .into_iter()
    .collect();
    assert_eq!(statuses, expected, "{compared:#?}");
    assert_eq!(compared[&op("PUT", "/api/users/{id}")]["calls"], 0);
    let shadows = endpoints(&dir, &["--spec", spec, "--status", "shadow"]);
    assert_eq!(shadows.len(), 1, "{shadows:#?}");
    assert_eq!(shadows[0]["endpoint"], "/api/users/{id}/orders");

    // The table and the OpenAPI document come from the same rows.
    let table = cli(BIN, &["endpoints", "--spec", spec], &dir);
    assert!(
        table
            .lines()
            .any(|l| l.contains("/api/users/{id}/orders") && l.contains("shadow")),
        "{table}"
    );
    let document: serde_json::Value =
        serde_json::from_str(&cli(BIN, &["endpoints", "--openapi"], &dir)).unwrap();
    assert_eq!(document["openapi"], "3.1.0", "{document:#}");
    assert!(
        document["paths"]["/api/products/{id}"]["get"].is_object(),
        "{document:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

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

/// Drives every operation of an OpenAPI document (JSON) but the skipped ones against a server
/// that implements it, with concrete values: 8 distinct values per path parameter (integers,
/// realistic user names), 5 calls otherwise; query parameters, headers and bodies as the
/// document declares them; plus three undocumented routes. Shuffled (fixed seed), over one
/// keep-alive connection with a Host header of its own. Prints one JSON line per request:
/// method, uri, template (the document's path, or the undocumented route), kind (spec or
/// shadow), operation, deprecated, status.
const PETSTORE_CLIENT: &str = r##"
import http.client, json, random, re, sys
from urllib.parse import quote, urlencode
addr, port, spec_file, skip = sys.argv[1], int(sys.argv[2]), sys.argv[3], set(sys.argv[4].split(","))
spec = json.load(open(spec_file))
rng = random.Random(20261201)
USERS = ["theUser", "alice.smith", "bob_jones", "carol-w", "dave99", "eve.martin", "frank.miller",
         "grace_hopper", "heidi", "ivan.petrov", "judy-lee", "mallory", "oscar.wilde", "peggy_o"]
INTS = {"petId": [10, 11, 12, 77, 4021, 198772, 31337, 5], "orderId": [1, 2, 3, 5, 7, 8, 9, 10]}

def resolve(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        node = spec
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj

def example(schema, name=None, user="theUser"):
    schema = resolve(schema)
    t = schema.get("type")
    if t == "object" or "properties" in schema:
        return {k: example(v, k, user) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [example(schema.get("items", {}), name, user)]
    if name == "username":
        return user
    if name == "email":
        return user.replace("_", ".") + "@mailbox.example.org"
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    if t == "integer":
        return rng.randrange(1, 1000)
    if t == "boolean":
        return rng.random() < 0.5
    if schema.get("format") == "date-time":
        return "2026-11-%02dT10:00:00Z" % rng.randrange(1, 29)
    return schema.get("example", rng.choice(["doggie", "rex", "luna"]))

requests = []
for path, item in spec["paths"].items():
    for method, op in item.items():
        if method not in ("get", "put", "post", "delete", "patch") or op["operationId"] in skip:
            continue
        params = [resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        names = re.findall(r"\{([^}]+)\}", path)
        for k in range(8 if names else 5):
            user, uri = USERS[(k * 5 + len(path)) % len(USERS)], path
            for name in names:
                value = user if name == "username" else INTS[name][k]
                uri = uri.replace("{%s}" % name, quote(str(value), safe=""))
            query = []
            for p in params:
                if p.get("in") != "query":
                    continue
                schema = resolve(p.get("schema", {}))
                if schema.get("type") == "array":
                    items = resolve(schema.get("items", {}))
                    query += [(p["name"], v) for v in (items.get("enum") or ["tag1", "puppy"])[: 1 + k % 2]]
                elif schema.get("enum"):
                    query.append((p["name"], schema["enum"][k % len(schema["enum"])]))
                else:
                    query.append((p["name"], user if p["name"] == "username" else "s3cr3t-%d" % k))
            if query:
                uri += "?" + urlencode(query)
            headers = {"api_key": "special-key", "Authorization": "Bearer pst-0123456789abcdef"}
            body = None
            content = resolve(op.get("requestBody", {})).get("content", {})
            if "application/json" in content:
                body = json.dumps(example(content["application/json"]["schema"], user=user))
                headers["Content-Type"] = "application/json"
            elif "application/x-www-form-urlencoded" in content:
                body = urlencode({"name": rng.choice(["rex", "luna"]), "status": "sold"})
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            requests.append((method.upper(), uri, path, "spec", op["operationId"],
                             bool(op.get("deprecated")), headers, body))
for path, values in [("/internal/debug", [None] * 3), ("/pet/{id}/share", INTS["petId"][:6]),
                     ("/admin/users", [None] * 3)]:
    for v in values:
        uri = path if v is None else path.replace("{id}", str(v))
        requests.append(("GET", uri, path, "shadow", "shadow " + path, False, {}, None))
rng.shuffle(requests)
c = http.client.HTTPConnection(addr, port, timeout=30)
for method, uri, template, kind, operation, deprecated, headers, body in requests:
    c.request(method, uri, body=body, headers=dict(headers, Host="petstore.test"))
    r = c.getresponse()
    r.read()
    print(json.dumps({"method": method, "uri": uri, "template": template, "kind": kind,
                      "operation": operation, "deprecated": deprecated, "status": r.status}))
"##;

/// Some of the user names the Petstore client sends.
const USER_NAMES: &[&str] = &["/theUser", "/heidi", "/mallory", "/alice.smith", "/dave99"];

/// Operations the Petstore test never calls: its orphans.
const PETSTORE_ORPHANS: &[&str] = &["uploadFile", "createUsersWithListInput"];

/// Stoplight's Prism (`cargo xtask setup` installs it) mocking `spec` in the server namespace
/// on `port`, listening when `start` returns; stopped on drop.
struct Prism(std::process::Child);

impl Prism {
    fn start(net: &TestNet, spec: &Path, port: u16) -> Self {
        let prism = repo().join("target/frameworks/node/node_modules/.bin/prism");
        assert!(
            prism.exists(),
            "{} is missing: `cargo xtask setup` installs Stoplight's Prism (npm)",
            prism.display()
        );
        let child = TestNet::command(&net.server_ns, &prism)
            .args(["mock", "--host", "0.0.0.0", "--port", &port.to_string()])
            .arg(spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from((net.server_v4, port));
        let up = wait_until(Duration::from_secs(120), || {
            common::in_namespace(&net.client_ns, || {
                std::net::TcpStream::connect(addr).is_ok()
            })
        });
        assert!(up, "prism listens on {addr}");
        Self(child)
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request the Petstore client sent.
#[derive(serde::Deserialize)]
struct Sent {
    method: String,
    uri: String,
    template: String,
    kind: String,
    operation: String,
    deprecated: bool,
    status: u16,
}

/// Runs the Petstore client against the server, captured by a daemon started with `args` into
/// `dir`; the requests sent, once the daemon has stored them all and stopped.
fn capture_petstore(net: &TestNet, spec: &Path, dir: &Path, args: &[&str]) -> Vec<Sent> {
    let _ = std::fs::remove_dir_all(dir);
    let mut daemon = common::start_daemon_in(&net.server_ns, BIN, args, dir);
    let out = TestNet::command(&net.client_ns, "python3")
        .args([
            "-c",
            PETSTORE_CLIENT,
            &net.server_v4.to_string(),
            &PORT.to_string(),
        ])
        .arg(spec)
        .arg(PETSTORE_ORPHANS.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<Sent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored = wait_until(Duration::from_secs(20), || {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&cli(BIN, &["sessions", "--json", "--limit", "0"], dir)).unwrap();
        list.iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= sent.len() as u64
    });
    assert!(stored, "all {} requests stored", sent.len());
    sh("kill", &["-TERM", &daemon.id().to_string()]);
    assert!(daemon.wait().unwrap().success());
    sent
}

/// `/user/{username}` and `/user/{param}` alike: `{}` for every placeholder.
fn placeholders_unnamed(template: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in template.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// The rows of `endpoints --json` (with `args`) are the document's operations and the shadow
/// routes exactly as the client constructed them: every called operation one row under its
/// path with its calls, documented or (deprecated) zombie; each undocumented route a shadow row
/// with its calls; the never-called operations orphans; nothing else.
fn assert_rows_as_constructed(dir: &Path, args: &[&str], doc: &serde_json::Value, sent: &[Sent]) {
    let mut want: BTreeMap<(String, String), (String, u64)> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let calls = sent.iter().filter(|s| s.operation == id).count() as u64;
            let status = match (calls, op["deprecated"].as_bool() == Some(true)) {
                (0, _) => "orphan",
                (_, true) => "zombie",
                _ => "documented",
            };
            assert_eq!(calls == 0, PETSTORE_ORPHANS.contains(&id), "{id}");
            want.insert(
                (method.to_uppercase(), path.clone()),
                (status.to_owned(), calls),
            );
        }
    }
    for s in sent.iter().filter(|s| s.kind == "shadow") {
        let entry = want
            .entry((s.method.clone(), s.template.clone()))
            .or_insert(("shadow".to_owned(), 0));
        entry.1 += 1;
    }
    let rows = endpoints(dir, args);
    let got: BTreeMap<(String, String), (String, u64)> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["method"].as_str().unwrap().to_owned(),
                    r["endpoint"].as_str().unwrap().to_owned(),
                ),
                (
                    r["spec_status"].as_str().unwrap().to_owned(),
                    r["calls"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), rows.len(), "one row per operation: {rows:#?}");
    assert_eq!(got, want);
}

/// The inventory against a public OpenAPI document no one here wrote (the Swagger Petstore,
/// tests/data/openapi/petstore.json, with `servers` at `/`) served by a real spec-driven mock
/// server (Stoplight's Prism), driven over every operation but two with concrete values, plus
/// three undocumented routes; the deprecated `findPetsByTags` is called too. Captured live
/// twice: with the document configured, every request maps to its operation and shadow,
/// zombie and orphan come out exactly as constructed; without it, the learned templates equal
/// the document's paths for at least 98 % of the requests, and `endpoints --spec` compares as
/// well.
#[test]
fn petstore_served_by_prism_maps_every_request_and_learns_its_templates() {
    let net = TestNet::new();
    let dir = std::env::temp_dir().join(format!("apis-petstore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Prism serves the paths at the root: the copy says so.
    let mut doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/data/openapi/petstore.json")).unwrap(),
    )
    .unwrap();
    doc["servers"] = serde_json::json!([{ "url": "/" }]);
    let spec = dir.join("petstore.json");
    std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
    let config = dir.join("apisessions.toml");
    std::fs::write(
        &config,
        format!(
            "[[api.specs]]\nhost = \"petstore.test\"\nfile = \"{}\"\n",
            spec.display()
        ),
    )
    .unwrap();
    let _prism = Prism::start(&net, &spec, PORT);
    let port = PORT.to_string();
    let capture = ["--iface", &net.server_if, "--port", &port];

    // With the document configured: each request's record names its operation.
    let with_spec = dir.join("with-spec");
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(capture);
    let sent = capture_petstore(&net, &spec, &with_spec, &args);
    let statuses: BTreeMap<u16, usize> = sent.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.status).or_default() += 1;
        m
    });
    println!(
        "petstore: {} requests sent, answers {statuses:?}",
        sent.len()
    );
    // Prism answers as the document says (some operations declare only errors, `DELETE
    // /user/{username}`: 400 and 404), the undocumented routes with 404.
    for s in &sent {
        let declared = match s.kind.as_str() {
            "shadow" => vec!["404".to_owned()],
            _ => doc["paths"][&s.template][s.method.to_lowercase()]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect(),
        };
        assert!(
            declared.contains(&s.status.to_string()) || declared.contains(&"default".to_owned()),
            "{} {} answered {}, not one of {declared:?}",
            s.method,
            s.uri,
            s.status
        );
    }
    let mut records: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    for e in common::exported(BIN, &with_spec) {
        let path = e["uri"]
            .as_str()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        records
            .entry((e["method"].as_str().unwrap().to_owned(), path))
            .or_default()
            .push(e);
    }
    for s in &sent {
        let path = s.uri.split('?').next().unwrap().to_owned();
        let e = records
            .get_mut(&(s.method.clone(), path))
            .and_then(Vec::pop)
            .unwrap_or_else(|| panic!("{} {} not exported", s.method, s.uri));
        let (endpoint, status) = match (s.kind.as_str(), s.deprecated) {
            ("shadow", _) => (placeholders_unnamed(&s.template), "shadow"),
            (_, true) => (s.template.clone(), "zombie"),
            _ => (s.template.clone(), "documented"),
        };
        let got = e["endpoint"].as_str().unwrap();
        let got = if s.kind == "shadow" {
            placeholders_unnamed(got)
        } else {
            got.to_owned()
        };
        assert_eq!(
            (got.as_str(), e["spec_status"].as_str()),
            (endpoint.as_str(), Some(status)),
            "{} {} ({})",
            s.method,
            s.uri,
            s.operation
        );
    }
    assert!(records.values().all(Vec::is_empty), "exported once each");
    assert_rows_as_constructed(
        &with_spec,
        &["--config", config.to_str().unwrap()],
        &doc,
        &sent,
    );

    // Without it: the learner alone, on the same traffic.
    let learned = dir.join("learned");
    let sent = capture_petstore(&net, &spec, &learned, &capture);
    let mut exported: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for e in common::exported(BIN, &learned) {
        let path = e["uri"]
            .as_str()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        exported
            .entry((e["method"].as_str().unwrap().to_owned(), path))
            .or_default()
            .push(e["endpoint"].as_str().unwrap().to_owned());
    }
    let documented: Vec<&Sent> = sent.iter().filter(|s| s.kind == "spec").collect();
    let mut misses = BTreeMap::<String, usize>::new();
    let right = documented
        .iter()
        .filter(|s| {
            let path = s.uri.split('?').next().unwrap().to_owned();
            let endpoint = exported
                .get_mut(&(s.method.clone(), path))
                .and_then(Vec::pop)
                .unwrap_or_default();
            let ok = placeholders_unnamed(&endpoint) == placeholders_unnamed(&s.template);
            if !ok {
                *misses
                    .entry(format!("{} {} as {endpoint}", s.method, s.template))
                    .or_default() += 1;
            }
            ok
        })
        .count();
    let share = right as f64 / documented.len() as f64;
    println!(
        "petstore without a spec: {right}/{} requests ({:.1} %) have the document's path as their learned template; misses {misses:?}",
        documented.len(),
        share * 100.0
    );
    assert!(share >= 0.98, "{misses:?}");
    assert_rows_as_constructed(&learned, &["--spec", spec.to_str().unwrap()], &doc, &sent);
    // The session (one client) lists the learned templates only, and is found by them and by a
    // path that reads as one, though its first user names were written literally.
    for wanted in ["/user/{param}", "/user/heidi"] {
        let found: Vec<serde_json::Value> = serde_json::from_str(&cli(
            BIN,
            &["sessions", "--json", "--endpoint", wanted],
            &learned,
        ))
        .unwrap();
        assert_eq!(found.len(), 1, "sessions --endpoint {wanted}");
        let listed: Vec<&str> = found[0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"].as_str().unwrap())
            .collect();
        assert!(listed.contains(&"GET /user/{param}"), "{listed:?}");
        assert!(
            !listed
                .iter()
                .any(|e| USER_NAMES.iter().any(|u| e.ends_with(u))),
            "{listed:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

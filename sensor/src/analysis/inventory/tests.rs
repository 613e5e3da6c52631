//! The inventory engine end to end over synthesised exchanges, and against the public Swagger
//! Petstore document (tests/data/openapi, see its README).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{facts::tests::exchange, *};
use crate::test_rng::Rng;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/openapi")
        .join(name)
}

fn inventory() -> Inventory {
    Inventory::new(InventoryConfig::default(), Vec::new())
}

#[test]
fn rows_count_what_was_seen() {
    let mut inv = inventory();
    let host = [("Host", "shop.test")];
    for i in 0..30u64 {
        let e = exchange(
            "GET",
            &format!("/users/{i}?expand=true"),
            &host,
            b"",
            if i % 10 == 0 { 500 } else { 200 },
            br#"{"email":"jane@example.com"}"#,
            1_700_000_000_000_000_000 + i * 1_000_000_000,
            10 + i,
        );
        let verdict = inv.observe(&e, &format!("s{}", i % 3)).unwrap();
        assert_eq!(verdict.template, "/users/{id}");
        assert_eq!(verdict.spec_status, None);
        assert!(!verdict.slow);
    }
    let rows = inv.rows();
    assert_eq!(rows.len(), 1);
    let row = serde_json::to_value(&rows[0]).unwrap();
    for key in [
        "host",
        "method",
        "endpoint",
        "calls",
        "sessions",
        "statuses",
        "latency_ms",
        "auth",
        "sensitive",
        "params",
        "spec_status",
        "risk",
        "first_seen",
        "last_seen",
    ] {
        assert!(row.get(key).is_some(), "{key} missing from {row}");
    }
    assert_eq!(row["host"], "shop.test");
    assert_eq!(row["endpoint"], "/users/{id}");
    assert_eq!(row["calls"], 30);
    assert_eq!(row["sessions"], 3);
    assert_eq!(
        row["statuses"],
        json!([{"status": 200, "count": 27}, {"status": 500, "count": 3}])
    );
    assert_eq!(row["status_classes"]["5xx"], 3);
    assert_eq!(row["auth"], json!(["none"]));
    assert_eq!(row["sensitive"], json!(["email"]));
    assert_eq!(row["sensitive_response"], json!(["email"]));
    assert_eq!(
        row["params"],
        json!([{"name": "expand", "in": "query", "types": ["boolean"], "count": 30}])
    );
    assert_eq!(row["spec_status"], Value::Null);
    assert_eq!(row["first_seen"], "2023-11-14T22:13:20.000000Z");
    // Durations 10..=39 ms: percentiles within the sketch's 1 %.
    let p50 = row["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = row["latency_ms"]["p99"].as_f64().unwrap();
    assert!((23.5..=25.5).contains(&p50), "{p50}");
    assert!((37.5..=39.5).contains(&p99), "{p99}");
    // Personal data out (3), no authentication (2), 10 % server errors (1).
    assert_eq!(row["risk"], 6, "{}", row["risk_reasons"]);
}

#[test]
fn busy_endpoints_have_their_bodies_sampled_and_a_late_kind_is_still_found() {
    let mut inv = inventory();
    let host = [("Host", "shop.test")];
    let total = BODY_SCAN_WARMUP + 4 * BODY_SCAN_EVERY;
    // The first exchanges carry no personal data; the last few dozen carry an e-mail address
    // in the response body and a card number in the request body.
    let late = BODY_SCAN_WARMUP + BODY_SCAN_EVERY / 2;
    for i in 0..total {
        let (request, response): (&[u8], &[u8]) = match i >= late {
            true => (
                br#"{"card":"4111 1111 1111 1111"}"#,
                br#"{"email":"jane@example.com"}"#,
            ),
            false => (br#"{"card":"none"}"#, br#"{"email":"none"}"#),
        };
        let e = exchange(
            "POST",
            "/orders",
            &host,
            request,
            200,
            response,
            1_700_000_000_000_000_000 + i * 1_000_000,
            5,
        );
        inv.observe(&e, "s1").unwrap();
    }
    // Exchanges number 0..WARMUP are scanned whole, then every BODY_SCAN_EVERY-th.
    let scanned = BODY_SCAN_WARMUP + (total - BODY_SCAN_WARMUP).div_ceil(BODY_SCAN_EVERY);
    assert_eq!(inv.counters.body_scans_sampled_out, total - scanned);
    let row = serde_json::to_value(&inv.rows()[0]).unwrap();
    assert_eq!(row["calls"], total);
    assert_eq!(row["sensitive_response"], json!(["email"]));
    assert_eq!(row["sensitive_request"], json!(["payment_card"]));
    // Parameters are counted on every exchange, sampled or not.
    assert_eq!(row["params"][0]["count"], total);
}

#[test]
fn slow_is_judged_against_the_endpoints_own_p99_after_enough_samples() {
    let mut inv = inventory();
    let observe = |inv: &mut Inventory, ms: u64| {
        inv.observe(&exchange("GET", "/report", &[], b"", 200, b"", 0, ms), "s")
            .unwrap()
            .slow
    };
    // Before enough samples nothing is slow, however long.
    assert!(!observe(&mut inv, 5_000));
    for i in 0..60 {
        assert!(!observe(&mut inv, 150 + i % 20));
    }
    assert!(observe(&mut inv, 1_000), "far above p99");
    assert!(!observe(&mut inv, 160), "within the usual");

    // Fast endpoints: above p99 but under the floor is not slow.
    let mut inv = inventory();
    for _ in 0..60 {
        observe(&mut inv, 2);
    }
    assert!(!observe(&mut inv, 50));
    assert_eq!(inv.rows()[0].slow, 0);
}

#[test]
fn aggregates_persist_and_merge() {
    let feed = |inv: &mut Inventory, range: std::ops::Range<u64>| {
        for i in range {
            let e = exchange(
                if i % 2 == 0 { "GET" } else { "POST" },
                &format!("/items/{}", i % 7),
                &[("Content-Type", "application/json")],
                format!(r#"{{"n":{i}}}"#).as_bytes(),
                200 + (i % 3) as u16,
                b"",
                i * 1_000_000,
                i % 50,
            );
            inv.observe(&e, &format!("session-{}", i % 40)).unwrap();
        }
    };
    let mut whole = inventory();
    feed(&mut whole, 0..400);
    let (mut first, mut second) = (inventory(), inventory());
    feed(&mut first, 0..150);
    feed(&mut second, 150..400);

    // Through the store's encoding (postcard) and back.
    let bytes = postcard::to_allocvec(&second.state()).unwrap();
    let restored: InventoryState = postcard::from_bytes(&bytes).unwrap();
    first.merge(&restored);
    let (a, b) = (whole.rows(), first.rows());
    assert_eq!(a.len(), 2);
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap(),
        "merged halves equal the whole"
    );
    assert_eq!(a[0].sessions, 20);
    // JSON too (a store may keep it readable).
    let text = serde_json::to_string(&whole.state()).unwrap();
    let again: InventoryState = serde_json::from_str(&text).unwrap();
    assert_eq!(again.aggregate.endpoints.len(), 2);
}

#[test]
fn endpoints_are_bounded_and_counted() {
    let config = InventoryConfig {
        max_endpoints: 3,
        ..InventoryConfig::default()
    };
    let mut inv = Inventory::new(config, Vec::new());
    // Ten endpoints of different lengths (ten values at one position would be learned as one).
    for i in 0..10 {
        inv.observe(
            &exchange("GET", &"/r".repeat(i + 1), &[], b"", 200, b"", 0, 1),
            "s",
        );
    }
    assert_eq!(inv.rows().len(), 3);
    assert_eq!(inv.counters().endpoints_untracked, 7);
    let mut no_request = exchange("GET", "/", &[], b"", 200, b"", 0, 1);
    no_request.request = None;
    assert!(inv.observe(&no_request, "s").is_none());
    assert_eq!(inv.counters().exchanges_without_request, 1);
    let snapshot = inv.counters().snapshot();
    assert!(snapshot.contains(&("endpoints_untracked", 7)));
}

/// Concrete requests for every operation of a spec document, values chosen from each
/// parameter's name and schema.
struct Traffic {
    rng: Rng,
}

impl Traffic {
    fn user_name(&mut self) -> String {
        const FIRST: &[&str] = &[
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
            "mallory", "olivia",
        ];
        const LAST: &[&str] = &[
            "smith", "jones", "brown", "taylor", "wilson", "evans", "thomas", "roberts",
        ];
        let first = FIRST[self.rng.below(FIRST.len())];
        let last = LAST[self.rng.below(LAST.len())];
        match self.rng.below(4) {
            0 => format!("{first}.{last}"),
            1 => format!("{first}_{last}{}", self.rng.below(100)),
            2 => format!("{first}{}", self.rng.below(1000)),
            _ => format!("{}{last}", &first[..1]),
        }
    }

    fn value(&mut self, name: &str, schema: &Value) -> String {
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            return options[self.rng.below(options.len())]
                .as_str()
                .unwrap_or("x")
                .to_owned();
        }
        if name.to_ascii_lowercase().contains("username") {
            return self.user_name();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("integer") => (1 + self.rng.below(9999)).to_string(),
            Some("array") => self.value(name, &schema["items"]),
            _ => ["sunny", "tabby", "red", "fluffy"][self.rng.below(4)].to_owned(),
        }
    }

    /// The URI of a request to `path` (a spec template) under `base`, with its parameters.
    fn uri(&mut self, base: &str, path: &str, operation: &Value) -> String {
        let mut uri = format!("{base}{path}");
        let mut query = Vec::new();
        for p in operation
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = p["name"].as_str().unwrap();
            let value = self.value(name, &p["schema"]);
            match p["in"].as_str() {
                Some("path") => uri = uri.replace(&format!("{{{name}}}"), &value),
                Some("query") => query.push(format!("{name}={value}")),
                _ => {}
            }
        }
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }
        uri
    }
}

fn sample_body(path: &str) -> &'static [u8] {
    if path.starts_with("/pet") {
        br#"{"id":10,"name":"doggie","category":{"id":1,"name":"Dogs"},"photoUrls":["u"],"tags":[{"id":1,"name":"t"}],"status":"available"}"#
    } else if path.starts_with("/store") {
        br#"{"id":1,"petId":10,"quantity":1,"shipDate":"2024-01-15T10:00:00Z","status":"placed","complete":false}"#
    } else if path.ends_with("createWithArray") || path.ends_with("createWithList") {
        br#"[{"id":1,"username":"a","email":"a@example.com"}]"#
    } else {
        br#"{"id":1,"username":"theUser","firstName":"John","email":"john@email.com","password":"12345","phone":"+1 415 555 2671"}"#
    }
}

struct PlannedRequest {
    method: String,
    uri: String,
    /// The spec's path for the operation (None for undocumented routes).
    spec_path: Option<String>,
    body: &'static [u8],
}

/// Every operation of the Petstore called `per_operation` times in a shuffled order, except
/// those in `uncalled`; plus undocumented routes.
fn petstore_traffic(
    doc: &Value,
    per_operation: usize,
    uncalled: &[(&str, &str)],
) -> Vec<PlannedRequest> {
    let mut traffic = Traffic {
        rng: Rng(0x5eed_1234_abcd_0001),
    };
    let mut planned = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str())
                || uncalled.contains(&(method.as_str(), path.as_str()))
            {
                continue;
            }
            for _ in 0..per_operation {
                planned.push(PlannedRequest {
                    method: method.to_ascii_uppercase(),
                    uri: traffic.uri("/v2", path, operation),
                    spec_path: Some(format!("/v2{path}")),
                    body: if operation.get("requestBody").is_some() {
                        sample_body(path)
                    } else {
                        b""
                    },
                });
            }
        }
    }
    for (method, uri) in [
        ("GET", "/v2/admin/debug"),
        ("POST", "/v2/pet/7/clone"),
        ("PATCH", "/v2/store/order/3"),
        ("GET", "/internal/metrics"),
        ("GET", "/v2/user/alice.smith/friends"),
    ] {
        for _ in 0..5 {
            planned.push(PlannedRequest {
                method: method.to_owned(),
                uri: uri.to_owned(),
                spec_path: None,
                body: b"",
            });
        }
    }
    // Fisher-Yates with the test's generator: interleaved like real traffic, and repeatable.
    for i in (1..planned.len()).rev() {
        let j = traffic.rng.below(i + 1);
        planned.swap(i, j);
    }
    planned
}

const PETSTORE_HOST: &str = "petstore.swagger.io";

fn petstore_exchanges(planned: &[PlannedRequest]) -> Vec<Exchange> {
    planned
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let headers: &[(&str, &str)] = &[
                ("Host", PETSTORE_HOST),
                ("Content-Type", "application/json"),
            ];
            exchange(
                &p.method,
                &p.uri,
                headers,
                p.body,
                200,
                b"{}",
                i as u64 * 1_000_000,
                5,
            )
        })
        .collect()
}

/// `/v2/pet/{petId}` and `/v2/pet/{id}` name the same template.
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
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn specs_cover_their_host_any_port_or_every_host() {
    let specs = load_specs([
        ("API.example.com", data("petstore.yaml").as_path()),
        ("admin.example.com:8443", data("petstore.json").as_path()),
    ])
    .unwrap();
    let mut inv = Inventory::new(InventoryConfig::default(), specs);
    let status =
        |inv: &mut Inventory, host: &str| inv.template(host, "GET", "/v2/store/inventory").1;
    assert_eq!(
        status(&mut inv, "api.example.com:8080"),
        Some(SpecStatus::Documented)
    );
    assert_eq!(
        status(&mut inv, "api.example.com"),
        Some(SpecStatus::Documented)
    );
    assert_eq!(
        status(&mut inv, "admin.example.com:8443"),
        Some(SpecStatus::Documented)
    );
    assert_eq!(status(&mut inv, "admin.example.com"), None);
    assert_eq!(status(&mut inv, "api.example.com.evil"), None);
    let every = load_specs([("*", data("petstore.yaml").as_path())]).unwrap();
    let mut inv = Inventory::new(InventoryConfig::default(), every);
    assert_eq!(status(&mut inv, "anything"), Some(SpecStatus::Documented));
    let missing = load_specs([("h", Path::new("/nonexistent/spec.yaml"))]).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/spec.yaml"),
        "{missing}"
    );
}

#[test]
fn petstore_yaml_and_json_agree() {
    let json = Spec::load(&data("petstore.json")).unwrap();
    let yaml = Spec::load(&data("petstore.yaml")).unwrap();
    assert_eq!(json.operations, yaml.operations);
    assert_eq!(json.base_paths, ["/v2"]);
    assert_eq!(json.operations.len(), 20);
    // The same API as Swagger 2.0 and as OpenAPI 3.1: the same operations under the same base.
    for (file, version) in [
        ("petstore-swagger2.yaml", spec::SpecVersion::Swagger2),
        ("petstore-3.1.yaml", spec::SpecVersion::OpenApi31),
    ] {
        let other = Spec::load(&data(file)).unwrap();
        assert_eq!(other.version, version, "{file}");
        assert_eq!(other.base_paths, ["/v2"], "{file}");
        let ops = |s: &Spec| {
            let mut v: Vec<_> = s
                .operations
                .iter()
                .map(|o| format!("{} {} {}", o.method, o.path, o.deprecated))
                .collect();
            v.sort();
            v
        };
        assert_eq!(ops(&other), ops(&json), "{file}");
    }
}

#[test]
fn petstore_operations_shadow_zombie_and_orphan_exactly_as_constructed() {
    // A copy of the public document with one more operation marked deprecated (it has one:
    // GET /pet/findByTags).
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(data("petstore.json")).unwrap()).unwrap();
    assert_eq!(
        doc["paths"]["/pet/findByTags"]["get"]["deprecated"],
        json!(true)
    );
    doc["paths"]["/pet/{petId}"]["delete"]["deprecated"] = json!(true);
    let spec = Spec::parse(Path::new("petstore-deprecated.json"), &doc.to_string()).unwrap();
    let uncalled = [("post", "/user/createWithList")];
    let planned = petstore_traffic(&doc, 30, &uncalled);
    let exchanges = petstore_exchanges(&planned);

    let mut inv = Inventory::new(
        InventoryConfig::default(),
        vec![HostSpec {
            host: PETSTORE_HOST.to_owned(),
            spec,
        }],
    );
    let mut wrong = Vec::new();
    for (p, e) in planned.iter().zip(&exchanges) {
        let verdict = inv.observe(e, "s").unwrap();
        let expected_status = match (&p.spec_path, p.method.as_str()) {
            (None, _) => SpecStatus::Shadow,
            (Some(path), "DELETE") if path == "/v2/pet/{petId}" => SpecStatus::Zombie,
            (Some(path), "GET") if path == "/v2/pet/findByTags" => SpecStatus::Zombie,
            _ => SpecStatus::Documented,
        };
        let expected_template = p.spec_path.clone();
        let template_ok = expected_template.is_none_or(|t| t == verdict.template);
        if verdict.spec_status != Some(expected_status) || !template_ok {
            wrong.push(format!(
                "{} {} -> {} {:?}",
                p.method, p.uri, verdict.template, verdict.spec_status
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} mapped wrongly: {wrong:#?}",
        wrong.len(),
        planned.len()
    );

    let rows = inv.rows();
    let by_status = |s: SpecStatus| {
        let mut v: Vec<String> = rows
            .iter()
            .filter(|r| r.spec_status == Some(s))
            .map(|r| format!("{} {}", r.method, r.endpoint))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        by_status(SpecStatus::Orphan),
        ["POST /v2/user/createWithList"]
    );
    assert_eq!(
        by_status(SpecStatus::Zombie),
        ["DELETE /v2/pet/{petId}", "GET /v2/pet/findByTags"]
    );
    assert_eq!(
        by_status(SpecStatus::Shadow),
        [
            "GET /internal/metrics",
            "GET /v2/admin/debug",
            "GET /v2/user/alice.smith/friends",
            "PATCH /v2/store/order/{id}",
            "POST /v2/pet/{id}/clone",
        ]
    );
    assert_eq!(by_status(SpecStatus::Documented).len(), 17);
    let zombie = rows
        .iter()
        .find(|r| r.spec_status == Some(SpecStatus::Zombie))
        .unwrap();
    assert!(zombie.risk_reasons.iter().any(|r| r.starts_with("zombie")));
}

#[test]
fn petstore_templating_without_a_spec() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(data("petstore.json")).unwrap()).unwrap();
    let planned = petstore_traffic(&doc, 30, &[]);
    let exchanges = petstore_exchanges(&planned);
    let mut inv = inventory();
    let mut streaming = Vec::new();
    for e in &exchanges {
        streaming.push(inv.observe(e, "s").unwrap().template);
    }
    let documented: Vec<(usize, &PlannedRequest)> = planned
        .iter()
        .enumerate()
        .filter(|(_, p)| p.spec_path.is_some())
        .collect();
    let share = |templates: &dyn Fn(usize, &PlannedRequest) -> String| {
        let mut misses = BTreeMap::<String, usize>::new();
        let hits = documented
            .iter()
            .filter(|(i, p)| {
                let learned = templates(*i, p);
                let ok = placeholders_unnamed(&learned)
                    == placeholders_unnamed(p.spec_path.as_deref().unwrap());
                if !ok {
                    *misses.entry(format!("{} {learned}", p.method)).or_default() += 1;
                }
                ok
            })
            .count();
        (hits as f64 / documented.len() as f64, misses)
    };
    let (at_the_time, early) = share(&|i, _| streaming[i].clone());
    let (in_the_inventory, misses) =
        share(&|i, p| inv.learner.resolve(PETSTORE_HOST, &p.method, &streaming[i]));
    println!(
        "petstore templating without a spec, {} requests: {:.1} % of templates equal the spec's path as written at the time, {:.1} % in the inventory (rows regrouped)",
        documented.len(),
        at_the_time * 100.0,
        in_the_inventory * 100.0
    );
    println!("misses at the time: {early:?}");
    assert!(in_the_inventory >= 0.98, "{misses:?}");

    // The rows: one per operation, whatever the user names.
    let rows = inv.rows();
    let users: Vec<_> = rows
        .iter()
        .filter(|r| r.endpoint.starts_with("/v2/user/"))
        .map(|r| format!("{} {}", r.method, r.endpoint))
        .collect();
    assert_eq!(
        users,
        [
            "GET /v2/user/alice.smith/friends",
            "POST /v2/user/createWithArray",
            "POST /v2/user/createWithList",
            "GET /v2/user/login",
            "GET /v2/user/logout",
            "DELETE /v2/user/{param}",
            "GET /v2/user/{param}",
            "PUT /v2/user/{param}",
        ]
    );
}

#[test]
fn discovered_openapi_validates_against_the_official_schema() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(data("petstore.json")).unwrap()).unwrap();
    let planned = petstore_traffic(&doc, 20, &[]);
    let mut inv = inventory();
    for e in petstore_exchanges(&planned) {
        inv.observe(&e, "s");
    }
    let out = openapi_out::document(&inv.rows(), Some(PETSTORE_HOST));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(data("openapi-3.1-schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&out)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{out:#}");

    // What it says: path parameters, query parameters with types, bodies, response codes.
    let pet = &out["paths"]["/v2/pet/{id}"];
    assert_eq!(
        pet["get"]["parameters"][0],
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
    );
    assert_eq!(
        pet["get"]["responses"]["200"]["description"],
        "Seen 20 times"
    );
    let login = &out["paths"]["/v2/user/login"]["get"]["parameters"];
    assert!(
        login
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "password" && p["in"] == "query")
    );
    let body = &out["paths"]["/v2/store/order"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        body["properties"]["shipDate"],
        json!({"type": "string", "format": "date-time"})
    );
    assert_eq!(body["properties"]["quantity"], json!({"type": "integer"}));
    // The validator does reject a broken document.
    let mut broken = out.clone();
    broken["paths"]["/v2/pet/{id}"]["get"]["responses"] = json!("none");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn any_input_is_taken_without_panics() {
    let mut rng = Rng(0xdead_beef_0bad_f00d);
    let mut inv = Inventory::new(
        InventoryConfig::default(),
        vec![HostSpec {
            host: "h".to_owned(),
            spec: Spec::load(&data("petstore.yaml")).unwrap(),
        }],
    );
    let alphabet = b"/{}?&=.%-_:@aZ09\xff\xc3\xa9 \"[]\\#";
    for i in 0..3000 {
        let len = rng.below(80);
        let uri: String = String::from_utf8_lossy(
            &(0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect::<Vec<_>>(),
        )
        .into_owned();
        let body_len = rng.below(300);
        let body = if i % 2 == 0 {
            rng.bytes(body_len)
        } else {
            // JSON-ish noise.
            (0..body_len)
                .map(|_| {
                    let noise = b"{}[]\":,0123456789.-eEtruefalsnl@ ";
                    noise[rng.below(noise.len())]
                })
                .collect()
        };
        let host = if i % 3 == 0 { "h" } else { "other" };
        let content_type = [
            "application/json",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
        ][i % 4];
        let headers = [
            ("Host", host),
            ("Content-Type", content_type),
            ("Authorization", "Bearer eyJ.eyJ."),
        ];
        let e = exchange(
            "POST",
            &uri,
            &headers,
            &body,
            200,
            &body,
            i as u64,
            (i % 7) as u64,
        );
        inv.observe(&e, "s");
    }
    let rows = inv.rows();
    assert!(!rows.is_empty());
    let doc = openapi_out::document(&rows, None);
    assert!(doc["paths"].is_object());
}

/// Throughput of the sensitive-data scan and of the facts of one exchange; run with
/// `cargo test --release -p apisessions --lib inventory::tests::scan_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn scan_throughput() {
    let mut body = String::from("[");
    while body.len() < 16 * 1024 {
        body.push_str(r#"{"id":12345,"name":"Widget deluxe","price":19.99,"created":"2024-01-15T10:00:00Z","tags":["a","b"],"owner":{"id":"550e8400-e29b-41d4-a716-446655440000","active":true}},"#);
    }
    body.push_str("{}]");
    let mut scanner = Scanner::new();
    let rounds = 2000;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(scanner.scan_text(body.as_bytes()));
    }
    let elapsed = start.elapsed();
    println!(
        "scan: {} KiB body in {:.1} us, {:.0} MiB/s",
        body.len() / 1024,
        elapsed.as_secs_f64() * 1e6 / f64::from(rounds),
        (body.len() * rounds as usize) as f64 / elapsed.as_secs_f64() / (1 << 20) as f64
    );
    let e = exchange(
        "POST",
        "/items?x=1",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        200,
        body.as_bytes(),
        0,
        3,
    );
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(ExchangeFacts::from_exchange(&e, &mut scanner));
    }
    println!(
        "facts of an exchange with 16 KiB JSON request and response: {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    );
}

#[test]
fn a_spec_given_later_names_the_rows_it_documents_and_only_they_are_orphans() {
    let mut learned = inventory();
    let host = [("Host", "shop.test")];
    for (i, path) in ["/users/1", "/users/2", "/users/ann", "/internal/x"]
        .iter()
        .enumerate()
    {
        let e = exchange(
            "GET",
            path,
            &host,
            b"",
            200,
            b"",
            1_700_000_000 + i as u64,
            5,
        );
        learned.observe(&e, "s").unwrap();
    }
    let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /users/{userId}:\n    get:\n      responses: {'200': {description: ok}}\n  /users/{userId}/orders:\n    get:\n      responses: {'200': {description: ok}}\n";
    let spec = Spec::parse(Path::new("t.yaml"), text).unwrap();
    let mut compared = Inventory::new(
        InventoryConfig::default(),
        vec![HostSpec {
            host: "*".to_owned(),
            spec,
        }],
    );
    compared.merge(&learned.state());
    let rows: Vec<(String, u64, Option<SpecStatus>)> = compared
        .rows()
        .into_iter()
        .map(|r| {
            (
                format!("{} {} {}", r.host, r.method, r.endpoint),
                r.calls,
                r.spec_status,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "* GET /users/{userId}/orders".to_owned(),
                0,
                Some(SpecStatus::Orphan)
            ),
            (
                "shop.test GET /internal/x".to_owned(),
                1,
                Some(SpecStatus::Shadow)
            ),
            (
                "shop.test GET /users/{userId}".to_owned(),
                3,
                Some(SpecStatus::Documented)
            ),
        ]
    );
}

/// What `export`, `show` and `sessions` read: the records written before a position was learned
/// read as the learned template, spec templates as they are, and a session's endpoint counts
/// merge under it.
#[test]
fn readers_resolve_what_was_written_before_the_learner_knew() {
    let mut inv = inventory();
    let host = [("Host", "Shop.test:8080")];
    let names = [
        "theUser",
        "heidi",
        "mallory",
        "carol-w",
        "bob_jones",
        "judy-lee",
    ];
    let written: Vec<String> = names
        .iter()
        .map(|name| {
            let e = exchange("PUT", &format!("/user/{name}"), &host, b"", 200, b"", 0, 1);
            inv.observe(&e, "s").unwrap().template
        })
        .collect();
    assert_eq!(written[0], "/user/theUser");
    assert_eq!(written[5], "/user/{param}");
    let bytes = inv.state().encode().unwrap();
    let resolver = EndpointResolver::new(&InventoryConfig::default(), Some(&bytes)).unwrap();

    let mut record = StoredExchange {
        method: Some("PUT".into()),
        host: Some("Shop.test:8080".into()),
        uri: Some("/user/theUser".into()),
        endpoint: Some(written[0].clone()),
        ..Default::default()
    };
    resolver.record(&mut record);
    assert_eq!(record.endpoint.as_deref(), Some("/user/{param}"));
    // Another method's position was not learned; a spec's template is the spec's.
    let mut get = StoredExchange {
        method: Some("GET".into()),
        endpoint: Some("/user/theUser".into()),
        ..record.clone()
    };
    resolver.record(&mut get);
    assert_eq!(get.endpoint.as_deref(), Some("/user/theUser"));
    let mut documented = StoredExchange {
        endpoint: Some("/user/{username}".into()),
        spec_status: Some(SpecStatus::Documented),
        ..record.clone()
    };
    resolver.record(&mut documented);
    assert_eq!(documented.endpoint.as_deref(), Some("/user/{username}"));

    let mut summary = SessionSummary {
        hosts: vec!["Shop.test:8080".into()],
        endpoints: vec![
            ("PUT /user/theUser".into(), 1),
            ("PUT /user/heidi".into(), 2),
            ("PUT /user/{param}".into(), 3),
            ("GET /user/theUser".into(), 1),
        ],
        ..SessionSummary::default()
    };
    assert!(resolver.touches(&summary, "/user/{param}"));
    assert!(
        resolver.touches(&summary, "/user/mallory"),
        "a path reads as its template"
    );
    assert!(!resolver.touches(&summary, "/order/{param}"));
    assert_eq!(resolver.lookup_prefix("/user/{param}"), "/user/");
    assert_eq!(resolver.lookup_prefix("/user/theUser"), "/user/");
    assert_eq!(resolver.lookup_prefix("/order/x"), "/order/x");
    resolver.summary(&mut summary);
    assert_eq!(
        summary.endpoints,
        [
            ("PUT /user/{param}".to_owned(), 6),
            ("GET /user/theUser".to_owned(), 1)
        ]
    );
    // No state: as written.
    let none = EndpointResolver::new(&InventoryConfig::default(), None).unwrap();
    let mut again = StoredExchange {
        endpoint: Some("/user/theUser".into()),
        ..record
    };
    none.record(&mut again);
    assert_eq!(again.endpoint.as_deref(), Some("/user/theUser"));
}

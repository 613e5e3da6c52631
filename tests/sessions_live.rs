//! Sessions end to end: the `apisessions run` daemon on a real veth next to nginx, six clients
//! on one IP told apart only by their keys, a reader in another process while the daemon
//! writes, and no raw secret anywhere in the data directory afterwards. Then users behind one
//! address and browser against a real app that hands out session cookies (`data/session_app.py`):
//! six clients logging in, a lone user, cookie refreshes, and two headless Chromium profiles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use base64::Engine as _;
use common::{
    Nginx, TestNet, cli, counter, exported, files_containing, in_namespace, request, sh,
    start_daemon, wait_until,
};

const PORT: u16 = 8080;

const COOKIE_SECRET: &str = "SECRETCOOKIE7f3a91";
const JWT_SIGNATURE: &str = "SECRETJWTSIGc4d2e8";
const OPAQUE_SECRET: &str = "SECRETOPAQUE5b9c17";
const API_KEY_SECRET: &str = "SECRETAPIKEY2e6f40";
const QUERY_SECRET: &str = "SECRETQUERYa81d3c";
const PASSWORD_SECRET: &str = "SECRETPASSWORD93b7";

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");

fn bin() -> Command {
    Command::new(BIN)
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
    serde_json::from_str(&cli(BIN, &["sessions", "--json", "--limit", "0"], data_dir)).unwrap()
}

#[test]
fn six_clients_on_one_ip_six_sessions_and_no_secret_on_disk() {
    let net = TestNet::new();
    let _nginx = Nginx::start(&net, PORT);
    let data_dir = std::env::temp_dir().join(format!("apis-sessions-{}", net.server_ns));
    let _ = fs::remove_dir_all(&data_dir);
    let mut daemon = start_daemon(&net, BIN, &[PORT], &data_dir);

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
        // Secrets in a query string and a form body, from the User-Agent-only client; the
        // query's `token` is a grouping key of its own.
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
            == 6),
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
        [
            "api_key",
            "bearer",
            "bearer",
            "cookie",
            "ip_user_agent",
            "jwt"
        ],
        "{sessions:#?}"
    );
    for session in &sessions {
        let expected = match session["key_name"].as_str().unwrap() {
            "client ip + user-agent" => 4,
            "query token" => 1,
            _ => 3,
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
    let by_query_token = sessions
        .iter()
        .find(|s| s["key_name"] == "query token")
        .unwrap();
    let out = bin()
        .args([
            "show",
            by_query_token["session_id"].as_str().unwrap(),
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

/// The cookie-setting app in the server namespace, and the daemon capturing it.
struct AppUnderCapture {
    daemon: Option<Child>,
    app: Child,
    data_dir: PathBuf,
    server: SocketAddr,
    net: TestNet,
}

impl AppUnderCapture {
    fn start() -> Self {
        let net = TestNet::new();
        let server = net.server_addr(false, PORT);
        let data_dir = std::env::temp_dir().join(format!("apis-shared-{}", net.server_ns));
        let _ = fs::remove_dir_all(&data_dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/session_app.py");
        let app = TestNet::command(&net.server_ns, "python3")
            .arg(&script)
            .arg(net.server_v4.to_string())
            .arg(PORT.to_string())
            .spawn()
            .expect("starting python3 (`cargo xtask setup` installs it)");
        let mut under = Self {
            daemon: None,
            app,
            data_dir,
            server,
            net,
        };
        under.start_daemon();
        let up = in_namespace(&under.net.client_ns, || {
            wait_until(Duration::from_secs(10), || {
                TcpStream::connect(server).is_ok()
            })
        });
        assert!(up, "the app listens on {server}");
        under
    }

    /// Starts the daemon and waits until it says it runs.
    fn start_daemon(&mut self) {
        self.daemon = Some(start_daemon(&self.net, BIN, &[PORT], &self.data_dir));
    }

    /// Stops the daemon with `signal` (`TERM`: it drains everything first; `KILL`: what it had
    /// committed stays) and starts it again.
    fn restart(&mut self, signal: &str) {
        let mut daemon = self.daemon.take().unwrap();
        sh("kill", &[&format!("-{signal}"), &daemon.id().to_string()]);
        daemon.wait().unwrap();
        self.start_daemon();
    }

    /// The stored exchanges, read next to the daemon.
    fn export(&self) -> Vec<serde_json::Value> {
        exported(BIN, &self.data_dir)
    }

    /// Stops the daemon (it drains everything first) and returns the stored exchanges.
    fn stop_and_export(&mut self) -> Vec<serde_json::Value> {
        let mut daemon = self.daemon.take().unwrap();
        sh("kill", &["-TERM", &daemon.id().to_string()]);
        assert!(daemon.wait().unwrap().success());
        self.export()
    }

    /// A counter of the sessions stage, from `apisessions stats --json`.
    fn sessions_counter(&self, name: &str) -> u64 {
        counter(BIN, &self.data_dir, "sessions", name)
    }
}

impl Drop for AppUnderCapture {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let _ = self.app.kill();
        let _ = self.app.wait();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// A client on a keep-alive connection that keeps the `sid` cookie it is given, as a browser
/// or an HTTP library with a cookie jar does.
struct CookieClient {
    name: String,
    user_agent: &'static str,
    cookie: Option<String>,
    reader: BufReader<TcpStream>,
}

impl CookieClient {
    fn connect(server: SocketAddr, name: &str, user_agent: &'static str) -> Self {
        let stream = TcpStream::connect(server).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            name: name.to_owned(),
            user_agent,
            cookie: None,
            reader: BufReader::new(stream),
        }
    }

    /// Sends one request and reads its response whole; takes the cookie it sets.
    fn send(&mut self, method: &str, path: &str) {
        let body = if method == "POST" { "{}" } else { "" };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: app\r\nUser-Agent: {}\r\nContent-Length: {}\r\n",
            self.user_agent,
            body.len()
        );
        if let Some(cookie) = &self.cookie {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "{} {path}: {line}",
            self.name
        );
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap();
            } else if name.eq_ignore_ascii_case("set-cookie") {
                self.cookie = Some(value.split(';').next().unwrap().to_owned());
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
    }
}

const OFFICE_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36";
const SOLO_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0";

/// Which traced client and step an exported exchange is: its uri names them
/// (`/items/o3-after-2`, `/login?who=o3`, `/refresh?who=o3`).
fn trace(record: &serde_json::Value) -> Option<(String, String)> {
    let uri = record["uri"].as_str()?;
    if let Some(rest) = uri.strip_prefix("/items/") {
        let (client, step) = rest.split_once('-')?;
        return Some((client.to_owned(), step.split('-').next()?.to_owned()));
    }
    let (path, who) = uri.split_once("?who=")?;
    Some((who.to_owned(), path.trim_start_matches('/').to_owned()))
}

#[test]
fn users_behind_one_address_and_browser_get_a_session_each_when_they_log_in() {
    let mut under = AppUnderCapture::start();
    let server = under.server;
    in_namespace(&under.net.client_ns, || {
        // The office: six clients with one IP and one browser build, taking turns request by
        // request: two anonymous requests each, the logins, then five requests with the cookie
        // (o2 has its cookie replaced halfway).
        let mut office: Vec<CookieClient> = (0..6)
            .map(|i| CookieClient::connect(server, &format!("o{i}"), OFFICE_UA))
            .collect();
        let steps = |name: &str| {
            let mut steps: Vec<(&str, String)> = (0..2)
                .map(|i| ("GET", format!("/items/{name}-before-{i}")))
                .collect();
            steps.push(("POST", format!("/login?who={name}")));
            for i in 0..5 {
                if name == "o2" && i == 2 {
                    steps.push(("GET", format!("/refresh?who={name}")));
                }
                steps.push(("GET", format!("/items/{name}-after-{i}")));
            }
            steps
        };
        let plans: Vec<_> = office.iter().map(|c| steps(&c.name)).collect();
        for round in 0..plans.iter().map(Vec::len).max().unwrap() {
            for (client, plan) in office.iter_mut().zip(&plans) {
                if let Some((method, path)) = plan.get(round) {
                    client.send(method, path);
                }
            }
        }
        // A lone user with its own browser, whose cookie is replaced after the login.
        let mut solo = CookieClient::connect(server, "solo", SOLO_UA);
        for (method, path) in steps("solo") {
            solo.send(method, &path);
        }
        solo.send("GET", "/refresh?who=solo");
        for i in 5..8 {
            solo.send("GET", &format!("/items/solo-after-{i}"));
        }
    });
    let records = under.stop_and_export();

    // client -> sessions of its login, refresh and logged-in requests; session -> such clients.
    let mut by_client: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_session: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut solo_before = BTreeSet::new();
    let mut traced = 0;
    for record in &records {
        let Some((client, step)) = trace(record) else {
            continue;
        };
        traced += 1;
        let session = record["session_id"].as_str().unwrap().to_owned();
        if step == "before" {
            if client == "solo" {
                solo_before.insert(session);
            }
            continue;
        }
        by_client
            .entry(client.clone())
            .or_default()
            .insert(session.clone());
        by_session.entry(session).or_default().insert(client);
    }
    assert_eq!(
        traced,
        6 * 8 + 1 + 8 + 3 + 1,
        "every request captured and stored"
    );
    for (client, sessions) in &by_client {
        assert_eq!(
            sessions.len(),
            1,
            "{client}'s logged-in requests in one session: {by_client:?}"
        );
    }
    let office_sessions: BTreeSet<_> = (0..6)
        .map(|i| by_client[&format!("o{i}")].first().unwrap().clone())
        .collect();
    assert_eq!(
        office_sessions.len(),
        6,
        "six office sessions: {by_client:?}"
    );
    for (session, clients) in &by_session {
        assert_eq!(clients.len(), 1, "session {session} mixes {clients:?}");
    }
    assert_eq!(
        solo_before, by_client["solo"],
        "the lone user's requests before its login are in its session"
    );
    // o1..o5's logins, each after o0's in the same fallback session.
    assert_eq!(under.sessions_counter("links_ambiguous"), 5);
}

#[test]
fn two_chromium_profiles_on_one_machine_are_two_sessions() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "this test needs Debian's chromium: `cargo xtask setup` (as root) installs it"
    );
    let mut under = AppUnderCapture::start();
    let profiles = std::env::temp_dir().join(format!("apis-chromium-{}", under.net.client_ns));
    // One after the other, each a fresh profile: the app's first response gives each its own
    // cookie, which the page's stylesheet and image requests carry back.
    let doms: Vec<(&str, Result<String, String>)> = ["p1", "p2"]
        .into_iter()
        .map(|profile| {
            let url = format!("http://{}/page/{profile}", under.server);
            let dom = chromium_dump_dom(
                chromium,
                &under.net.client_ns,
                &profiles.join(profile),
                &url,
            );
            (profile, dom)
        })
        .collect();
    let _ = fs::remove_dir_all(&profiles);
    for (profile, dom) in doms {
        let dom = dom.unwrap_or_else(|e| panic!("chromium with profile {profile}: {e}"));
        assert!(
            dom.contains(&format!(r#"<h1 id="who">{profile}</h1>"#)),
            "chromium loaded the page of {profile}: {dom}"
        );
    }
    // Let the last connections close so every exchange is complete before the daemon stops.
    thread::sleep(Duration::from_millis(300));
    let records = under.stop_and_export();

    let mut by_profile: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for record in &records {
        let uri = record["uri"].as_str().unwrap();
        let profile = ["p1", "p2"]
            .into_iter()
            .find(|p| uri == format!("/page/{p}") || uri.starts_with(&format!("/asset/{p}/")));
        if let Some(profile) = profile {
            by_profile
                .entry(profile)
                .or_default()
                .insert(record["session_id"].as_str().unwrap());
        }
    }
    let uris: Vec<&str> = records.iter().filter_map(|r| r["uri"].as_str()).collect();
    assert_eq!(
        by_profile.len(),
        2,
        "both profiles' requests were captured: {uris:?}"
    );
    for (profile, sessions) in &by_profile {
        assert_eq!(
            sessions.len(),
            1,
            "{profile} in one session: {by_profile:?}"
        );
    }
    assert_ne!(
        by_profile["p1"], by_profile["p2"],
        "two profiles, two sessions"
    );
    // The page and both of its resources, per profile.
    for profile in ["p1", "p2"] {
        let count = uris
            .iter()
            .filter(|u| u.contains(&format!("/{profile}")))
            .count();
        assert!(count >= 3, "{profile}: {uris:?}");
    }
    assert_eq!(under.sessions_counter("links_ambiguous"), 1);
}

/// The DOM of `url` after it loaded (with its stylesheet and image), from headless Chromium
/// with the profile in `profile_dir`, run in the namespace `ns`. Gives up after 60 seconds.
fn chromium_dump_dom(
    chromium: &Path,
    ns: &str,
    profile_dir: &Path,
    url: &str,
) -> Result<String, String> {
    let mut child = TestNet::command(ns, chromium)
        .args([
            "--headless",
            // Root cannot use Chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // Nothing but the page: no update checks, no sync, no other traffic.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().unwrap();
    // Read while it runs, so a full pipe cannot stall it.
    let reader = thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let mut status = None;
    let exited = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no answer within 60 s (killed)".into());
    }
    let dom = reader.join().unwrap();
    match status {
        Some(status) if status.success() => Ok(dom),
        status => Err(format!("{status:?}: {dom}")),
    }
}

/// A client with its own browser: one connection per phase, as a browser that comes back later
/// opens a new one, with the cookie it kept.
fn lone_user(
    server: SocketAddr,
    cookie: Option<String>,
    steps: &[(&str, String)],
) -> Option<String> {
    let mut client = CookieClient::connect(server, "lone", SOLO_UA);
    client.cookie = cookie;
    for (method, path) in steps {
        client.send(method, path);
    }
    client.cookie
}

fn gets(prefix: &str, n: usize) -> Vec<(&'static str, String)> {
    (0..n)
        .map(|i| ("GET", format!("/items/{prefix}-{i}")))
        .collect()
}

/// Sessions as `sessions --json` prints them, by id: (requests, key kind).
fn session_list(data_dir: &Path) -> BTreeMap<String, (u64, String)> {
    sessions_json(data_dir)
        .into_iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                (
                    s["requests"].as_u64().unwrap(),
                    s["key_kind"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_session_continues_through_sigterm_and_sigkill_restarts() {
    let mut under = AppUnderCapture::start();
    let (server, ns) = (under.server, under.net.client_ns.clone());
    let mut steps = gets("anon", 3);
    steps.push(("POST", "/login?who=lone".into()));
    steps.extend(gets("first", 3));
    let cookie = in_namespace(&ns, || lone_user(server, None, &steps));
    assert!(cookie.is_some(), "the login set a cookie");

    under.restart("TERM");
    in_namespace(&ns, || {
        lone_user(server, cookie.clone(), &gets("second", 3))
    });
    // Everything sent so far committed (the writer commits every second), then a crash.
    assert!(
        wait_until(Duration::from_secs(10), || under.export().len() == 10),
        "10 exchanges committed before the SIGKILL: {}",
        under.export().len()
    );
    under.restart("KILL");
    assert_eq!(under.sessions_counter("state_actors_loaded"), 1);
    in_namespace(&ns, || lone_user(server, cookie.clone(), &gets("third", 3)));
    let records = under.stop_and_export();

    assert_eq!(records.len(), 13);
    let sessions: BTreeSet<&str> = records
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(sessions.len(), 1, "one session of 13: {sessions:?}");
    let listed = session_list(&under.data_dir);
    assert_eq!(
        listed.values().collect::<Vec<_>>(),
        [&(13, "ip_user_agent".to_owned())]
    );
}

/// Traffic in three phases a second apart: the lone user logs in and comes back twice, a second
/// user (another browser) logs in during the second phase. Returns the capture and the two
/// quiet moments between the phases (epoch seconds).
fn phased_capture(under: &AppUnderCapture) -> (PathBuf, [f64; 2]) {
    let tcpdump = common::Tcpdump::start(&under.net, PORT);
    let (server, ns) = (under.server, under.net.client_ns.clone());
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let mut quiet = [0.0; 2];
    in_namespace(&ns, || {
        let mut steps = gets("anon", 3);
        steps.push(("POST", "/login?who=lone".into()));
        steps.extend(gets("first", 3));
        let cookie = lone_user(server, None, &steps);
        thread::sleep(Duration::from_millis(400));
        quiet[0] = now();
        thread::sleep(Duration::from_millis(400));
        lone_user(server, cookie.clone(), &gets("second", 3));
        let mut other = CookieClient::connect(server, "other", OFFICE_UA);
        other.send("GET", "/items/other-anon-0");
        other.send("POST", "/login?who=other");
        other.send("GET", "/items/other-after-0");
        thread::sleep(Duration::from_millis(400));
        quiet[1] = now();
        thread::sleep(Duration::from_millis(400));
        lone_user(server, cookie, &gets("third", 3));
        other.send("GET", "/items/other-after-1");
    });
    thread::sleep(Duration::from_millis(300));
    (tcpdump.stop(), quiet)
}

fn import(files: &[&Path], data_dir: &Path) -> String {
    let out = bin()
        .arg("import")
        .args(files)
        .args(["--port", &PORT.to_string(), "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{report}");
    report
}

#[test]
fn imports_of_a_split_capture_repeated_or_in_parts_give_the_sessions_of_the_whole() {
    let mut under = AppUnderCapture::start();
    let (pcap, quiet) = phased_capture(&under);
    assert_eq!(under.stop_and_export().len(), 13 + 4, "captured live too");
    // Every store gets the same installation secret, so that the same sessions have the same
    // ids in each (as on hosts that share it).
    let secret = [7u8; 32];
    let dir = |tag: &str| {
        let d = pcap.with_extension(tag);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("secret"), secret).unwrap();
        d
    };

    // The whole capture, and the same again: nothing changes the second time.
    let whole = dir("whole");
    import(&[&pcap], &whole);
    let expected = session_list(&whole);
    let requests: u64 = expected.values().map(|(n, _)| n).sum();
    assert_eq!(requests, 13 + 4, "{expected:?}");
    assert_eq!(
        expected.len(),
        2,
        "the lone user's session and the other's: {expected:?}"
    );
    let report = import(&[&pcap], &whole);
    assert!(
        report.contains("17 exchanges were stored by an earlier import"),
        "{report}"
    );
    assert_eq!(session_list(&whole), expected);

    // Cut in the quiet moments, imported file by file: the sessions continue.
    let part = |n: usize, args: &[String]| {
        let file = pcap.with_extension(format!("part{n}.pcap"));
        let mut cmd = Command::new("editcap");
        cmd.args(args).arg(&pcap).arg(&file);
        let out = cmd
            .output()
            .expect("editcap (tshark's package; `cargo xtask setup`)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        file
    };
    let files = [
        part(0, &["-B".into(), format!("{:.6}", quiet[0])]),
        part(
            1,
            &[
                "-A".into(),
                format!("{:.6}", quiet[0]),
                "-B".into(),
                format!("{:.6}", quiet[1]),
            ],
        ),
        part(2, &["-A".into(), format!("{:.6}", quiet[1])]),
    ];
    let by_file = dir("by-file");
    for file in &files {
        import(&[file], &by_file);
    }
    assert_eq!(session_list(&by_file), expected);

    // Cut anywhere (every 7 packets, through exchanges and connections), imported in one
    // command: the same exchanges as the whole.
    let chunks = pcap.with_extension("chunk.pcap");
    let out = Command::new("editcap")
        .args(["-c", "7"])
        .arg(&pcap)
        .arg(&chunks)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = chunks.file_stem().unwrap().to_string_lossy().into_owned();
    let mut pieces: Vec<PathBuf> = fs::read_dir(chunks.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{stem}_"))
        })
        .collect();
    pieces.sort();
    assert!(pieces.len() > 10, "{} pieces", pieces.len());
    let in_one = dir("in-one");
    let refs: Vec<&Path> = pieces.iter().map(PathBuf::as_path).collect();
    import(&refs, &in_one);
    assert_eq!(session_list(&in_one), expected);

    for d in [whole, by_file, in_one] {
        let _ = fs::remove_dir_all(d);
    }
    for f in files.iter().chain(&pieces).chain([&pcap]) {
        let _ = fs::remove_file(f);
    }
}

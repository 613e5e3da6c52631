//! The built-in session keys measured on the frameworks people run: each app below runs in the
//! server namespace with the daemon capturing it, and two users behind one address with one
//! User-Agent (curl with a cookie jar each, like two people in one office on one browser build)
//! load the login form, log in and use the app. They must end in two sessions, each holding all
//! of its user's login and logged-in requests and none of the other's, with the user named where
//! the framework's cookie says who it is (a JWT). No cookie value reaches the data directory.
//!
//! Django, Flask with Flask-Login (PyPI) and Express with express-session and cookie-session
//! (npm) come from `target/frameworks`, which `cargo xtask setup` fills; Rails (Debian's
//! ruby-rails, served by WEBrick) and PHP (Debian's php-cli built-in server) are Debian packages
//! it installs. The apps are in `data/frameworks/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use common::{
    TestNet, cli, exported, files_containing, in_namespace, sh, start_daemon, wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_apisessions");
const PORT: u16 = 8080;
const OFFICE_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36";
const USERS: [&str; 2] = ["alice", "bob"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `cargo xtask setup` installs the PyPI and npm packages.
fn frameworks_dir() -> PathBuf {
    root().join("target/frameworks")
}

fn app_file(name: &str) -> PathBuf {
    root().join("tests/data/frameworks").join(name)
}

/// One framework's app and its login flow.
struct App {
    name: &'static str,
    /// Program and arguments; `{addr}`, `{port}` and `{work}` are replaced.
    command: Vec<String>,
    env: Vec<(&'static str, String)>,
    login_form: &'static str,
    /// Where the form posts (may carry a query already).
    login_post: &'static str,
    /// The form's CSRF field, copied from the form into the login request.
    csrf_field: Option<&'static str>,
    /// A page only a logged-in user sees, which names the user.
    logged_in_page: &'static str,
    /// The framework's cookie names the user (a JWT's subject): the session's user must be it.
    names_the_user: bool,
}

impl App {
    fn python(name: &'static str, script: &str) -> Self {
        let python = frameworks_dir().join("venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: `cargo xtask setup` installs the PyPI packages of the framework tests",
            python.display()
        );
        Self::new(
            name,
            vec![
                python.display().to_string(),
                app_file(script).display().to_string(),
                "{addr}".into(),
                "{port}".into(),
            ],
        )
    }

    fn express(mode: &'static str) -> Self {
        let modules = frameworks_dir().join("node/node_modules");
        assert!(
            modules.join("express-session").exists() && modules.join("cookie-session").exists(),
            "{} is missing: `cargo xtask setup` installs the npm packages of the framework tests",
            modules.display()
        );
        let mut app = Self::new(
            mode,
            vec![
                "node".into(),
                app_file("express_app.js").display().to_string(),
                mode.into(),
                "{addr}".into(),
                "{port}".into(),
            ],
        );
        app.env.push(("NODE_PATH", modules.display().to_string()));
        app
    }

    fn new(name: &'static str, command: Vec<String>) -> Self {
        Self {
            name,
            command,
            env: Vec::new(),
            login_form: "/login",
            login_post: "/login",
            csrf_field: None,
            logged_in_page: "/me",
            names_the_user: false,
        }
    }
}

/// The app in the server namespace, the daemon capturing it, and the two users' cookie jars.
struct Run {
    net: TestNet,
    daemon: Option<Child>,
    app: Child,
    data_dir: PathBuf,
    work: PathBuf,
    server: SocketAddr,
}

impl Run {
    fn start(app: &App) -> Self {
        let net = TestNet::new();
        let server = net.server_addr(false, PORT);
        let data_dir = std::env::temp_dir().join(format!("apis-fw-{}", net.server_ns));
        let work = std::env::temp_dir().join(format!("apis-fw-work-{}", net.server_ns));
        let _ = fs::remove_dir_all(&data_dir);
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let daemon = start_daemon(&net, BIN, &[PORT], &data_dir);
        let args: Vec<String> = app
            .command
            .iter()
            .map(|a| {
                a.replace("{addr}", &net.server_v4.to_string())
                    .replace("{port}", &PORT.to_string())
                    .replace("{work}", &work.display().to_string())
            })
            .collect();
        let log = fs::File::create(work.join("app.log")).unwrap();
        let child = TestNet::command(&net.server_ns, &args[0])
            .args(&args[1..])
            .envs(app.env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&work)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} for {}: {e}", args[0], app.name));
        let run = Self {
            net,
            daemon: Some(daemon),
            app: child,
            data_dir,
            work,
            server,
        };
        let up = in_namespace(&run.net.client_ns, || {
            wait_until(Duration::from_secs(90), || {
                TcpStream::connect(server).is_ok()
            })
        });
        assert!(
            up,
            "{} listens on {server}: {}",
            app.name,
            fs::read_to_string(run.work.join("app.log")).unwrap_or_default()
        );
        run
    }

    fn jar(&self, user: &str) -> PathBuf {
        self.work.join(format!("{user}.jar"))
    }

    /// One request with `user`'s cookie jar (curl, in the client namespace): (status, body).
    fn request(&self, user: &str, path_and_query: &str, form: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path_and_query}", self.server);
        let jar = self.jar(user);
        let mut cmd = TestNet::command(&self.net.client_ns, "curl");
        cmd.args(["-s", "-A", OFFICE_UA, "-w", "\n%{http_code}"])
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar);
        if let Some(form) = form {
            cmd.args(["--data-raw", form]);
        }
        let out = cmd.arg(&url).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "curl {url}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.trim().parse().unwrap(), body.to_owned())
    }

    /// Every cookie value in the users' jars (curl's Netscape format).
    fn cookie_values(&self) -> Vec<String> {
        USERS
            .iter()
            .flat_map(|user| {
                let text = fs::read_to_string(self.jar(user)).unwrap_or_default();
                text.lines()
                    .map(|l| l.strip_prefix("#HttpOnly_").unwrap_or(l).to_owned())
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split('\t').nth(6).map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn stop_daemon(&mut self) {
        let mut daemon = self.daemon.take().unwrap();
        sh("kill", &["-TERM", &daemon.id().to_string()]);
        assert!(daemon.wait().unwrap().success());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let _ = self.app.kill();
        let _ = self.app.wait();
        let _ = fs::remove_dir_all(&self.data_dir);
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// The value of the hidden form field `field` in `html`.
fn form_field(html: &str, field: &str) -> String {
    let at = html
        .find(&format!("name=\"{field}\""))
        .unwrap_or_else(|| panic!("no {field} in the form: {html}"));
    let rest = &html[at..];
    let value = &rest[rest.find("value=\"").unwrap() + 7..];
    value[..value.find('"').unwrap()].to_owned()
}

fn with_marker(path: &str, user: &str, step: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}who={user}&step={step}")
}

/// Which user and step an exported exchange is, from its marker.
fn marker(record: &serde_json::Value) -> Option<(String, String)> {
    let uri = record["uri"].as_str()?;
    let query = uri.split_once('?')?.1;
    let mut who = None;
    let mut step = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("who", v)) => who = Some(v.to_owned()),
            Some(("step", v)) => step = Some(v.to_owned()),
            _ => {}
        }
    }
    Some((who?, step?))
}

/// The two users take turns: the login form, the login, then three logged-in pages each.
fn two_users_behind_one_address_get_a_session_each(app: &App) {
    let mut run = Run::start(app);
    let mut tokens = BTreeMap::new();
    for user in USERS {
        let (status, form) = run.request(user, &with_marker(app.login_form, user, "form"), None);
        assert_eq!(status, 200, "{}: {user}'s login form: {form}", app.name);
        if let Some(field) = app.csrf_field {
            tokens.insert(user, form_field(&form, field));
        }
    }
    for user in USERS {
        let mut form = format!("username={user}&password=pw-{user}");
        if let Some(field) = app.csrf_field {
            let token: String = form_urlencoded::byte_serialize(tokens[user].as_bytes()).collect();
            form.push_str(&format!("&{field}={token}"));
        }
        let (status, body) = run.request(
            user,
            &with_marker(app.login_post, user, "login"),
            Some(&form),
        );
        assert!(
            status == 200 || status == 302,
            "{}: {user}'s login: {status} {body}",
            app.name
        );
    }
    for i in 0..3 {
        for user in USERS {
            let (status, body) = run.request(
                user,
                &with_marker(app.logged_in_page, user, &format!("in-{i}")),
                None,
            );
            assert!(
                status == 200 && body.contains(user),
                "{}: {user} is logged in: {status} {body}",
                app.name
            );
        }
    }
    run.stop_daemon();
    let records = exported(BIN, &run.data_dir);

    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_session: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut traced = 0;
    for record in &records {
        let Some((user, step)) = marker(record) else {
            continue;
        };
        traced += 1;
        if step == "form" {
            // Before the login the two are one browser on one address: either session.
            continue;
        }
        let session = record["session_id"].as_str().unwrap().to_owned();
        by_user
            .entry(user.clone())
            .or_default()
            .insert(session.clone());
        by_session.entry(session).or_default().insert(user);
    }
    assert_eq!(traced, 2 + 2 + 6, "{}: every request stored", app.name);
    for (user, sessions) in &by_user {
        assert_eq!(
            sessions.len(),
            1,
            "{}: {user}'s login and pages in one session: {by_user:?}",
            app.name
        );
    }
    for (session, users) in &by_session {
        assert_eq!(
            users.len(),
            1,
            "{}: session {session} mixes {users:?}",
            app.name
        );
    }
    assert_eq!(by_session.len(), 2, "{}: two sessions", app.name);
    if app.names_the_user {
        let sessions: Vec<serde_json::Value> = serde_json::from_str(&cli(
            BIN,
            &["sessions", "--json", "--limit", "0"],
            &run.data_dir,
        ))
        .unwrap();
        for (user, ids) in &by_user {
            let id = ids.first().unwrap();
            let summary = sessions
                .iter()
                .find(|s| s["session_id"] == id.as_str())
                .unwrap();
            assert_eq!(summary["user"], user.as_str(), "{}: {summary}", app.name);
        }
    }
    let values = run.cookie_values();
    assert!(!values.is_empty(), "{}: the app set cookies", app.name);
    for value in values.iter().filter(|v| v.len() >= 16) {
        assert!(
            files_containing(&run.data_dir, value).is_empty(),
            "{}: a cookie value reached the disk",
            app.name
        );
    }
}

#[test]
fn django_admin_login() {
    let mut app = App::python("django", "django_site.py");
    // Its SQLite database.
    app.command.push("{work}".into());
    app.login_form = "/admin/login/";
    app.login_post = "/admin/login/?next=/admin/";
    app.csrf_field = Some("csrfmiddlewaretoken");
    app.logged_in_page = "/admin/";
    two_users_behind_one_address_get_a_session_each(&app);
}

#[test]
fn flask_login() {
    two_users_behind_one_address_get_a_session_each(&App::python("flask", "flask_app.py"));
}

#[test]
fn express_session() {
    two_users_behind_one_address_get_a_session_each(&App::express("express-session"));
}

#[test]
fn express_cookie_session() {
    two_users_behind_one_address_get_a_session_each(&App::express("cookie-session"));
}

#[test]
fn rails_cookie_store() {
    assert!(
        Path::new("/usr/bin/rails").exists(),
        "Debian's ruby-rails is missing: `cargo xtask setup` installs it"
    );
    let mut app = App::new(
        "rails",
        vec![
            "ruby".into(),
            app_file("rails_app.rb").display().to_string(),
            "{addr}".into(),
            "{port}".into(),
            "{work}".into(),
        ],
    );
    app.csrf_field = Some("authenticity_token");
    two_users_behind_one_address_get_a_session_each(&app);
}

#[test]
fn php_native_sessions() {
    assert!(
        Path::new("/usr/bin/php").exists(),
        "Debian's php-cli is missing: `cargo xtask setup` installs it"
    );
    let app = App::new(
        "php",
        vec![
            "php".into(),
            "-S".into(),
            "{addr}:{port}".into(),
            app_file("php_app.php").display().to_string(),
        ],
    );
    two_users_behind_one_address_get_a_session_each(&app);
}

#[test]
fn jwt_in_a_cookie_behind_a_sticky_balancer_with_analytics() {
    let mut app = App::new(
        "jwt-cookie",
        vec![
            "python3".into(),
            app_file("jwt_cookie_app.py").display().to_string(),
            "{addr}".into(),
            "{port}".into(),
        ],
    );
    app.names_the_user = true;
    two_users_behind_one_address_get_a_session_each(&app);
}

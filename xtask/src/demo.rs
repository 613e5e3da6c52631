//! `cargo xtask demo`: real traffic, really captured.
//!
//! Creates a private network namespace (only its loopback), starts the demo API in it
//! (`xtask/demo/demo_api.py`: a small shop with a JWT + cookie login), starts
//! `apisessions run --dump` on its loopback, drives simulated users against the API
//! (`xtask/demo/users.py`: customers with bearer tokens or a session cookie, an anonymous
//! browser, a scraper, a partner with an API key, an attacker, a credential stuffer), then stops
//! the sensor and shows what it captured: the exchanges, the counters, the sessions and those
//! flagged by their abuse signals.
//! Nothing leaves the namespace.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{binary, is_root, output, status, workspace_root};

const PORT: u16 = 8080;
/// Prefix of the namespaces the demo creates; the suffix is the xtask's pid.
const NAMESPACE_PREFIX: &str = "apis-demo-";
/// Dump lines shown; the rest stay in the file.
const DUMP_LINES_SHOWN: usize = 15;

/// Removes the namespace and stops what runs in it, whatever happens to the demo.
struct Namespace {
    name: String,
    children: Vec<Child>,
    /// Cleans up after this process if it ends without running `Drop` (see `WATCHDOG`).
    watchdog: Option<Child>,
}

/// Ctrl-C ends the xtask at once, without running `Drop`, and a named namespace outlives its
/// processes. This shell waits for its stdin (a pipe from the xtask) to close, which happens
/// however the xtask ends, then stops what still runs in the namespace and deletes it. It
/// ignores the signals that end the demo, since it is in the same process group.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
read -r _
pids=$(ip netns pids "$1" 2>/dev/null)
[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -z "$(ip netns pids "$1" 2>/dev/null)" ] && break
    sleep 0.5
done
pids=$(ip netns pids "$1" 2>/dev/null)
[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
ip netns del "$1" 2>/dev/null
exit 0
"#;

impl Namespace {
    fn create(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        status(Command::new("ip").args(["netns", "add", name]))?;
        let mut ns = Self {
            name: name.to_owned(),
            children: Vec::new(),
            watchdog: None,
        };
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "demo-watchdog", name])
            .stdin(Stdio::piped())
            .spawn()
            .context("starting the namespace's watchdog (sh)")?;
        ns.watchdog = Some(watchdog);
        status(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Starts a long-running process that the namespace's guard stops; returns its index.
    fn spawn(&mut self, what: &str, cmd: &mut Command) -> Result<usize> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Fails if the child at `index` has already exited: waiting for it to become ready would
    /// only time out. `log` is where its own messages went, if not to the terminal.
    fn ensure_running(&mut self, index: usize, what: &str, log: Option<&Path>) -> Result<()> {
        if let Some(exit) = self.children[index]
            .try_wait()
            .with_context(|| format!("checking on {what}"))?
        {
            match log {
                Some(log) => bail!("{what} exited early ({exit}); see {}", log.display()),
                None => bail!("{what} exited early ({exit})"),
            }
        }
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Nothing is left for the watchdog to do: closing its stdin lets it finish.
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Deletes namespaces that earlier demos left behind (if even their watchdog was killed). The
/// pid in the name tells whether that demo is still running.
fn remove_stale_namespaces() {
    let Ok(list) = output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = name.strip_prefix(NAMESPACE_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Where `demo --ui` serves the console (the host's loopback, for the host's browser).
const UI_LISTEN: &str = "127.0.0.1:7878";

pub fn run(ui: bool) -> Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs and creates a network namespace: run it as root");
    }
    let started = Instant::now();
    println!("== demo: building apisessions (a few minutes the first time)");
    // Quietly: cargo replays the eBPF build script's output as "warning:" lines even when
    // nothing was rebuilt, which reads like a problem here. Errors still show.
    status(
        Command::new("cargo")
            .args(["build", "--quiet", "--package", "apisessions"])
            .current_dir(workspace_root()),
    )?;
    let scripts = workspace_root().join("xtask").join("demo");
    let work = workspace_root().join("target").join("demo");
    let _ = fs::remove_dir_all(&work);
    let data_dir = work.join("data");
    fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;

    remove_stale_namespaces();
    let mut ns = Namespace::create(&format!("{NAMESPACE_PREFIX}{}", std::process::id()))?;
    println!(
        "\n== demo: demo API (xtask/demo/demo_api.py) on 127.0.0.1:{PORT} inside network namespace {}",
        ns.name
    );
    let api_log_path = work.join("api.log");
    let api_log = create(&api_log_path)?;
    let api = ns.spawn(
        "the demo API (python3)",
        ns.command("python3")
            .arg(scripts.join("demo_api.py"))
            .args(["--bind", "127.0.0.1", "--port", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(api_log),
    )?;
    // Ready before the sensor starts: probes that find the port still closed would show up as
    // refused connections in the capture's counters.
    wait_for("the demo API", Duration::from_secs(20), || {
        ns.ensure_running(api, "the demo API", Some(&api_log_path))?;
        Ok(health_check(&ns).is_ok())
    })?;
    let answered_before = answered_requests(&api_log_path)?;

    println!("\n== demo: apisessions run --iface lo --port {PORT} --dump");
    let dump_path = work.join("dump.txt");
    let dump = create(&dump_path)?;
    let sensor = ns.spawn(
        "apisessions",
        ns.command(binary(false))
            .args(["run", "--iface", "lo", "--port", &PORT.to_string()])
            .args(["--dump", "--summary-interval", "0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(dump),
    )?;
    // The sensor writes its statistics file once its programs are attached: from then on every
    // request is captured.
    wait_for("the sensor to attach", Duration::from_secs(20), || {
        ns.ensure_running(sensor, "apisessions", None)?;
        Ok(data_dir.join("stats.json").exists())
    })?;
    // A load balancer's health probe, the first exchange of the capture.
    health_check(&ns).context("the demo API stopped answering")?;

    println!("\n== demo: simulated users (xtask/demo/users.py)");
    let users = ns
        .command("python3")
        .arg(scripts.join("users.py"))
        .args(["--host", "127.0.0.1", "--port", &PORT.to_string()])
        .status()
        .context("starting the simulated users (python3)")?;

    println!("\n== demo: stopping the sensor (SIGTERM)");
    status(Command::new("kill").args(["-TERM", &ns.children[sensor].id().to_string()]))?;
    let exit = wait_exit(&mut ns.children[sensor], Duration::from_secs(20))
        .context("stopping apisessions")?;
    if !exit.success() {
        bail!("apisessions exited with {exit}");
    }
    // The users' result is checked only now, so that a surprise still shows what was captured.
    let users_ok = users.success();

    println!("\n== demo: what `apisessions run --dump` captured (one line per HTTP exchange)");
    print_dump(
        &dump_path,
        answered_requests(&api_log_path)?.saturating_sub(answered_before),
    )?;

    let apisessions = binary(false);
    println!("\n== demo: apisessions stats");
    status(
        Command::new(&apisessions)
            .arg("stats")
            .arg("--data-dir")
            .arg(&data_dir),
    )?;

    if has_subcommand(&apisessions, "endpoints")? {
        let spec = scripts.join("openapi.yaml");
        println!(
            "\n== demo: apisessions endpoints --spec xtask/demo/openapi.yaml   (the API inventory \
             against the demo's own document: one shadow, one zombie, one orphan)"
        );
        status(
            Command::new(&apisessions)
                .arg("endpoints")
                .arg("--spec")
                .arg(&spec)
                .arg("--data-dir")
                .arg(&data_dir),
        )?;
    }
    if has_subcommand(&apisessions, "sessions")? {
        show_sessions(&apisessions, &data_dir)?;
    } else {
        println!(
            "\n== demo: sessions: this apisessions has no `sessions` command yet; \
             `apisessions sessions` and `apisessions show` will be shown here once it does"
        );
    }

    println!(
        "\n== demo: done in {:.0} s; the dump, the API's access log and the data directory are in {}",
        started.elapsed().as_secs_f64(),
        work.display()
    );
    if !users_ok {
        bail!("the simulated users got responses they did not expect ({users}); see above");
    }
    if ui {
        // The namespace goes first: Ctrl-C ends this process too, before any drop would run.
        drop(ns);
        serve_console(&apisessions, &data_dir, &scripts.join("openapi.yaml"))?;
    }
    Ok(())
}

/// `apisessions ui` over the demo's store until Ctrl-C (which the console gets too); its
/// endpoints page compares the inventory with the demo's document, as `endpoints --spec` above.
fn serve_console(apisessions: &Path, data_dir: &Path, spec: &Path) -> Result<()> {
    println!("\n== demo: the console: http://{UI_LISTEN}/   (Ctrl-C stops it)");
    let mut console = Command::new(apisessions)
        .args(["ui", "--listen", UI_LISTEN, "--spec"])
        .arg(spec)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .spawn()
        .context("starting apisessions ui")?;
    let exit = console.wait().context("waiting for apisessions ui")?;
    // Ctrl-C ends it cleanly (exit 0).
    if !exit.success() {
        bail!("apisessions ui exited with {exit}");
    }
    Ok(())
}

fn create(path: &Path) -> Result<fs::File> {
    fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// One request to the API's health endpoint, as a load balancer's probe would make it.
fn health_check(ns: &Namespace) -> Result<String> {
    output(
        ns.command("curl")
            .args(["-sf", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-A", "health-probe/1.0", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{PORT}/health")),
    )
}

/// Waits for a child that was asked to stop; the namespace's guard kills it after a timeout.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = child.try_wait()? {
            return Ok(exit);
        }
        if Instant::now() > deadline {
            bail!("still running {} s after SIGTERM", timeout.as_secs());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Prints the first lines of the dump, a tally of status codes, and how the number of
/// exchanges compares with the number of requests the API answered while the sensor ran.
fn print_dump(dump_path: &Path, answered: usize) -> Result<()> {
    let dump = read(dump_path)?;
    let lines: Vec<&str> = dump.lines().collect();
    for line in lines.iter().take(DUMP_LINES_SHOWN) {
        println!("{line}");
    }
    if lines.len() > DUMP_LINES_SHOWN {
        println!(
            "... {} more lines in {}",
            lines.len() - DUMP_LINES_SHOWN,
            dump_path.display()
        );
    }
    // Status codes follow the arrow: `... GET /uri -> 200 ttfb=...`.
    let mut statuses = BTreeMap::<&str, usize>::new();
    for line in &lines {
        if let Some((_, after)) = line.rsplit_once(" -> ") {
            let code = after.split_whitespace().next().unwrap_or("?");
            *statuses.entry(code).or_default() += 1;
        }
    }
    let tally: Vec<String> = statuses
        .iter()
        .map(|(code, n)| format!("{code}x{n}"))
        .collect();
    println!("{} exchanges: {}", lines.len(), tally.join(" "));
    if answered == lines.len() {
        println!("the demo API answered {answered} requests: every one was captured and decoded");
    } else {
        println!(
            "note: the demo API answered {answered} requests but the sensor decoded {} exchanges; \
             the counters below say where the difference went",
            lines.len()
        );
    }
    Ok(())
}

/// The requests the demo API has answered so far: its access log has one line per request,
/// starting with the client's address.
fn answered_requests(api_log_path: &Path) -> Result<usize> {
    Ok(read(api_log_path)?
        .lines()
        .filter(|line| line.starts_with("127.0.0.1 "))
        .count())
}

/// Whether `apisessions --help` lists `name` among its commands.
fn has_subcommand(apisessions: &Path, name: &str) -> Result<bool> {
    let help = output(Command::new(apisessions).arg("--help"))?;
    Ok(help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .any(|line| line.split_whitespace().next() == Some(name)))
}

/// Prints the session list, then the most active session in detail.
fn show_sessions(apisessions: &Path, data_dir: &Path) -> Result<()> {
    println!("\n== demo: apisessions sessions");
    status(
        Command::new(apisessions)
            .arg("sessions")
            .arg("--data-dir")
            .arg(data_dir),
    )?;
    println!(
        "\n== demo: apisessions sessions --min-risk 50   (abuse signals: why each is flagged)"
    );
    status(
        Command::new(apisessions)
            .args(["sessions", "--min-risk", "50"])
            .arg("--data-dir")
            .arg(data_dir),
    )?;
    let json = output(
        Command::new(apisessions)
            .args(["sessions", "--json"])
            .arg("--data-dir")
            .arg(data_dir),
    )?;
    println!("\n== demo: apisessions sessions --attacks   (sessions with attack findings)");
    status(
        Command::new(apisessions)
            .args(["sessions", "--attacks"])
            .arg("--data-dir")
            .arg(data_dir),
    )?;
    if let Some((id, attacks)) = top_session(&json, "attacks")?
        && attacks > 0
    {
        println!(
            "\n== demo: apisessions show {id} --attacks-only   (the attacker: {attacks} findings)"
        );
        status(
            Command::new(apisessions)
                .args(["show", &id, "--attacks-only"])
                .arg("--data-dir")
                .arg(data_dir),
        )?;
    }
    let Some((id, requests)) = top_session(&json, "requests")? else {
        println!("(no sessions were stored)");
        return Ok(());
    };
    println!("\n== demo: apisessions show {id}   (the most active session: {requests} requests)");
    status(
        Command::new(apisessions)
            .args(["show", &id])
            .arg("--data-dir")
            .arg(data_dir),
    )
}

/// The id and the figure of the session with the most `requests` (or attack findings, for
/// `attacks`) in `sessions --json` output.
///
/// Python parses the JSON: the demo needs python3 anyway, and xtask stays free of a JSON crate.
fn top_session(json: &str, by: &str) -> Result<Option<(String, u64)>> {
    const PICK: &str = r#"
import json, sys
by = sys.argv[1]
text = sys.stdin.read().strip()
def figure(s):
    value = s.get(by, 0)
    return sum(value.values()) if isinstance(value, dict) else value
try:
    # A JSON array of sessions; one object per line is accepted too.
    if text.startswith("["):
        sessions = json.loads(text)
    else:
        sessions = [json.loads(line) for line in text.splitlines() if line.strip()]
    best = max(sessions, key=figure, default=None)
    if best is not None:
        print(best["session_id"], figure(best))
except (ValueError, KeyError, TypeError, AttributeError) as e:
    sys.exit(f"{type(e).__name__}: {e}")
"#;
    let mut child = Command::new("python3")
        .args(["-c", PICK, by])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting python3 to read `apisessions sessions --json`")?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin
            .write_all(json.as_bytes())
            .context("writing the session list to python3")?;
    }
    let out = child
        .wait_with_output()
        .context("reading the most active session")?;
    if !out.status.success() {
        bail!(
            "`apisessions sessions --json` did not give a JSON list of sessions with `session_id` \
             and `requests`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    Ok(match (fields.next(), fields.next()) {
        (Some(id), requests) => Some((
            id.to_owned(),
            requests.and_then(|r| r.parse().ok()).unwrap_or(0),
        )),
        _ => None,
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", PathBuf::from(path).display()))
}

//! `cargo xtask demo`: real traffic, really captured.
//!
//! Creates a private network namespace (only its loopback), starts a real HTTP server in it,
//! starts `apisessions run --dump` on its loopback, drives a few clients with curl, then stops
//! the sensor and prints what it captured and its counters. Nothing leaves the namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{binary, is_root, output, status, workspace_root};

const PORT: u16 = 8080;

/// Removes the namespace and stops what runs in it, whatever happens to the demo.
struct Namespace {
    name: String,
    children: Vec<Child>,
}

impl Namespace {
    fn create(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        status(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
            children: Vec::new(),
        };
        status(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
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
    }
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("the demo loads eBPF programs and creates a network namespace: run it as root");
    }
    crate::build(false)?;
    let work = workspace_root().join("target").join("demo");
    let _ = fs::remove_dir_all(&work);
    let site = work.join("site");
    let data_dir = work.join("data");
    fs::create_dir_all(site.join("api/users")).context("creating the demo site")?;
    fs::write(site.join("index.html"), "<h1>apisessions demo</h1>\n")?;
    for id in 1..=3 {
        fs::write(
            site.join(format!("api/users/{id}.json")),
            format!("{{\"id\":{id},\"name\":\"user{id}\"}}\n"),
        )?;
    }

    let mut ns = Namespace::create(&format!("apis-demo-{}", std::process::id()))?;
    println!(
        "== demo: HTTP server on 127.0.0.1:{PORT} inside network namespace {}",
        ns.name
    );
    let server = ns
        .command("python3")
        .args([
            "-m",
            "http.server",
            &PORT.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3's http.server (is python3 installed?)")?;
    ns.children.push(server);

    let dump_path = work.join("dump.txt");
    let dump = fs::File::create(&dump_path)?;
    let sensor = ns
        .command(binary(false))
        .args([
            "run",
            "--iface",
            "lo",
            "--port",
            &PORT.to_string(),
            "--dump",
            "--summary-interval",
            "0",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(dump)
        .spawn()
        .context("starting apisessions")?;
    let sensor_pid = sensor.id();
    ns.children.push(sensor);
    wait_for("the sensor to attach", Duration::from_secs(20), || {
        data_dir.join("stats.json").exists()
    })?;
    wait_for("the HTTP server", Duration::from_secs(20), || {
        curl(&ns, "/").is_ok()
    })?;

    println!("== demo: three clients make requests with curl");
    for (agent, paths) in [
        (
            "browser/1.0",
            &["/", "/api/users/1.json", "/api/users/2.json"][..],
        ),
        ("mobile-app/2.3", &["/api/users/3.json", "/missing"][..]),
        (
            "scraper/0.1",
            &[
                "/api/users/1.json",
                "/api/users/2.json",
                "/api/users/3.json",
            ][..],
        ),
    ] {
        for path in paths {
            let code = curl_agent(&ns, path, agent)?;
            println!("   {agent:<15} GET {path:<20} -> {code}");
        }
    }

    status(Command::new("kill").args(["-TERM", &sensor_pid.to_string()]))?;
    if let Some(mut sensor) = ns.children.pop() {
        let exit = sensor.wait()?;
        if !exit.success() {
            bail!("apisessions exited with {exit}");
        }
    }
    println!("\n== demo: what `apisessions run --dump` captured (one line per HTTP exchange)");
    print_lines(&dump_path)?;
    println!("\n== demo: apisessions stats");
    status(
        Command::new(binary(false))
            .arg("stats")
            .arg("--data-dir")
            .arg(&data_dir),
    )?;
    println!("\nThe capture's files are in {}", work.display());
    Ok(())
}

fn curl(ns: &Namespace, path: &str) -> Result<String> {
    curl_agent(ns, path, "xtask-demo")
}

fn curl_agent(ns: &Namespace, path: &str, agent: &str) -> Result<String> {
    output(
        ns.command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-A",
                agent,
                "--max-time",
                "5",
            ])
            .arg(format!("http://127.0.0.1:{PORT}{path}")),
    )
}

fn print_lines(path: &Path) -> Result<()> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading {}", PathBuf::from(path).display()))?;
    for line in text.lines() {
        println!("{line}");
    }
    Ok(())
}

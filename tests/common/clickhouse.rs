//! A real ClickHouse server (Debian's `clickhouse-server`, 18.16 on the test machines) for the
//! central-store tests: its own directory, loopback ports of its own, a generated config with
//! one password-protected user (tests/common/clickhouse_config.rs), no systemd. Stopped and removed on drop; [`ClickHouse::stop`]
//! and [`ClickHouse::start_again`] make outages (same data, same port).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::wait_until;

pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";
pub const USER: &str = "apisessions";

pub struct ClickHouse {
    pub dir: PathBuf,
    pub http_port: u16,
    pub password: String,
    /// Holds the password (what `central.password_file` names).
    pub password_file: PathBuf,
    /// The network namespace the server runs in (its loopback); `None`: this process's.
    ns: Option<String>,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ClickHouse {
    /// Starts a server in a fresh directory and waits until it answers.
    pub fn start(tag: &str) -> Self {
        Self::start_in(tag, None)
    }

    /// [`Self::start`] inside the network namespace `ns` (on its loopback), for daemons that
    /// run there.
    pub fn start_in(tag: &str, ns: Option<&str>) -> Self {
        assert!(
            Path::new(SERVER_BIN).exists(),
            "{SERVER_BIN} is missing: install clickhouse-server (`cargo xtask setup` does)"
        );
        let dir = std::env::temp_dir().join(format!("apis-ch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (http_port, tcp_port) = (free_port(), free_port());
        // Quotes and a backslash: the password must reach the server intact as a header.
        let password = format!("pw'\"\\{:08x}", std::process::id());
        let password_file = dir.join("password");
        fs::write(&password_file, format!("{password}\n")).unwrap();
        super::clickhouse_config::write_server_config(&dir, http_port, tcp_port, USER, &password)
            .unwrap();
        let mut server = Self {
            dir,
            http_port,
            password,
            password_file,
            ns: ns.map(str::to_owned),
            child: None,
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A `[central]` section for this server (database `apisessions`, this server's user and
    /// password file).
    pub fn central(&self, host_id: &str) -> apisessions::config::CentralSection {
        let mut section = apisessions::config::CentralSection::new(self.url().parse().unwrap());
        section.user = USER.into();
        section.password_file = Some(self.password_file.clone());
        section.host_id = Some(host_id.into());
        section
    }

    /// A command run where the server runs.
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            Some(ns) => super::TestNet::command(ns, program),
            None => Command::new(program),
        }
    }

    fn answers(&self) -> bool {
        let connect = || TcpStream::connect(("127.0.0.1", self.http_port));
        let connected = match &self.ns {
            Some(ns) => super::in_namespace(ns, connect),
            None => connect(),
        };
        let Ok(mut stream) = connected else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n";
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.ends_with("Ok.\n")
    }

    /// Starts the server (again, on the same data and port) and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = self
            .command(SERVER_BIN)
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(60), || self.answers());
        if !up {
            let log = fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
            let errors = fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            panic!(
                "clickhouse-server did not answer on {}:\n{log}\n{errors}",
                self.url()
            );
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s) and waits until it no longer answers.
    pub fn stop(&mut self) {
        self.halt();
        assert!(
            wait_until(Duration::from_secs(10), || !self.answers()),
            "the server stopped answering"
        );
    }

    fn halt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child this fixture started and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(30), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sql` as the fixture's user and returns the answer (panics on an error): for checks
    /// that read the tables directly, independent of the code under test.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .command("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", "@-"])
            .args(["-H", &format!("X-ClickHouse-User: {USER}")])
            .args(["-H", &format!("X-ClickHouse-Key: {}", self.password)])
            .arg(format!("{}/", self.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(sql.as_bytes())
                    .unwrap();
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The single number `sql` answers.
    pub fn number(&self, sql: &str) -> u64 {
        let answer = self.query(sql);
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {answer}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.halt();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! A real ClickHouse server (Debian's `clickhouse-server`, 18.16 on the test machines) for the
//! central-store tests: its own directory, loopback ports of its own, a generated config with
//! one password-protected user, no systemd. Stopped and removed on drop; [`ClickHouse::stop`]
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
        let d = dir.display();
        fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>
"#
            ),
        )
        .unwrap();
        let xml_password = password
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;");
        fs::write(
            dir.join("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <{USER}>
      <password>{xml_password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </{USER}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let mut server = Self {
            dir,
            http_port,
            password,
            password_file,
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

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
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
        let child = Command::new(SERVER_BIN)
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
        let out = Command::new("curl")
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

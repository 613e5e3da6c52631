//! A small ClickHouse client over the HTTP interface (port 8123), blocking (ureq): the shipper
//! runs on a thread of its own and the CLI runs one query at a time, so nothing here needs the
//! daemon's tokio runtime.
//!
//! Why HTTP and JSONEachRow rather than the `clickhouse` crate: that crate speaks RowBinary
//! with newer server features, while the servers in the field reach back to 18.16 (Debian's,
//! which the tests use). JSONEachRow reads and writes the same on every release.
//!
//! - Inserts: `INSERT INTO db.table (columns) FORMAT RowBinary` for exchanges (the bulk: a
//!   binary format the server takes without parsing text; JSONEachRow parsing dominated on
//!   18.16), `FORMAT JSONEachRow` for the rest; the statement in the URL, the rows in the body.
//! - Queries: the SQL text is a constant of this crate; every value from a user travels as
//!   *external data*: a temporary table `params` (one JSONEachRow row, typed by a structure)
//!   sent in a multipart body next to the query, which reads it with `(SELECT x FROM params)`
//!   or `IN (SELECT ... FROM ids)`. 18.16 has no query parameters (`{name:Type}` and
//!   `param_name=` arrived in 19.x; checked against the 18.16 server: "Unknown setting
//!   param_x"). On current releases external data still works; query parameters would be the
//!   shorter form.
//! - Authentication: the `X-ClickHouse-User` / `X-ClickHouse-Key` headers (18.16 accepts them,
//!   as it accepts basic auth); the password is never in a URL, a log line or an error.

use std::{
    fmt,
    io::{BufRead, BufReader, Read},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::CentralError;
use crate::config::CentralSection;

/// Bytes of a server's error answer kept for the error message.
const ERROR_BODY: u64 = 4096;
/// A line of a query's answer at most (a session summary or an exchange row).
const MAX_ROW: usize = 16 << 20;

/// The environment variable that holds the password when no `password_file` is configured.
pub const PASSWORD_ENV: &str = "APISESSIONS_CENTRAL_PASSWORD";

/// An external table sent with a query: its name, its ClickHouse structure (`name Type, ...`)
/// and its rows as JSON objects.
pub struct ExternalTable<'a> {
    pub name: &'a str,
    pub structure: &'a str,
    pub rows: Vec<serde_json::Value>,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    user: String,
    password: Option<String>,
    database: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of every rendering.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the configured server; reads the password (file, else environment).
    pub fn new(config: &CentralSection) -> Result<Self, CentralError> {
        let password = match &config.password_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CentralError::Password {
                        path: path.clone(),
                        source,
                    })?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: format!("{}/", config.url),
            user: config.user.clone(),
            password,
            database: config.database.clone(),
        })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The URL for `query` with the settings every request uses.
    fn url_for(&self, query: &str, extra: &[(&str, &str)]) -> String {
        let mut params = form_urlencoded::Serializer::new(String::new());
        params.append_pair("query", query);
        // 64-bit integers as JSON numbers (18.16 quotes them by default).
        params.append_pair("output_format_json_quote_64bit_integers", "0");
        for (name, value) in extra {
            params.append_pair(name, value);
        }
        format!("{}?{}", self.base, params.finish())
    }

    fn post(
        &self,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<http::Response<ureq::Body>, CentralError> {
        let mut request = self.agent.post(url).header("X-ClickHouse-User", &self.user);
        if let Some(password) = &self.password {
            request = request.header("X-ClickHouse-Key", password);
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let mut response = request
            .send(body)
            .map_err(|e| CentralError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let message = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY)
            .read_to_string()
            .unwrap_or_default();
        let message = message.trim().to_owned();
        Err(
            if matches!(status, 401 | 403) || message.contains("Code: 193") {
                CentralError::Auth(message)
            } else {
                CentralError::Server { status, message }
            },
        )
    }

    /// Runs a statement (DDL, ALTER) that answers nothing of interest.
    pub fn execute(&self, sql: &str) -> Result<(), CentralError> {
        let url = self.url_for("", &[]);
        let mut response = self.post(&url, Some("text/plain"), sql.as_bytes())?;
        let _ = response.body_mut().read_to_vec();
        Ok(())
    }

    /// Inserts JSONEachRow `rows` (one JSON object per line) into `table` of the configured
    /// database. Returns once the server acknowledged the insert.
    pub fn insert(&self, table: &str, rows: &[u8]) -> Result<(), CentralError> {
        let query = format!("INSERT INTO {}.{table} FORMAT JSONEachRow", self.database);
        self.insert_body(&query, "application/x-ndjson", rows)
    }

    /// Inserts RowBinary `rows` of `columns` (a constant column list, in the rows' order) into
    /// `table` of the configured database. Returns once the server acknowledged the insert.
    pub fn insert_row_binary(
        &self,
        table: &str,
        columns: &str,
        rows: &[u8],
    ) -> Result<(), CentralError> {
        let query = format!(
            "INSERT INTO {}.{table} ({columns}) FORMAT RowBinary",
            self.database
        );
        self.insert_body(&query, "application/octet-stream", rows)
    }

    fn insert_body(
        &self,
        query: &str,
        content_type: &str,
        rows: &[u8],
    ) -> Result<(), CentralError> {
        let url = self.url_for(query, &[]);
        let mut response = self.post(&url, Some(content_type), rows)?;
        let _ = response.body_mut().read_to_vec();
        Ok(())
    }

    /// Runs `sql` (a constant; it must end without a FORMAT clause) with `tables` sent as
    /// external data, and hands each answer row to `visit` until it returns false.
    pub fn select<T: DeserializeOwned>(
        &self,
        sql: &str,
        tables: &[ExternalTable<'_>],
        mut visit: impl FnMut(T) -> bool,
    ) -> Result<(), CentralError> {
        let query = format!("{sql} FORMAT JSONEachRow");
        let mut settings = Vec::new();
        for table in tables {
            settings.push((format!("{}_structure", table.name), table.structure));
            settings.push((format!("{}_format", table.name), "JSONEachRow"));
        }
        let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let url = self.url_for(&query, &extra);
        let response = if tables.is_empty() {
            self.post(&url, None, &[])?
        } else {
            let (content_type, body) = multipart(tables)?;
            self.post(&url, Some(&content_type), &body)?
        };
        let mut reader = BufReader::new(response.into_body().into_reader());
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_ROW as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| CentralError::Unreachable(e.to_string()))?;
            if read == 0 {
                return Ok(());
            }
            if line.len() > MAX_ROW {
                return Err(CentralError::BadAnswer(format!(
                    "a row of over {MAX_ROW} bytes"
                )));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let row = serde_json::from_slice(&line).map_err(|e| {
                CentralError::BadAnswer(format!("{e}: {}", String::from_utf8_lossy(&line)))
            })?;
            if !visit(row) {
                return Ok(());
            }
        }
    }

    /// Every answer row of `sql` (see [`Client::select`]).
    pub fn select_all<T: DeserializeOwned>(
        &self,
        sql: &str,
        tables: &[ExternalTable<'_>],
    ) -> Result<Vec<T>, CentralError> {
        let mut out = Vec::new();
        self.select(sql, tables, |row| {
            out.push(row);
            true
        })?;
        Ok(out)
    }
}

/// A multipart/form-data body with one file part per external table (what ClickHouse's HTTP
/// interface reads external data from). The rows are JSON lines: serde_json escapes every
/// control character, so no line break appears inside a row, and the boundary is random and
/// checked against the payload anyway.
fn multipart(tables: &[ExternalTable<'_>]) -> Result<(String, Vec<u8>), CentralError> {
    let mut parts = Vec::new();
    for table in tables {
        let mut rows = Vec::new();
        for row in &table.rows {
            serde_json::to_writer(&mut rows, row)
                .map_err(|e| CentralError::BadAnswer(e.to_string()))?;
            rows.push(b'\n');
        }
        parts.push((table.name, rows));
    }
    let boundary = loop {
        let boundary = format!(
            "apisessions-{:016x}{:016x}",
            getrandom::u64().unwrap_or(0),
            getrandom::u64().unwrap_or(1)
        );
        let clash = parts
            .iter()
            .any(|(_, rows)| memchr::memmem::find(rows, boundary.as_bytes()).is_some());
        if !clash {
            break boundary;
        }
    };
    let mut body = Vec::new();
    for (name, rows) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&rows);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok((format!("multipart/form-data; boundary={boundary}"), body))
}

//! What the query commands print: the `sessions` table, the `show` page, the `endpoints` table,
//! and `export`'s formats.

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    analysis::inventory::EndpointRow,
    exchange::rfc3339_ns,
    record::{SessionSummary, StoredExchange},
};

/// `2026-11-29T15:04:03Z` from ns since the epoch (seconds are enough in tables).
pub fn time_s(ns: u64) -> String {
    seconds(&rfc3339_ns(ns))
}

/// An RFC 3339 UTC time with its fraction of a second dropped (`…:03.123456Z` -> `…:03Z`).
pub fn seconds(rfc3339: &str) -> String {
    match rfc3339.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => rfc3339.to_owned(),
    }
}

pub fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Captured text for a terminal: control characters (escape sequences that would move the
/// cursor or recolour the screen) shown escaped.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A point in time given as an age like `1h` or `30m` (that long before `now`) or an RFC 3339
/// time, in ns since the epoch: `--since`/`--until` and the console's filters.
pub fn parse_time(text: &str, now: SystemTime) -> Result<u64, String> {
    let time = match humantime::parse_duration(text) {
        Ok(age) => now.checked_sub(age).ok_or("too long ago")?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!("'{text}' is neither an age (1h, 30m, 7d) nor a time (2026-11-29T15:00:00Z)")
        })?,
    };
    Ok(time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

/// The `endpoints` table: one line per endpoint, as the rows come (host, endpoint, method).
pub fn endpoints_table(rows: &[EndpointRow]) -> String {
    let mut out = format!(
        "{:<20}  {:<7}  {:<36}  {:>7}  {:>8}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>8}  {:<12}  {:<20}  {:<10}  {:>4}  {}\n",
        "HOST",
        "METHOD",
        "ENDPOINT",
        "CALLS",
        "SESSIONS",
        "2XX",
        "4XX",
        "5XX",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "AUTH",
        "SENSITIVE",
        "SPEC",
        "RISK",
        "LAST SEEN (UTC)"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let list = |kinds: &[&str]| {
        if kinds.is_empty() {
            "-".to_owned()
        } else {
            kinds.join(",")
        }
    };
    for row in rows {
        let class = |c: &str| row.status_classes.get(c).copied().unwrap_or(0);
        let last_seen = row.last_seen.as_deref().map_or("-".to_owned(), seconds);
        let _ = writeln!(
            out,
            "{:<20}  {:<7}  {:<36}  {:>7}  {:>8}  {:>6}  {:>6}  {:>6}  {:>8}  {:>8}  {:>8}  {:<12}  {:<20}  {:<10}  {:>4}  {}",
            shorten(&printable(&row.host), 20),
            shorten(&printable(&row.method), 7),
            shorten(&printable(&row.endpoint), 36),
            row.calls,
            row.sessions,
            class("2xx"),
            class("4xx"),
            class("5xx"),
            ms(row.latency_ms.p50),
            ms(row.latency_ms.p95),
            ms(row.latency_ms.p99),
            shorten(&list(&row.auth), 12),
            shorten(&list(&row.sensitive), 20),
            row.spec_status.map_or("-", |s| s.name()),
            row.risk,
            last_seen,
        );
    }
    out
}

/// The `sessions` table: one line per session, newest first.
pub fn sessions_table(sessions: &[SessionSummary]) -> String {
    let mut out = format!(
        "{:<32}  {:<20}  {:>8}  {:>5}  {:>7}  {:>4}  {:<15}  {:<16}  {:<20}  {}\n",
        "SESSION",
        "START (UTC)",
        "DURATION",
        "REQS",
        "ATTACKS",
        "RISK",
        "CLIENT IP",
        "USER",
        "HOST",
        "TOP ENDPOINTS"
    );
    for s in sessions {
        let ip = match s.client_ips.len() {
            0 => "-".to_owned(),
            1 => s.client_ips[0].clone(),
            n => format!("{} +{}", s.client_ips[0], n - 1),
        };
        let user = s
            .user
            .clone()
            .unwrap_or_else(|| format!("({})", s.key_kind));
        let endpoints: Vec<String> = s
            .endpoints
            .iter()
            .take(3)
            .map(|(e, n)| format!("{} ×{n}", printable(e)))
            .collect();
        let _ = writeln!(
            out,
            "{:<32}  {:<20}  {:>8}  {:>5}  {:>7}  {:>4}  {:<15}  {:<16}  {:<20}  {}",
            s.session_id,
            time_s(s.start_ns),
            duration(s.end_ns.saturating_sub(s.start_ns)),
            s.requests,
            s.attack_count(),
            s.abuse.risk,
            shorten(&ip, 15),
            shorten(&user, 16),
            shorten(s.hosts.first().map_or("-", String::as_str), 20),
            endpoints.join(", "),
        );
    }
    if sessions.is_empty() {
        out.push_str("(no sessions match)\n");
    }
    out
}

/// The `show` page: the session's header, then its request timeline.
pub fn session_page(s: &SessionSummary, exchanges: &[StoredExchange]) -> String {
    let mut out = String::new();
    let counts = |list: Vec<String>| {
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join(", ")
        }
    };
    let _ = writeln!(out, "session   {}", s.session_id);
    let _ = writeln!(
        out,
        "time      {} .. {} ({})",
        time_s(s.start_ns),
        time_s(s.end_ns),
        duration(s.end_ns.saturating_sub(s.start_ns))
    );
    let _ = writeln!(out, "key       {} ({})", s.key_kind, s.key_name);
    let _ = writeln!(
        out,
        "user      {}{}",
        s.user.as_deref().unwrap_or("-"),
        s.role
            .as_ref()
            .map_or(String::new(), |r| format!(" (role {r})"))
    );
    let _ = writeln!(out, "clients   {}", counts(s.client_ips.clone()));
    let _ = writeln!(out, "agents    {}", counts(s.user_agents.clone()));
    let _ = writeln!(out, "hosts     {}", counts(s.hosts.clone()));
    let _ = writeln!(out, "servers   {}", counts(s.server_ips.clone()));
    let _ = writeln!(
        out,
        "requests  {} ({} incomplete, {} slow)",
        s.requests, s.incomplete, s.slow
    );
    let _ = writeln!(
        out,
        "methods   {}",
        counts(s.methods.iter().map(|(m, n)| format!("{m} {n}")).collect())
    );
    let _ = writeln!(
        out,
        "statuses  {}",
        counts(s.statuses.iter().map(|(c, n)| format!("{c} {n}")).collect())
    );
    let _ = writeln!(
        out,
        "bytes     {} sent, {} received",
        s.request_bytes, s.response_bytes
    );
    if !s.attacks.is_empty() {
        let classes: Vec<String> = s
            .attacks
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        let _ = writeln!(out, "attacks   {}", classes.join(", "));
    }
    let _ = writeln!(out, "risk      {}", s.abuse.risk);
    for (i, signal) in s.abuse.signals.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{} {}: {}",
            if i == 0 { "signals   " } else { "          " },
            signal.name.as_str(),
            signal.score,
            printable(&signal.reason)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<27}  {:<7}  {:<40}  {:>6}  {:>9}  {:>9}  {:<10}",
        "TIME (UTC)", "METHOD", "ENDPOINT", "STATUS", "TTFB ms", "SIZE", "SPEC"
    );
    for e in exchanges {
        let status = e.status_code.map_or("-".to_owned(), |c| c.to_string());
        let ttfb = e
            .ttfb_us
            .map_or("-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0));
        let mut flags = String::new();
        if e.request_truncated || e.response_truncated {
            flags.push_str(" [truncated]");
        }
        if e.gap {
            flags.push_str(" [gap]");
        }
        if e.slow {
            flags.push_str(" [slow]");
        }
        if e.tls {
            flags.push_str(" [tls]");
        }
        for finding in &e.attacks {
            let _ = write!(flags, " {}@{}", finding.class, printable(&finding.point));
        }
        let _ = writeln!(
            out,
            "{:<27}  {:<7}  {:<40}  {:>6}  {:>9}  {:>9}  {:<10}{flags}",
            rfc3339_ns(e.ts_ns),
            e.method.as_deref().unwrap_or("-"),
            shorten(&printable(e.endpoint.as_deref().unwrap_or("-")), 40),
            status,
            ttfb,
            e.response_body_len.unwrap_or(0),
            e.spec_status.map_or("-", |s| s.name()),
        );
    }
    out
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    /// HAR 1.2, as browsers' developer tools and HAR viewers open it.
    Har,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ndjson" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            "har" => Ok(Self::Har),
            other => Err(format!("unknown format '{other}' (ndjson, csv, har)")),
        }
    }
}

/// CSV columns: the NDJSON fields that are scalars, in the same order.
const CSV_COLUMNS: &[&str] = &[
    "ts",
    "session_id",
    "client_ip",
    "client_port",
    "server_ip",
    "server_port",
    "method",
    "host",
    "uri",
    "endpoint",
    "version",
    "user_agent",
    "referrer",
    "status_code",
    "status_msg",
    "request_body_len",
    "response_body_len",
    "ttfb_ms",
    "duration_ms",
    "request_truncated",
    "response_truncated",
    "gap",
    // Later additions go last, so that columns keep their positions.
    "peer_ip",
    "peer_port",
    "joined",
    "upstream_ms",
    "upstream_ip",
    "upstream_port",
    "server_netns",
    "server_cgroup",
    "attacks",
    "spec_status",
    "slow",
    "tls",
];

/// Writes exchanges one at a time in the chosen format.
pub struct Exporter<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

impl<W: Write> Exporter<W> {
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            header_done: false,
        }
    }

    pub fn write(&mut self, session_id: &str, exchange: &StoredExchange) -> io::Result<()> {
        let record = exchange.to_json(session_id);
        match self.format {
            Format::Har => {
                // Entries are streamed between the log's head and tail: exports can be large.
                if self.header_done {
                    self.out.write_all(b",\n")?;
                } else {
                    self.header_done = true;
                    write!(self.out, "{HAR_HEAD}")?;
                }
                serde_json::to_writer(&mut self.out, &har_entry(session_id, exchange))
                    .map_err(io::Error::other)
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut self.out, &record)?;
                self.out.write_all(b"\n")
            }
            Format::Csv => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(self.out, "{}", CSV_COLUMNS.join(","))?;
                }
                let fields: Vec<String> = CSV_COLUMNS
                    .iter()
                    .map(|column| match record.get(*column) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        // `class@point;class@point`
                        Some(_) if *column == "attacks" => csv_field(
                            &exchange
                                .attacks
                                .iter()
                                .map(|f| format!("{}@{}", f.class, f.point))
                                .collect::<Vec<_>>()
                                .join(";"),
                        ),
                        Some(serde_json::Value::String(s)) => csv_field(s),
                        Some(other) => other.to_string(),
                    })
                    .collect();
                writeln!(self.out, "{}", fields.join(","))
            }
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
        if self.format == Format::Har {
            if !self.header_done {
                write!(self.out, "{HAR_HEAD}")?;
            }
            self.out.write_all(b"\n]}}\n")?;
        }
        self.out.flush()
    }
}

/// RFC 4180 quoting, where needed.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

const HAR_HEAD: &str = concat!(
    r#"{"log":{"version":"1.2","creator":{"name":"apisessions","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""},"pages":[],"entries":["#,
    "\n"
);

/// One HAR 1.2 entry. Only what is stored can be given: no cookies, no bodies, and of the
/// headers only User-Agent, Referer and the content types; sizes and timings are real.
fn har_entry(session_id: &str, e: &StoredExchange) -> serde_json::Value {
    let ms = |us: Option<u64>| us.map_or(-1.0, |us| us as f64 / 1000.0);
    let header = |name: &str, value: &Option<String>| {
        value
            .as_ref()
            .map(|v| serde_json::json!({"name": name, "value": v}))
    };
    let uri = e.uri.as_deref().unwrap_or("/");
    let host = e
        .host
        .clone()
        .unwrap_or_else(|| format!("{}:{}", e.server_ip, e.server_port));
    let query: Vec<serde_json::Value> = uri
        .split_once('?')
        .map(|(_, q)| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                .collect()
        })
        .unwrap_or_default();
    // HTTP/1.x versions are stored as digits ("1.1"), HTTP/2's whole ("HTTP/2").
    let version = match e.version.as_deref().unwrap_or("1.1") {
        whole if whole.starts_with("HTTP/") => whole.to_owned(),
        digits => format!("HTTP/{digits}"),
    };
    let (ttfb, duration) = (ms(e.ttfb_us), ms(e.duration_us));
    let request_headers: Vec<serde_json::Value> = [
        header("Host", &e.host),
        header("User-Agent", &e.user_agent),
        header("Referer", &e.referrer),
        header("Content-Type", &e.request_content_type),
    ]
    .into_iter()
    .flatten()
    .collect();
    let response_headers: Vec<serde_json::Value> = header("Content-Type", &e.response_content_type)
        .into_iter()
        .collect();
    serde_json::json!({
        "startedDateTime": rfc3339_ns(e.ts_ns),
        "time": duration.max(0.0),
        "request": {
            "method": e.method.as_deref().unwrap_or(""),
            "url": format!("http://{host}{uri}"),
            "httpVersion": version,
            "cookies": [],
            "headers": request_headers,
            "queryString": query,
            "headersSize": -1,
            "bodySize": e.request_body_len.map_or(-1, |n| n as i64),
        },
        "response": {
            "status": e.status_code.unwrap_or(0),
            "statusText": e.status_msg.as_deref().unwrap_or(""),
            "httpVersion": version,
            "cookies": [],
            "headers": response_headers,
            "content": {
                "size": e.response_body_len.map_or(0, |n| n as i64),
                "mimeType": e.response_content_type.as_deref().unwrap_or("x-unknown"),
            },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": e.response_body_len.map_or(-1, |n| n as i64),
        },
        "cache": {},
        "timings": {
            "send": 0,
            "wait": ttfb.max(0.0),
            "receive": if duration >= 0.0 && ttfb >= 0.0 { duration - ttfb } else { -1.0 },
        },
        "serverIPAddress": e.server_ip,
        "connection": e.peer_port.to_string(),
        "_session_id": session_id,
        "_client_ip": e.client_ip,
        "_peer_ip": e.peer_ip,
        "_upstream_ms": e.upstream_us.map(|us| us as f64 / 1000.0),
        "_upstream_ip": e.upstream_ip,
        "_upstream_port": e.upstream_port,
        "_server_netns": e.server_netns,
        "_server_cgroup": e.server_cgroup,
        "_attacks": e.attacks,
        "_spec_status": e.spec_status,
        "_slow": e.slow,
        "_tls": e.tls,
        "_truncated": e.request_truncated || e.response_truncated,
        "_gap": e.gap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uri: &str, status: u16) -> StoredExchange {
        StoredExchange {
            ts_ns: 1_764_000_000_000_000_000,
            client_ip: "192.0.2.1".into(),
            client_port: 40000,
            server_ip: "10.0.0.1".into(),
            server_port: 8080,
            peer_ip: "192.0.2.1".into(),
            peer_port: 40000,
            method: Some("GET".into()),
            host: Some("api.test".into()),
            uri: Some(uri.into()),
            endpoint: Some(crate::endpoint::template(uri)),
            version: Some("1.1".into()),
            user_agent: Some("ua, with \"quotes\"".into()),
            referrer: None,
            request_content_type: None,
            response_content_type: Some("application/json".into()),
            status_code: Some(status),
            status_msg: Some("OK".into()),
            request_body_len: Some(0),
            response_body_len: Some(42),
            ttfb_us: Some(1500),
            duration_us: Some(2500),
            request_truncated: false,
            response_truncated: false,
            gap: false,
            joined: false,
            upstream_us: None,
            upstream_ip: None,
            upstream_port: None,
            server_netns: None,
            server_cgroup: None,
            params: vec![],
            attacks: Vec::new(),
            spec_status: None,
            slow: false,
            tls: false,
            http2: None,
            exchange_id: None,
        }
    }

    fn export(format: Format, exchanges: &[StoredExchange]) -> String {
        let mut buf = Vec::new();
        let mut exporter = Exporter::new(&mut buf, format);
        for e in exchanges {
            exporter.write("ab".repeat(16).as_str(), e).unwrap();
        }
        exporter.finish().unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn ndjson_round_trips_with_the_design_field_names() {
        let text = export(Format::Ndjson, &[sample("/users/7?x=1", 200)]);
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        for field in [
            "ts",
            "session_id",
            "client_ip",
            "client_port",
            "server_ip",
            "server_port",
            "method",
            "host",
            "uri",
            "endpoint",
            "version",
            "user_agent",
            "referrer",
            "status_code",
            "status_msg",
            "request_body_len",
            "response_body_len",
            "ttfb_ms",
            "duration_ms",
            "request_truncated",
            "response_truncated",
            "params",
            "peer_ip",
            "peer_port",
            "joined",
            "upstream_ms",
            "upstream_ip",
            "upstream_port",
            "server_netns",
            "server_cgroup",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["endpoint"], "/users/{id}");
        assert_eq!(value["ttfb_ms"], 1.5);
        assert_eq!(value["ts"], "2025-11-24T16:00:00.000000Z");
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let text = export(Format::Csv, &[sample("/a", 200), sample("/b", 404)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ts,session_id,client_ip"));
        assert!(
            lines[1].contains(r#""ua, with ""quotes""""#),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2].split(',').count(),
            lines[0].split(',').count() + 1,
            "the quoted UA holds one comma"
        );
    }

    #[test]
    fn har_is_one_valid_har_1_2_document() {
        for exchanges in [
            vec![],
            vec![sample("/a?q=1&page=2", 200), sample("/b", 500)],
        ] {
            let text = export(Format::Har, &exchanges);
            let har: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(har["log"]["version"], "1.2");
            assert_eq!(har["log"]["creator"]["name"], "apisessions");
            let entries = har["log"]["entries"].as_array().unwrap();
            assert_eq!(entries.len(), exchanges.len());
            for entry in entries {
                for field in [
                    "startedDateTime",
                    "time",
                    "request",
                    "response",
                    "cache",
                    "timings",
                ] {
                    assert!(entry.get(field).is_some(), "entry without {field}");
                }
                for field in [
                    "method",
                    "url",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "queryString",
                    "headersSize",
                    "bodySize",
                ] {
                    assert!(
                        entry["request"].get(field).is_some(),
                        "request without {field}"
                    );
                }
                for field in [
                    "status",
                    "statusText",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "content",
                    "redirectURL",
                    "headersSize",
                    "bodySize",
                ] {
                    assert!(
                        entry["response"].get(field).is_some(),
                        "response without {field}"
                    );
                }
                assert!(
                    entry["response"]["content"].get("size").is_some()
                        && entry["response"]["content"].get("mimeType").is_some()
                );
                assert!(entry["timings"]["wait"].as_f64().unwrap() >= 0.0);
            }
            if let Some(first) = entries.first() {
                assert_eq!(first["request"]["url"], "http://api.test/a?q=1&page=2");
                assert_eq!(first["request"]["queryString"][1]["name"], "page");
                assert_eq!(first["timings"]["receive"], 1.0);
            }
        }
    }

    #[test]
    fn har_versions_of_http1_and_http2() {
        let mut h2 = sample("/h2", 200);
        h2.version = Some("HTTP/2".into());
        let text = export(Format::Har, &[sample("/h1", 200), h2]);
        let har: serde_json::Value = serde_json::from_str(&text).unwrap();
        let versions: Vec<&str> = har["log"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["httpVersion"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["HTTP/1.1", "HTTP/2"]);
    }

    #[test]
    fn tables_have_their_columns() {
        let summary = SessionSummary {
            session_id: "ab".repeat(16),
            start_ns: 1_764_000_000_000_000_000,
            end_ns: 1_764_000_090_000_000_000,
            requests: 3,
            key_kind: "cookie".into(),
            client_ips: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            hosts: vec!["api.test".into()],
            endpoints: vec![("GET /users/{id}".into(), 2), ("POST /login".into(), 1)],
            ..SessionSummary::default()
        };
        let table = sessions_table(std::slice::from_ref(&summary));
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        for column in [
            "SESSION",
            "START (UTC)",
            "DURATION",
            "REQS",
            "CLIENT IP",
            "USER",
            "HOST",
            "TOP ENDPOINTS",
        ] {
            assert!(header.contains(column), "{header}");
        }
        let row = lines.next().unwrap();
        for cell in [
            "abab",
            "2025-11-24T16:00:00Z",
            "1m30s",
            "192.0.2.1 +1",
            "(cookie)",
            "api.test",
            "GET /users/{id} ×2",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        let page = session_page(&summary, &[sample("/users/7", 200)]);
        assert!(
            page.contains("TIME (UTC)") && page.contains("/users/{id}") && page.contains("1.5"),
            "{page}"
        );
    }
}

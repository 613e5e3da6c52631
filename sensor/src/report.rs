//! What the query commands print: the `sessions` table, the `show` page, and `export`'s formats.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use crate::{
    exchange::rfc3339_ns,
    store::{SessionSummary, StoredExchange},
};

/// `2026-11-29T15:04:03Z` from ns since the epoch (seconds are enough in tables).
fn time_s(ns: u64) -> String {
    let text = rfc3339_ns(ns);
    match text.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => text,
    }
}

fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The `sessions` table: one line per session, newest first.
pub fn sessions_table(sessions: &[SessionSummary]) -> String {
    let mut out = format!(
        "{:<32}  {:<20}  {:>8}  {:>5}  {:<15}  {:<16}  {:<20}  {}\n",
        "SESSION", "START (UTC)", "DURATION", "REQS", "CLIENT IP", "USER", "HOST", "TOP ENDPOINTS"
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
            .map(|(e, n)| format!("{e} ×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<32}  {:<20}  {:>8}  {:>5}  {:<15}  {:<16}  {:<20}  {}",
            s.session_id,
            time_s(s.start_ns),
            duration(s.end_ns.saturating_sub(s.start_ns)),
            s.requests,
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
    let _ = writeln!(
        out,
        "requests  {} ({} incomplete)",
        s.requests, s.incomplete
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
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<27}  {:<7}  {:<40}  {:>6}  {:>9}  {:>9}",
        "TIME (UTC)", "METHOD", "ENDPOINT", "STATUS", "TTFB ms", "SIZE"
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
        let _ = writeln!(
            out,
            "{:<27}  {:<7}  {:<40}  {:>6}  {:>9}  {:>9}{flags}",
            rfc3339_ns(e.ts_ns),
            e.method.as_deref().unwrap_or("-"),
            shorten(e.endpoint.as_deref().unwrap_or("-"), 40),
            status,
            ttfb,
            e.response_body_len.unwrap_or(0),
        );
    }
    out
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ndjson" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            other => Err(format!("unknown format '{other}' (ndjson, csv)")),
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
                        Some(serde_json::Value::String(s)) => csv_field(s),
                        Some(other) => other.to_string(),
                    })
                    .collect();
                writeln!(self.out, "{}", fields.join(","))
            }
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
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

//! The HTML pages: the sessions list, a session, the status page, the login form. Built with
//! maud, which escapes every inserted value: captured text is always text, never markup. Links
//! that carry captured values put them in query strings, percent-encoded
//! ([`SessionQuery::link`]); no captured value ever becomes a URL of its own.

use std::time::SystemTime;

use axum::{
    extract::{Path, Query, State},
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::{
    console::{
        ConsoleError, SharedState, chart,
        filters::{PAGE_SIZE, SessionQuery, TimelineQuery},
    },
    record::{SessionSummary, SignalName, StoredExchange},
    report::{self, Exporter, Format},
    stats::{StatsError, StatsReport},
};

/// Exchanges the session page lists at most (the downloads hold them all).
pub const MAX_TIMELINE: usize = 2000;

fn layout(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    title { (title) " · apisessions" }
                    link rel="stylesheet" href="/static/console.css";
                }
                body {
                    header.top {
                        a.brand href="/" { "apisessions" }
                        nav { a href="/" { "Sessions" } a href="/status" { "Status" } }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{:.1}", us as f64 / 1000.0))
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A risk figure with its level as a class (the stylesheet colours it).
fn risk(risk: u8) -> Markup {
    let level = match risk {
        0..30 => "low",
        30..60 => "medium",
        _ => "high",
    };
    html! { span class={"risk " (level)} { (risk) } }
}

/// `GET /`: the sessions list with its filter form.
pub async fn sessions(
    State(state): State<SharedState>,
    Query(query): Query<SessionQuery>,
) -> Result<Response, ConsoleError> {
    if query.has_blanks() {
        return Ok(Redirect::to(&query.link("/", &[])).into_response());
    }
    let filters = query
        .parse(SystemTime::now(), PAGE_SIZE)
        .map_err(ConsoleError::BadRequest)?;
    let page = filters.page;
    let (list, more) = state.sessions(filters).await?;
    let filter_link =
        |name: &'static str, value: &str| query.link("/", &[(name, Some(value)), ("page", None)]);
    let field = |name: &'static str, label: &str, hint: &str| {
        let value = query
            .pairs()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v);
        html! {
            label { (label) input type="text" name=(name) value=[value] placeholder=(hint); }
        }
    };
    let body = html! {
        h1 { "Sessions" }
        form.filters method="get" action="/" {
            (field("since", "since", "1h or RFC 3339"))
            (field("until", "until", "RFC 3339"))
            (field("host", "host", "api.example"))
            (field("user", "user", ""))
            (field("ip", "client IP", ""))
            (field("status", "status", "404"))
            (field("method", "method", "POST"))
            (field("endpoint", "endpoint", "/users/{id}"))
            (field("min_risk", "min. risk", "0-100"))
            label { "signal"
                select name="signal" {
                    option value="" { "any" }
                    @for name in SignalName::ALL {
                        option value=(name.as_str())
                            selected[query.signal.as_deref() == Some(name.as_str())] { (name.as_str()) }
                    }
                }
            }
            (field("session", "session id", ""))
            button type="submit" { "Filter" }
            @if query.any() { a.clear href="/" { "clear filters" } }
        }
        @if list.is_empty() {
            p.muted { "No sessions match." }
        } @else {
            table.sessions {
                thead { tr {
                    th { "Session" } th { "Start (UTC)" } th { "Duration" } th.num { "Requests" }
                    th.num { "Attacks" } th.num { "Risk" } th { "User" } th { "Role" }
                    th { "Client IP" } th { "Host" } th { "Top endpoints" }
                } }
                tbody {
                    @for s in &list {
                        tr {
                            td.id { a href={"/sessions/" (s.session_id)} { (s.session_id) } }
                            td { (report::time_s(s.start_ns)) }
                            td { (report::duration(s.end_ns.saturating_sub(s.start_ns))) }
                            td.num { (s.requests) }
                            // Hook: the attacks issue adds per-class counts to the summary;
                            // their sum goes here.
                            td.num.muted { "-" }
                            td.num { (risk(s.abuse.risk)) }
                            td {
                                @match &s.user {
                                    Some(user) => a href=(filter_link("user", user)) { (user) },
                                    None => span.muted { "(" (s.key_kind) ")" },
                                }
                            }
                            td { (s.role.as_deref().unwrap_or("-")) }
                            td {
                                @for (i, ip) in s.client_ips.iter().take(3).enumerate() {
                                    @if i > 0 { ", " }
                                    a href=(filter_link("ip", ip)) { (ip) }
                                }
                                @if s.client_ips.len() > 3 { " +" (s.client_ips.len() - 3) }
                            }
                            td {
                                @if let Some(host) = s.hosts.first() {
                                    a href=(filter_link("host", host)) { (report::shorten(host, 40)) }
                                }
                            }
                            td.endpoints {
                                @for (endpoint, count) in s.endpoints.iter().take(3) {
                                    span.endpoint { (report::shorten(endpoint, 60)) " ×" (count) }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.pages {
            @if page > 1 {
                a href=(query.link("/", &[("page", Some(&(page - 1).to_string()))])) { "← newer" }
            }
            span { "page " (page) }
            @if more {
                a href=(query.link("/", &[("page", Some(&(page + 1).to_string()))])) { "older →" }
            }
        }
    };
    Ok(layout("Sessions", body).into_response())
}

/// A count per value of one statistic, each a link that filters the timeline by it.
fn stat_links<'a>(
    id: &str,
    timeline: &TimelineQuery,
    name: &'static str,
    active: Option<&str>,
    values: impl Iterator<Item = (String, &'a u64)>,
) -> Markup {
    let link = |value: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (n, v) in [
            ("method", &timeline.method),
            ("status", &timeline.status),
            ("endpoint", &timeline.endpoint),
            ("ip", &timeline.ip),
        ] {
            if n != name
                && let Some(v) = v.as_deref().filter(|v| !v.is_empty())
            {
                query.append_pair(n, v);
            }
        }
        query.append_pair(name, value);
        format!("/sessions/{id}?{}", query.finish())
    };
    html! {
        ul.stats {
            @for (value, count) in values {
                li {
                    a href=(link(&value)) class=[(active == Some(value.as_str())).then_some("active")] {
                        (value)
                    }
                    " " span.count { (count) }
                }
            }
        }
    }
}

/// `GET /sessions/{id}`: the session's header, statistics, chart and timeline.
pub async fn session(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(timeline): Query<TimelineQuery>,
) -> Result<Html<String>, ConsoleError> {
    crate::store::id_bytes(&id)?;
    let filter = timeline.clone();
    let (s, exchanges, matched) = state
        .session(id, MAX_TIMELINE, move |e| filter.matches(e))
        .await?;
    Ok(layout(
        &format!("Session {}", s.session_id),
        session_body(&s, &exchanges, matched, &timeline),
    ))
}

/// The session page's content (apart from the handler, for the tests).
pub fn session_body(
    s: &SessionSummary,
    exchanges: &[StoredExchange],
    matched: usize,
    timeline: &TimelineQuery,
) -> Markup {
    let id = &s.session_id;
    let list = |values: &[String]| {
        html! {
            @if values.is_empty() { span.muted { "-" } }
            @for v in values { span.value { (v) } }
        }
    };
    let endpoint_of = |key: &str| key.split_once(' ').map_or(key, |(_, p)| p).to_owned();
    html! {
        h1 { "Session " span.id { (id) } }
        section.head {
            dl {
                dt { "Time (UTC)" }
                dd { (report::time_s(s.start_ns)) " – " (report::time_s(s.end_ns))
                     " (" (report::duration(s.end_ns.saturating_sub(s.start_ns))) ")" }
                dt { "Key" } dd { (s.key_kind) " (" (s.key_name) ")" }
                dt { "User" } dd { (s.user.as_deref().unwrap_or("-"))
                    @if let Some(role) = &s.role { " (role " (role) ")" } }
                dt { "Client IPs" } dd { (list(&s.client_ips)) }
                dt { "User agents" } dd { (list(&s.user_agents)) }
                dt { "Hosts" } dd { (list(&s.hosts)) }
                dt { "Servers" } dd { (list(&s.server_ips)) }
                dt { "Requests" } dd { (s.requests) " (" (s.incomplete) " incomplete), sent "
                    (bytes(s.request_bytes)) ", received " (bytes(s.response_bytes)) }
                dt { "Risk" } dd { (risk(s.abuse.risk)) }
            }
            @if !s.abuse.signals.is_empty() {
                table.signals {
                    thead { tr { th { "Signal" } th.num { "Score" } th { "Reason" } } }
                    tbody {
                        @for signal in &s.abuse.signals {
                            tr { td { (signal.name.as_str()) } td.num { (signal.score) } td { (signal.reason) } }
                        }
                    }
                }
            }
        }
        section.statistics {
            h2 { "Statistics" }
            p.muted { "Each value filters the timeline."
                @if timeline.any() { " " a href={"/sessions/" (id)} { "Show all requests" } } }
            div.stat-groups {
                div { h3 { "Methods" }
                    (stat_links(id, timeline, "method", timeline.method.as_deref(),
                        s.methods.iter().map(|(m, n)| (m.clone(), n)))) }
                div { h3 { "Statuses" }
                    (stat_links(id, timeline, "status", timeline.status.as_deref(),
                        s.statuses.iter().map(|(c, n)| (c.to_string(), n)))) }
                div { h3 { "Endpoints" }
                    (stat_links(id, timeline, "endpoint", timeline.endpoint.as_deref(),
                        s.endpoints.iter().take(20).map(|(e, n)| (endpoint_of(e), n)))) }
                // Hook: the attacks issue's per-class counts become one more group here.
            }
        }
        section.chart {
            h2 { "Requests and time to first byte" }
            (chart::requests_and_latency(exchanges))
        }
        section.timeline {
            h2 { "Timeline" }
            p {
                "Download: " a href={"/sessions/" (id) "/export?format=csv"} { "CSV" } " · "
                a href={"/sessions/" (id) "/export?format=har"} { "HAR" } " · "
                a href={"/api/v1/sessions/" (id)} { "JSON" }
            }
            @if matched > exchanges.len() {
                p.muted { "The first " (exchanges.len()) " of " (matched) " requests; the downloads hold them all." }
            }
            table.timeline {
                thead { tr {
                    th.num { "#" } th { "Time (UTC)" } th { "Method" } th { "Endpoint" } th.num { "Status" }
                    th.num { "TTFB ms" } th.num { "Size" } th { "Attacks" } th { "Flags" }
                } }
                tbody {
                    @for (i, e) in exchanges.iter().enumerate() {
                        tr class=[e.status_code.filter(|c| *c >= 400).map(|_| "error")] {
                            td.num { a href={"#x" (i)} { (i + 1) } }
                            td { (crate::exchange::rfc3339_ns(e.ts_ns)) }
                            td { (e.method.as_deref().unwrap_or("-")) }
                            td.endpoint { (report::shorten(e.endpoint.as_deref().unwrap_or("-"), 80)) }
                            td.num { (e.status_code.map_or_else(|| "-".into(), |c| c.to_string())) }
                            td.num { (ms(e.ttfb_us)) }
                            td.num { (bytes(e.response_body_len.unwrap_or(0))) }
                            // Hook: the attacks issue's findings per exchange (class at point).
                            td.muted { "-" }
                            td { (flags(e)) }
                        }
                    }
                }
            }
        }
        section.details {
            h2 { "Requests" }
            @for (i, e) in exchanges.iter().enumerate() {
                details id={"x" (i)} {
                    summary {
                        (i + 1) ". " (e.method.as_deref().unwrap_or("-")) " "
                        (report::shorten(e.uri.as_deref().unwrap_or("-"), 120)) " → "
                        (e.status_code.map_or_else(|| "-".into(), |c| c.to_string()))
                    }
                    (record_fields(&e.to_json(id)))
                }
            }
        }
    }
}

fn flags(e: &StoredExchange) -> String {
    let mut flags = Vec::new();
    if e.status_code.is_none() {
        flags.push("no response");
    }
    if e.request_truncated {
        flags.push("request truncated");
    }
    if e.response_truncated {
        flags.push("response truncated");
    }
    if e.gap {
        flags.push("gap");
    }
    if e.joined {
        flags.push("joined");
    }
    flags.join(", ")
}

/// Every field of the exchange's NDJSON record, as `export` and the API give it.
fn record_fields(record: &serde_json::Value) -> Markup {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    html! {
        dl.record {
            @if let Some(object) = record.as_object() {
                @for (name, value) in object {
                    dt { (name) }
                    dd {
                        @match value.as_object() {
                            Some(params) if !params.is_empty() => {
                                @for (k, v) in params { span.value { (k) " = " (text(v)) } }
                            }
                            _ => (text(value)),
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    format: Option<String>,
}

/// `GET /sessions/{id}/export?format=csv|har|ndjson`: the session's exchanges as a download.
pub async fn export(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ConsoleError> {
    crate::store::id_bytes(&id)?;
    let name = query.format.as_deref().unwrap_or("csv");
    let format: Format = name.parse().map_err(ConsoleError::BadRequest)?;
    let (s, exchanges, _) = state.session(id, usize::MAX, |_| true).await?;
    let mut out = Vec::new();
    let mut exporter = Exporter::new(&mut out, format);
    for e in &exchanges {
        exporter
            .write(&s.session_id, e)
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
    }
    exporter
        .finish()
        .map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Har => "application/json",
        Format::Ndjson => "application/x-ndjson",
    };
    // The id was checked to be 32 hex digits: safe in a header.
    let disposition = format!("attachment; filename=\"session-{}.{name}\"", s.session_id);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out,
    )
        .into_response())
}

/// Statistics that count something lost, cut or refused: highlighted when not zero.
pub fn is_loss(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "drop",
        "lost",
        "full",
        "truncat",
        "evicted",
        "overflow",
        "gap",
        "error",
        "rejected",
        "cut",
        "unreadable",
        "dropped",
        "skipped",
        "untracked",
        "malformed",
        "too_large",
    ];
    WORDS.iter().any(|w| name.contains(w))
}

/// `GET /status`: every statistic of the daemon, losses highlighted.
pub async fn status(State(state): State<SharedState>) -> Result<Html<String>, ConsoleError> {
    let report = match StatsReport::read(state.data_dir()) {
        Ok(report) => report,
        Err(StatsError::Missing(path)) => {
            return Ok(layout(
                "Status",
                html! { h1 { "Status" } p { "No statistics in " (path.display()) " yet: the daemon has not run with this data directory." } },
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let losses: u64 = report
        .stages
        .values()
        .flat_map(|c| c.iter())
        .filter(|(name, _)| is_loss(name))
        .map(|(_, v)| *v)
        .sum();
    let body = html! {
        h1 { "Status" }
        dl {
            dt { "Daemon" }
            dd { @if report.writer_alive() { "running (pid " (report.pid) "), updated " (report.updated) }
                 @else { "not running; last written by pid " (report.pid) " at " (report.updated) } }
            dt { "Started" } dd { (report.started) }
            dt { "Capture" } dd { (report.attach_mode) " on " (report.interfaces.join(", ")) }
            @if !report.ports.is_empty() {
                dt { "Ports" }
                dd { @for (port, why) in &report.ports { span.value { (port) " (" (why.as_str()) ")" } } }
            }
            dt { "Lost or cut" }
            dd { @if losses == 0 { "nothing counted" } @else { span.loss { (losses) } " (highlighted below)" } }
        }
        div.stages {
            @for (stage, counters) in &report.stages {
                table.counters {
                    caption { (stage) }
                    tbody {
                        @for (name, value) in counters {
                            tr class=[(*value > 0 && is_loss(name)).then_some("loss")] {
                                td { (name) } td.num { (value) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout("Status", body))
}

/// The login form (only reachable when the console has a token).
pub fn login(with_token: bool, error: Option<&str>) -> Html<String> {
    layout(
        "Log in",
        html! {
            h1 { "Log in" }
            @if !with_token {
                p { "This console needs no token." a href="/" { "Go to the sessions." } }
            } @else {
                @if let Some(error) = error { p.loss { (error) } }
                form.login method="post" action="/login" {
                    label { "Token" input type="password" name="token" autocomplete="current-password" autofocus; }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SessionSignals, Signal};

    const PAYLOADS: [&str; 3] = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "javascript:alert(1)",
    ];

    fn exchange(text: &str) -> StoredExchange {
        StoredExchange {
            ts_ns: 1_764_000_000_000_000_000,
            client_ip: "192.0.2.1".into(),
            client_port: 40000,
            server_ip: "10.0.0.1".into(),
            server_port: 8080,
            peer_ip: "192.0.2.1".into(),
            peer_port: 40000,
            method: Some("GET".into()),
            host: Some(text.into()),
            uri: Some(format!("/items/{text}?q={text}")),
            endpoint: Some(format!("/items/{text}")),
            version: Some("1.1".into()),
            user_agent: Some(text.into()),
            referrer: Some(text.into()),
            request_content_type: None,
            response_content_type: None,
            status_code: Some(200),
            status_msg: Some(text.into()),
            request_body_len: Some(0),
            response_body_len: Some(10),
            ttfb_us: Some(1000),
            duration_us: Some(2000),
            request_truncated: false,
            response_truncated: false,
            gap: false,
            joined: false,
            upstream_us: None,
            upstream_ip: None,
            upstream_port: None,
            server_netns: None,
            server_cgroup: None,
            params: vec![(text.into(), text.into())],
            attacks: Vec::new(),
            spec_status: None,
            slow: false,
            exchange_id: None,
        }
    }

    #[test]
    fn captured_payloads_are_escaped_everywhere() {
        for payload in PAYLOADS {
            let e = exchange(payload);
            let summary = SessionSummary {
                session_id: "ab".repeat(16),
                key_kind: payload.into(),
                key_name: payload.into(),
                user: Some(payload.into()),
                client_ips: vec![payload.into()],
                user_agents: vec![payload.into()],
                hosts: vec![payload.into()],
                endpoints: vec![(format!("GET {payload}"), 1)],
                methods: vec![(payload.into(), 1)],
                abuse: SessionSignals {
                    risk: 90,
                    signals: vec![Signal {
                        name: SignalName::BadUserAgent,
                        score: 90,
                        reason: payload.into(),
                    }],
                },
                ..SessionSummary::default()
            };
            let page = session_body(&summary, &[e], 1, &TimelineQuery::default()).into_string();
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<img"), "{page}");
            assert!(!page.contains("href=\"javascript"), "{page}");
            let escaped = payload
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(
                page.contains(&escaped.replace('"', "&quot;")) || page.contains(&escaped),
                "{page}"
            );
        }
    }

    #[test]
    fn losses_are_recognised() {
        for name in [
            "ring_full",
            "segments_truncated",
            "exchanges_dropped_queue_full",
            "gaps",
        ] {
            assert!(is_loss(name), "{name}");
        }
        for name in ["packets", "created", "requests"] {
            assert!(!is_loss(name), "{name}");
        }
    }
}

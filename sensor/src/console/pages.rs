//! The HTML pages: the sessions list, a session, the endpoints, the status page, the login
//! form. Built with maud, which escapes every inserted value: captured text is always text,
//! never markup. Links that carry captured values put them in query strings, percent-encoded
//! ([`filters::link`]); no captured value ever becomes a URL of its own.

use std::{collections::HashMap, time::SystemTime};

use axum::{
    extract::{Path, Query, State},
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::{
    analysis::inventory::{EndpointFilter, EndpointRow},
    console::{
        ConsoleError, Listed, SharedState, chart,
        filters::{self, EndpointQuery, PAGE_SIZE, SessionQuery, TimelineQuery},
    },
    record::{AttackClass, Finding, SessionSummary, SignalName, SpecStatus, StoredExchange},
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
                        nav {
                            a href="/" { "Sessions" } a href="/endpoints" { "Endpoints" }
                            a href="/status" { "Status" }
                        }
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
        let pairs = query.pairs();
        let value = filters::value_of(&pairs, name);
        html! {
            label { (label) input type="text" name=(name) value=[value] placeholder=(hint); }
        }
    };
    let body = html! {
        h1 { "Sessions" @if state.is_central() { " " span.muted { "(the fleet's central store)" } } }
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
            label { "attack class"
                select name="attack" {
                    option value="" { "any" }
                    @for class in AttackClass::ALL {
                        option value=(class.as_str())
                            selected[query.attack.as_deref() == Some(class.as_str())] { (class.as_str()) }
                    }
                }
            }
            (field("session", "session id", ""))
            label.check { input type="checkbox" name="attacks" value="1"
                checked[query.attacks.as_deref().is_some_and(|v| v != "0")]; "with attacks" }
            label.check { input type="checkbox" name="slow" value="1"
                checked[query.slow.as_deref().is_some_and(|v| v != "0")]; "with slow requests" }
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
                    @for listed in &list {
                        @let s = listed.summary();
                        tr {
                            td.id { a href={"/sessions/" (s.session_id)} { (s.session_id) } }
                            td { (report::time_s(s.start_ns)) }
                            td { (report::duration(s.end_ns.saturating_sub(s.start_ns))) }
                            td.num { (s.requests) }
                            td.num.attacks {
                                @if s.attacks.is_empty() { span.muted { "0" } } @else {
                                    span.total { (s.attack_count()) }
                                    @for (class, count) in &s.attacks {
                                        a.attack href=(filter_link("attack", class.as_str())) {
                                            (class.as_str()) " " (count)
                                        }
                                    }
                                }
                            }
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

/// The values of one statistic (with their counts where the summary keeps them), each a link
/// that filters the timeline by it.
fn stat_links(
    id: &str,
    timeline: &TimelineQuery,
    name: &'static str,
    active: Option<&str>,
    values: impl Iterator<Item = (String, Option<u64>)>,
) -> Markup {
    html! {
        ul.stats {
            @for (value, count) in values {
                li {
                    a href=(timeline.link(id, &[(name, Some(&value))]))
                        class=[(active == Some(value.as_str())).then_some("active")] {
                        (value)
                    }
                    @if let Some(count) = count { " " span.count { (count) } }
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
    let (listed, exchanges, matched) = state
        .session(id, MAX_TIMELINE, move |e| filter.matches(e))
        .await?;
    let s = listed.summary();
    // The hosts' rows only: what the requests' details can name.
    let mut endpoints = state.endpoints(EndpointFilter::default()).await?;
    endpoints.retain(|row| {
        s.hosts
            .iter()
            .any(|h| h.trim().eq_ignore_ascii_case(&row.host))
    });
    let body = html! {
        @if let Listed::Central(central) = &listed {
            p.muted.central { "From the central store; seen by the sensors "
                @for (i, host) in central.host_ids.iter().enumerate() { @if i > 0 { ", " } (host) } "." }
        }
        (session_body(s, &exchanges, matched, &timeline, &endpoints))
    };
    Ok(layout(&format!("Session {}", s.session_id), body))
}

/// The session page's content (apart from the handler, for the tests). `endpoints`: the
/// inventory's rows, whose figures each request's details show for its endpoint.
pub fn session_body(
    s: &SessionSummary,
    exchanges: &[StoredExchange],
    matched: usize,
    timeline: &TimelineQuery,
    endpoints: &[EndpointRow],
) -> Markup {
    let by_key: HashMap<(&str, &str, &str), &EndpointRow> = endpoints
        .iter()
        .map(|r| ((r.host.as_str(), r.method.as_str(), r.endpoint.as_str()), r))
        .collect();
    let insight = |e: &StoredExchange| {
        let host = e.host.as_deref()?.trim().to_ascii_lowercase();
        let key = (host.as_str(), e.method.as_deref()?, e.endpoint.as_deref()?);
        by_key.get(&key).copied()
    };
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
                        s.methods.iter().map(|(m, n)| (m.clone(), Some(*n))))) }
                div { h3 { "Statuses" }
                    (stat_links(id, timeline, "status", timeline.status.as_deref(),
                        s.statuses.iter().map(|(c, n)| (c.to_string(), Some(*n))))) }
                div { h3 { "Endpoints" }
                    (stat_links(id, timeline, "endpoint", timeline.endpoint.as_deref(),
                        s.endpoints.iter().take(20).map(|(e, n)| (endpoint_of(e), Some(*n))))) }
                div { h3 { "Client IPs" }
                    (stat_links(id, timeline, "ip", timeline.ip.as_deref(),
                        s.client_ips.iter().map(|ip| (ip.clone(), None)))) }
                @if !s.attacks.is_empty() {
                    div { h3 { "Attacks" }
                        (stat_links(id, timeline, "attack", timeline.attack.as_deref(),
                            s.attacks.iter().map(|(c, n)| (c.as_str().to_owned(), Some(*n))))) }
                }
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
            p.toggle {
                @if timeline.attacks_only() {
                    a.toggle.active href=(timeline.link(id, &[("attacks", None)])) { "Attacks only ✓" }
                    " " span.muted { "(showing the requests with attack findings; click for all)" }
                } @else {
                    a.toggle href=(timeline.link(id, &[("attacks", Some("1"))])) { "Attacks only" }
                    " " span.muted { "(" (s.attack_count()) " findings in this session)" }
                }
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
                            td.endpoint {
                                @match endpoint_link(e) {
                                    Some(link) => a href=(link) { (report::shorten(e.endpoint.as_deref().unwrap_or("-"), 80)) },
                                    None => (report::shorten(e.endpoint.as_deref().unwrap_or("-"), 80)),
                                }
                            }
                            td.num { (e.status_code.map_or_else(|| "-".into(), |c| c.to_string())) }
                            td.num { (ms(e.ttfb_us)) }
                            td.num { (bytes(e.response_body_len.unwrap_or(0))) }
                            td.attacks { (attack_marks(&e.attacks)) }
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
                    @if let Some(row) = insight(e) { (endpoint_insight(row)) }
                    (record_fields(&e.to_json(id)))
                }
            }
        }
    }
}

/// What the inventory says about a request's endpoint, over all its calls.
fn endpoint_insight(row: &EndpointRow) -> Markup {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    html! {
        p.insight {
            "Endpoint " span.endpoint { (row.method) " " (report::shorten(&row.endpoint, 100)) } ": "
            (row.calls) " calls in " (row.sessions) " sessions, latency p50/p95/p99 "
            (ms(row.latency_ms.p50)) " / " (ms(row.latency_ms.p95)) " / " (ms(row.latency_ms.p99)) " ms"
            @if let Some(status) = row.spec_status { ", " (status.name()) }
            ", risk " (row.risk)
            @if !row.risk_reasons.is_empty() { " (" (row.risk_reasons.join("; ")) ")" }
            @if !row.sensitive.is_empty() { ", sensitive: " (row.sensitive.join(", ")) }
            @if !row.auth.is_empty() { ", auth: " (row.auth.join(", ")) }
        }
    }
}

/// Findings per request as the CLI shows them, `class@point`; the excerpt in the details.
fn attack_marks(findings: &[Finding]) -> Markup {
    const SHOWN: usize = 6;
    html! {
        @if findings.is_empty() { span.muted { "-" } }
        @for f in findings.iter().take(SHOWN) {
            span.attack { (f.class.as_str()) "@" (report::shorten(&f.point, 60)) }
        }
        @if findings.len() > SHOWN { span.muted { "+" (findings.len() - SHOWN) } }
    }
}

/// The endpoints page's row of this request's endpoint (its host, method and template).
fn endpoint_link(e: &StoredExchange) -> Option<String> {
    let endpoint = e.endpoint.as_deref()?;
    let mut pairs = Vec::new();
    if let Some(host) = e.host.as_deref() {
        pairs.push(("host", host));
    }
    if let Some(method) = e.method.as_deref() {
        pairs.push(("method", method));
    }
    pairs.push(("endpoint", endpoint));
    Some(filters::link("/endpoints", &pairs, &[]))
}

fn flags(e: &StoredExchange) -> String {
    let mut flags = Vec::new();
    if e.slow {
        flags.push("slow");
    }
    match e.spec_status {
        Some(SpecStatus::Shadow) => flags.push("shadow"),
        Some(SpecStatus::Zombie) => flags.push("zombie"),
        _ => {}
    }
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
                        @match (value.as_object(), value.as_array()) {
                            (Some(params), _) if !params.is_empty() => {
                                @for (k, v) in params { span.value { (k) " = " (text(v)) } }
                            }
                            (_, Some(findings)) if name == "attacks" && !findings.is_empty() => {
                                table.findings {
                                    thead { tr { th { "Class" } th { "Point" } th { "Excerpt" } th { "Rule" } } }
                                    tbody {
                                        @for f in findings {
                                            tr {
                                                td { (text(&f["class"])) } td.endpoint { (text(&f["point"])) }
                                                td.excerpt { (text(&f["excerpt"])) } td { (text(&f["rule"])) }
                                            }
                                        }
                                    }
                                }
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
    let (listed, exchanges, _) = state.session(id, usize::MAX, |_| true).await?;
    let s = listed.summary();
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

/// `GET /endpoints`: the inventory as `apisessions endpoints` lists it, with its filters.
pub async fn endpoints(
    State(state): State<SharedState>,
    Query(query): Query<EndpointQuery>,
) -> Result<Response, ConsoleError> {
    if query.has_blanks() {
        let short = filters::link("/endpoints", &query.pairs(), &[]);
        return Ok(Redirect::to(&short).into_response());
    }
    let filter = query
        .parse(SystemTime::now())
        .map_err(ConsoleError::BadRequest)?;
    let rows = state.endpoints(filter).await?;
    Ok(layout("Endpoints", endpoints_body(&query, &rows)).into_response())
}

/// The endpoints page's content (apart from the handler, for the tests).
pub fn endpoints_body(query: &EndpointQuery, rows: &[EndpointRow]) -> Markup {
    let pairs = query.pairs();
    let value = |name: &str| filters::value_of(&pairs, name);
    let field = |name: &'static str, label: &str, hint: &str| {
        html! { label { (label) input type="text" name=(name) value=[value(name)] placeholder=(hint); } }
    };
    let list = |kinds: &[&str]| {
        if kinds.is_empty() {
            "-".to_owned()
        } else {
            kinds.join(", ")
        }
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let statuses = [
        SpecStatus::Documented,
        SpecStatus::Shadow,
        SpecStatus::Zombie,
        SpecStatus::Orphan,
    ];
    html! {
        h1 { "Endpoints" }
        form.filters method="get" action="/endpoints" {
            (field("host", "host", "api.example"))
            label { "spec status"
                select name="status" {
                    option value="" { "any" }
                    @for status in statuses {
                        option value=(status.name()) selected[value("status") == Some(status.name())] { (status.name()) }
                    }
                }
            }
            (field("since", "called since", "1h or RFC 3339"))
            (field("method", "method", "GET"))
            (field("endpoint", "endpoint", "/users/{id}"))
            button type="submit" { "Filter" }
            @if !pairs.is_empty() { a.clear href="/endpoints" { "clear filters" } }
        }
        p {
            (rows.len()) " endpoints. "
            a href=(filters::link("/api/v1/endpoints", &pairs, &[])) { "JSON" }
        }
        @if rows.is_empty() {
            p.muted { "No endpoints match." }
        } @else {
            table.endpoints {
                thead { tr {
                    th { "Host" } th { "Method" } th { "Endpoint" } th.num { "Calls" } th.num { "Sessions" }
                    th { "Statuses" } th.num { "p50 ms" } th.num { "p95 ms" } th.num { "p99 ms" }
                    th { "Auth" } th { "Sensitive" } th { "Spec" } th.num { "Risk" } th { "Last seen (UTC)" }
                } }
                tbody {
                    @for row in rows {
                        tr class=[row.spec_status.filter(|s| matches!(s, SpecStatus::Shadow | SpecStatus::Zombie)).map(|s| s.name())] {
                            td.host { (report::shorten(&row.host, 40)) }
                            td.method { (row.method) }
                            td.endpoint {
                                // The sessions that called it (the list's filters).
                                a href=(filters::link("/", &[("host", &row.host), ("method", &row.method), ("endpoint", &row.endpoint)], &[])) {
                                    (report::shorten(&row.endpoint, 100))
                                }
                            }
                            td.num.calls { (row.calls) }
                            td.num.sessions { (row.sessions) }
                            td.statuses {
                                @for s in &row.statuses { span.value { (s.status) " ×" (s.count) } }
                            }
                            td.num.p50 { (ms(row.latency_ms.p50)) }
                            td.num.p95 { (ms(row.latency_ms.p95)) }
                            td.num.p99 { (ms(row.latency_ms.p99)) }
                            td.auth { (list(&row.auth)) }
                            td.sensitive { (list(&row.sensitive)) }
                            td.spec { (row.spec_status.map_or("-", |s| s.name())) }
                            td.num.score title=(row.risk_reasons.join("; ")) { (row.risk) }
                            td.seen { (row.last_seen.as_deref().map_or_else(|| "-".to_owned(), report::seconds)) }
                        }
                    }
                }
            }
        }
    }
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
    use crate::{
        analysis::inventory::{Inventory, facts::ExchangeFacts},
        record::{SessionSignals, Signal},
    };

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
            tls: false,
            http2: None,
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
            // The inventory's row of the request's endpoint, shown in its details.
            let mut inventory = Inventory::new(Default::default(), Vec::new());
            let facts = ExchangeFacts {
                host: payload.to_ascii_lowercase(),
                method: "GET".into(),
                duration_ms: Some(2.0),
                ..ExchangeFacts::default()
            };
            inventory.observe_facts(&facts, format!("/items/{payload}"), "s1");
            let rows = inventory.rows();
            let page =
                session_body(&summary, &[e], 1, &TimelineQuery::default(), &rows).into_string();
            assert!(
                page.contains("1 calls in 1 sessions, latency p50/p95/p99"),
                "{page}"
            );
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

    fn finding(class: AttackClass, point: &str, excerpt: &str) -> Finding {
        Finding {
            class,
            point: point.into(),
            excerpt: excerpt.into(),
            rule: "test-rule".into(),
        }
    }

    #[test]
    fn attack_marks_and_findings_are_text() {
        for payload in PAYLOADS {
            let mut attacked = exchange(payload);
            attacked.attacks = vec![
                finding(
                    AttackClass::Xss,
                    &format!("request.query.{payload}"),
                    payload,
                ),
                finding(AttackClass::Sqli, "request.path", payload),
            ];
            let summary = SessionSummary {
                session_id: "cd".repeat(16),
                attacks: vec![(AttackClass::Xss, 1), (AttackClass::Sqli, 1)],
                ..SessionSummary::default()
            };
            let plain = exchange("plain");
            let page = session_body(
                &summary,
                &[attacked, plain],
                2,
                &TimelineQuery::default(),
                &[],
            )
            .into_string();
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<img"), "{page}");
            assert!(page.contains("sqli@request.path"), "{page}");
            assert!(page.contains("xss@request.query."), "{page}");
            // The toggle and the class statistic keep the page's other filters.
            assert!(page.contains("href=\"/sessions/cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd?attacks=1\""));
            assert!(page.contains("?attack=sqli\""), "{page}");
            // The details: the findings' table, excerpts escaped.
            assert!(page.contains("<table class=\"findings\">"), "{page}");
            // A request's endpoint links to its row of the endpoints page, percent-encoded.
            assert!(page.contains("href=\"/endpoints?host="), "{page}");
        }
        let toggled = TimelineQuery {
            method: Some("GET".into()),
            attacks: Some("1".into()),
            ..TimelineQuery::default()
        };
        let page = session_body(&SessionSummary::default(), &[], 0, &toggled, &[]).into_string();
        assert!(page.contains("href=\"/sessions/?method=GET\""), "{page}");
    }

    #[test]
    fn the_timeline_toggle_keeps_attacked_requests_only() {
        let mut attacked = exchange("a");
        attacked
            .attacks
            .push(finding(AttackClass::Sqli, "request.query.id", "' or 1=1"));
        let plain = exchange("b");
        let only: TimelineQuery = serde_urlencoded::from_str("attacks=1&method=get").unwrap();
        assert!(only.attacks_only() && only.any());
        assert!(only.matches(&attacked) && !only.matches(&plain));
        let off: TimelineQuery = serde_urlencoded::from_str("attacks=0").unwrap();
        assert!(off.matches(&plain));
        let class: TimelineQuery = serde_urlencoded::from_str("attack=sqli").unwrap();
        assert!(class.matches(&attacked) && !class.matches(&plain));
        let xss: TimelineQuery = serde_urlencoded::from_str("attack=xss").unwrap();
        assert!(!xss.matches(&attacked));
        assert_eq!(
            only.link("ab", &[("attacks", None), ("endpoint", Some("/a b"))]),
            "/sessions/ab?method=get&endpoint=%2Fa+b"
        );
    }

    #[test]
    fn the_endpoints_page_shows_rows_as_text() {
        let mut inventory = Inventory::new(Default::default(), Vec::new());
        for payload in PAYLOADS {
            let facts = ExchangeFacts {
                host: payload.to_ascii_lowercase(),
                method: "GET".into(),
                uri: format!("/{payload}"),
                status: Some(200),
                duration_ms: Some(3.0),
                ..ExchangeFacts::default()
            };
            inventory.observe_facts(&facts, format!("/{payload}"), "s1");
        }
        let rows = inventory.rows();
        assert_eq!(rows.len(), 3);
        let query = EndpointQuery {
            host: Some(PAYLOADS[1].into()),
            ..EndpointQuery::default()
        };
        let page = endpoints_body(&query, &rows).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("href=\"javascript"), "{page}");
        assert!(
            page.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("3 endpoints."), "{page}");
        // The filter field keeps its value, escaped as an attribute.
        assert!(
            page.contains("value=\"&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\""),
            "{page}"
        );
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

//! `apisessions sessions`: the stored sessions, newest first, filtered.

use std::io::{self, Write as _};

use anyhow::Result;
use apisessions::{
    record::{AttackClass, SessionSummary, SignalName},
    report,
    store::{SessionFilter, Store},
};
use clap::Args;

use crate::args::{SourceArgs, When, endpoint_resolver};

#[derive(Args)]
pub struct SessionsArgs {
    /// Sessions active since this age or time (1h, 30m, 2026-11-29T15:00:00Z).
    #[arg(long)]
    since: Option<When>,
    /// Sessions that started before this time.
    #[arg(long)]
    until: Option<When>,
    /// Sessions from this client IP.
    #[arg(long)]
    ip: Option<String>,
    /// Sessions that called this host.
    #[arg(long)]
    host: Option<String>,
    /// Sessions that touched this endpoint (`/users/{id}`, or a path such as /users/42).
    #[arg(long)]
    endpoint: Option<String>,
    /// Sessions with requests of this method.
    #[arg(long)]
    method: Option<String>,
    /// Sessions with responses of this status code.
    #[arg(long)]
    status: Option<u16>,
    /// Sessions of this user (the `user` context parameter).
    #[arg(long)]
    user: Option<String>,
    /// Sessions whose abuse risk (0-100) is at least this.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    min_risk: Option<u8>,
    /// Sessions that carry this abuse signal (bad_user_agent, request_rate, request_interval,
    /// enumeration, auth_failures, wide_scope, errors, ip_rotation, session_rotation,
    /// excessive_consumption, attacks).
    #[arg(long, value_name = "NAME")]
    signal: Option<SignalName>,
    /// Sessions with at least one attack finding.
    #[arg(long)]
    attacks: bool,
    /// Sessions with findings of this attack class (sqli, nosqli, xss, rce, path_traversal,
    /// rfi, ssrf, ssti, xxe, ldapi, crlf, open_redirect, scanner, protocol).
    #[arg(long, value_name = "CLASS", value_parser = attack_class)]
    attack: Option<AttackClass>,
    /// Sessions with at least one slow request (slower than its endpoint's own p99).
    #[arg(long)]
    slow: bool,
    /// Sessions shown at most (0: all).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: SourceArgs,
}

pub fn sessions(args: SessionsArgs) -> Result<()> {
    let (central, config) = args.source.central()?;
    let filter = SessionFilter {
        since_ns: args.since.map(|w| w.0),
        until_ns: args.until.map(|w| w.0),
        ip: args.ip,
        host: args.host,
        // A concrete path finds its template's sessions too.
        endpoint: args
            .endpoint
            .as_deref()
            .map(apisessions::endpoint::template),
        method: args.method,
        status: args.status,
        user: args.user,
        min_risk: args.min_risk,
        signal: args.signal,
        attacks: args.attacks,
        attack: args.attack,
        slow: args.slow,
        limit: args.limit,
    };
    let mut out = io::stdout().lock();
    if let Some(central) = central {
        // The fleet's sessions: each merged across the hosts that saw it (`host_ids`).
        let mut list = central.sessions(&filter, args.source.host_id.as_deref())?;
        let resolver = args.source.central_resolver(&config)?;
        for session in &mut list {
            resolver.summary(&mut session.summary);
        }
        if args.json {
            let array: Vec<serde_json::Value> = list.iter().map(|s| s.to_json()).collect();
            serde_json::to_writer_pretty(&mut out, &array)?;
            writeln!(out)?;
        } else {
            let summaries: Vec<SessionSummary> = list.into_iter().map(|s| s.summary).collect();
            write!(out, "{}", report::sessions_table(&summaries))?;
        }
        return Ok(());
    }
    let store = Store::open_read_only(&args.source.data_dir(&config))?;
    let resolver = endpoint_resolver(&config, &store)?;
    let mut list = match &filter.endpoint {
        // Also the sessions that wrote the endpoint as a path before the learner knew it.
        Some(wanted) => {
            let filter = SessionFilter {
                endpoint: None,
                ..filter.clone()
            };
            let prefix = resolver.lookup_prefix(wanted);
            store.list_where(&filter, Some(prefix), |s| resolver.touches(s, wanted))?
        }
        None => store.list(&filter)?,
    };
    for summary in &mut list {
        resolver.summary(summary);
    }
    if args.json {
        let array: Vec<serde_json::Value> = list.iter().map(SessionSummary::to_json).collect();
        serde_json::to_writer_pretty(&mut out, &array)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::sessions_table(&list))?;
    }
    Ok(())
}

fn attack_class(name: &str) -> Result<AttackClass, String> {
    AttackClass::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = AttackClass::ALL.iter().map(|c| c.as_str()).collect();
        format!("no attack class '{name}' (one of {})", names.join(", "))
    })
}

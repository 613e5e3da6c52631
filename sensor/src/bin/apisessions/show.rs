//! `apisessions show`: one session, who, what, and its request timeline.

use std::io::{self, Write as _};

use anyhow::{Context as _, Result};
use apisessions::{record::StoredExchange, report, ship::ExchangeFilter, store::Store};
use clap::Args;

use crate::args::{SourceArgs, endpoint_resolver};

#[derive(Args)]
pub struct ShowArgs {
    /// The session id (from `apisessions sessions`).
    session_id: String,
    /// Print the session and its exchanges as JSON.
    #[arg(long)]
    json: bool,
    /// Only the requests with attack findings.
    #[arg(long)]
    attacks_only: bool,
    #[command(flatten)]
    source: SourceArgs,
}

pub fn show(args: ShowArgs) -> Result<()> {
    let (central, config) = args.source.central()?;
    let missing = || {
        format!(
            "no session {} (see `apisessions sessions`)",
            args.session_id
        )
    };
    let mut exchanges: Vec<StoredExchange> = Vec::new();
    let (summary, mut object) = match central {
        Some(central) => {
            let resolver = args.source.central_resolver(&config)?;
            let mut session = central.session(&args.session_id)?.with_context(missing)?;
            resolver.summary(&mut session.summary);
            let filter = ExchangeFilter {
                session_id: Some(args.session_id.clone()),
                host_id: args.source.host_id.clone(),
                ..ExchangeFilter::default()
            };
            central.exchanges(&filter, |row| {
                let mut exchange = row.to_stored();
                resolver.record(&mut exchange);
                exchanges.push(exchange);
                true
            })?;
            let object = session.to_json();
            (session.summary, object)
        }
        None => {
            let store = Store::open_read_only(&args.source.data_dir(&config))?;
            let resolver = endpoint_resolver(&config, &store)?;
            let mut summary = store.session(&args.session_id)?.with_context(missing)?;
            resolver.summary(&mut summary);
            store.exchanges(&args.session_id, |mut e| {
                resolver.record(&mut e);
                exchanges.push(e);
                true
            })?;
            let object = summary.to_json();
            (summary, object)
        }
    };
    if args.attacks_only {
        exchanges.retain(|e| !e.attacks.is_empty());
    }
    let mut out = io::stdout().lock();
    if args.json {
        object["exchanges"] = exchanges
            .iter()
            .map(|e| e.to_json(&summary.session_id))
            .collect();
        serde_json::to_writer_pretty(&mut out, &object)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::session_page(&summary, &exchanges))?;
    }
    Ok(())
}

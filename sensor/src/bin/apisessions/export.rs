//! `apisessions export`: stored exchanges as NDJSON, CSV or HAR.

use std::io;

use anyhow::{Context as _, Result};
use apisessions::{
    report::{Exporter, Format},
    ship::ExchangeFilter,
    store::{SessionFilter, Store, StoreError},
};
use clap::Args;

use crate::args::{SourceArgs, When, endpoint_resolver};

#[derive(Args)]
pub struct ExportArgs {
    /// ndjson (one exchange per line, Zeek http.log field names), csv, or har (HAR 1.2).
    #[arg(long, default_value = "ndjson")]
    format: Format,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    since: Option<When>,
    #[arg(long)]
    until: Option<When>,
    #[command(flatten)]
    source: SourceArgs,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let (central, config) = args.source.central()?;
    let (since, until) = (
        args.since.map_or(0, |w| w.0),
        args.until.map_or(u64::MAX, |w| w.0),
    );
    if let Some(central) = central {
        // The fleet's exchanges in time order, each once.
        let mut exporter = Exporter::new(io::BufWriter::new(io::stdout().lock()), args.format);
        let filter = ExchangeFilter {
            session_id: args.session.clone(),
            since_ns: Some(since),
            until_ns: Some(until),
            host_id: args.source.host_id.clone(),
        };
        let resolver = args.source.central_resolver(&config)?;
        let mut result = Ok(());
        central.exchanges(&filter, |row| {
            let mut exchange = row.to_stored();
            resolver.record(&mut exchange);
            result = exporter.write(&row.session_id, &exchange);
            result.is_ok()
        })?;
        return finish(result.and_then(|()| exporter.finish()));
    }
    let store = Store::open_read_only(&args.source.data_dir(&config))?;
    let resolver = endpoint_resolver(&config, &store)?;
    let ids: Vec<String> = match &args.session {
        Some(id) => vec![id.clone()],
        None => {
            let filter = SessionFilter {
                since_ns: Some(since),
                until_ns: Some(until),
                ..SessionFilter::default()
            };
            // Oldest first, so the export reads in time order session by session.
            store
                .list(&filter)?
                .into_iter()
                .rev()
                .map(|s| s.session_id)
                .collect()
        }
    };
    let mut exporter = Exporter::new(io::BufWriter::new(io::stdout().lock()), args.format);
    let mut result = Ok(());
    // A session whose stored records cannot be read is reported and skipped: the export goes
    // on with the others, and fails at the end so that a script notices.
    let mut unreadable = 0;
    for id in &ids {
        let read = store.exchanges(id, |mut exchange| {
            if exchange.ts_ns < since || exchange.ts_ns > until {
                return true;
            }
            resolver.record(&mut exchange);
            result = exporter.write(id, &exchange);
            result.is_ok()
        });
        match read {
            Ok(()) => {}
            Err(e @ StoreError::Corrupt { .. }) => {
                unreadable += 1;
                log::error!("session {id} is not exported completely: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        if result.is_err() {
            break;
        }
    }
    finish(result.and_then(|()| exporter.finish()))?;
    if unreadable > 0 {
        anyhow::bail!(
            "{unreadable} of {} sessions could not be read completely (see the errors above)",
            ids.len()
        );
    }
    Ok(())
}

/// The export's own outcome: a reader that stopped early (`| head`) is not an error.
fn finish(written: io::Result<()>) -> Result<()> {
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing the export"),
        Ok(()) => Ok(()),
    }
}

//! `apisessions export`: stored exchanges as NDJSON, CSV or HAR.

use std::io;

use anyhow::{Context as _, Result};
use apisessions::{
    config::Config,
    report::{Exporter, Format},
    store::{SessionFilter, Store, StoreError},
};
use clap::Args;

use crate::args::{DataDirArg, When};

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
    data: DataDirArg,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let store = Store::open_read_only(&args.data.resolve(&Config::default()))?;
    let (since, until) = (
        args.since.map_or(0, |w| w.0),
        args.until.map_or(u64::MAX, |w| w.0),
    );
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
        let read = store.exchanges(id, |exchange| {
            if exchange.ts_ns < since || exchange.ts_ns > until {
                return true;
            }
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
    match result.and_then(|()| exporter.finish()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing the export"),
        Ok(()) if unreadable > 0 => Err(anyhow::anyhow!(
            "{unreadable} of {} sessions could not be read completely (see the errors above)",
            ids.len()
        )),
        Ok(()) => Ok(()),
    }
}

//! `apisessions show`: one session, who, what, and its request timeline.

use std::io::{self, Write as _};

use anyhow::{Context as _, Result};
use apisessions::{config::Config, report, store::Store};
use clap::Args;

use crate::args::DataDirArg;

#[derive(Args)]
pub struct ShowArgs {
    /// The session id (from `apisessions sessions`).
    session_id: String,
    /// Print the session and its exchanges as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn show(args: ShowArgs) -> Result<()> {
    let store = Store::open_read_only(&args.data.resolve(&Config::default()))?;
    let summary = store.session(&args.session_id)?.with_context(|| {
        format!(
            "no session {} (see `apisessions sessions`)",
            args.session_id
        )
    })?;
    let mut exchanges = Vec::new();
    store.exchanges(&args.session_id, |e| {
        exchanges.push(e);
        true
    })?;
    let mut out = io::stdout().lock();
    if args.json {
        let mut object = summary.to_json();
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

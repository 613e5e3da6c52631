//! `apisessions stats`: the counters of the running daemon, or the last ones it wrote.

use std::io::{self, Write as _};

use anyhow::Result;
use apisessions::{config::Config, stats::StatsReport};
use clap::Args;

use crate::args::DataDirArg;

#[derive(Args)]
pub struct StatsArgs {
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let report = StatsReport::read(&args.data.resolve(&Config::default()))?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render())?;
    }
    Ok(())
}

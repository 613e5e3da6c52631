//! `apisessions prune`: deletes sessions older than the retention period.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use apisessions::store::{DEFAULT_MAP_SIZE, PruneReport, Store};
use clap::Args;

use crate::args::{ConfigArg, DataDirArg};

#[derive(Args)]
pub struct PruneArgs {
    /// Delete sessions that ended longer ago than this. Default: storage.retention (7d).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn prune(args: PruneArgs) -> Result<()> {
    let config = args.config.load()?;
    let older_than = args.older_than.unwrap_or(config.storage.retention);
    let data_dir = args.data.resolve(&config);
    if !Store::dir(&data_dir).join("data.mdb").exists() {
        println!("nothing stored in {}", data_dir.display());
        return Ok(());
    }
    let store = Store::open(&data_dir, DEFAULT_MAP_SIZE)?;
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let cutoff = now.saturating_sub(older_than.as_nanos() as u64);
    let mut total = PruneReport::default();
    loop {
        let step = store.prune(cutoff, 1000)?;
        total.sessions += step.sessions;
        total.exchanges += step.exchanges;
        if !step.more {
            break;
        }
    }
    println!(
        "deleted {} sessions and {} exchanges older than {}",
        total.sessions,
        total.exchanges,
        humantime::format_duration(older_than)
    );
    Ok(())
}

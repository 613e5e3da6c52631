//! `apisessions endpoints`: the API inventory the daemon or an import stored, as a table, JSON
//! rows or an OpenAPI 3.1 document, optionally compared with an OpenAPI document.

use std::{
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use apisessions::{
    analysis::inventory::{
        self, EndpointFilter, EndpointRow, Inventory, InventoryState, openapi_out,
    },
    config::Config,
    record::SpecStatus,
    report,
    store::Store,
};
use clap::Args;

use crate::args::{SourceArgs, When};

#[derive(Args)]
pub struct EndpointsArgs {
    /// Endpoints of this host (as the requests' Host header names it).
    #[arg(long)]
    host: Option<String>,
    /// Endpoints called since this age or time (1h, 30m, 2026-11-29T15:00:00Z).
    #[arg(long)]
    since: Option<When>,
    /// Compare with this OpenAPI document (3.0, 3.1 or Swagger 2.0; YAML or JSON) for every
    /// host, instead of the configuration's [[api.specs]].
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Endpoints of this spec status.
    #[arg(long, value_parser = parse_status)]
    status: Option<SpecStatus>,
    /// Print a JSON array instead of a table.
    #[arg(long, conflicts_with = "openapi")]
    json: bool,
    /// Print the discovered API as an OpenAPI 3.1 document (JSON).
    #[arg(long)]
    openapi: bool,
    #[command(flatten)]
    source: SourceArgs,
}

fn parse_status(name: &str) -> Result<SpecStatus, String> {
    SpecStatus::from_name(name)
        .ok_or_else(|| format!("'{name}' is not one of documented, shadow, zombie, orphan"))
}

pub fn endpoints(args: EndpointsArgs) -> Result<()> {
    let (central, config) = args.source.central()?;
    let filter = EndpointFilter {
        host: args.host.clone(),
        status: args.status,
        since_ns: args.since.map(|w| w.0),
        ..EndpointFilter::default()
    };
    let rows: Vec<_> = match central {
        Some(central) => {
            if args.spec.is_some() {
                anyhow::bail!(
                    "--spec compares this host's inventory: run endpoints --spec without --central"
                );
            }
            central
                .endpoints(
                    filter.since_ns,
                    args.host.as_deref(),
                    args.source.host_id.as_deref(),
                )?
                .into_iter()
                .filter(|row| filter.matches(row))
                .collect()
        }
        None => local_rows(&args, &config, &filter)?,
    };
    let mut out = io::stdout().lock();
    if args.openapi {
        let host = args.host.as_deref();
        serde_json::to_writer_pretty(&mut out, &openapi_out::document(&rows, host))?;
        writeln!(out)?;
    } else if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::endpoints_table(&rows))?;
    }
    Ok(())
}

/// This host's inventory (the store's, with the specs of --spec or the configuration), rows
/// that `filter` accepts.
fn local_rows(
    args: &EndpointsArgs,
    config: &Config,
    filter: &EndpointFilter,
) -> Result<Vec<EndpointRow>> {
    let specs = match &args.spec {
        Some(file) => inventory::load_specs([("*", file.as_path())])?,
        None => inventory::load_configured_specs(config, args.source.config.config.as_deref())?,
    };
    let mut inventory = Inventory::new(config.inventory.clone(), specs);
    let data_dir = args.source.data_dir(config);
    let store = Store::open_read_only(&data_dir)?;
    if let Some(bytes) = store.inventory()? {
        let state = InventoryState::decode(&bytes)
            .with_context(|| format!("reading the endpoint inventory in {}", data_dir.display()))?;
        inventory.merge(&state);
    }
    Ok(inventory
        .rows()
        .into_iter()
        .filter(|row| filter.matches(row))
        .collect())
}

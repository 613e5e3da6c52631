//! `apisessions ui`: the web console over the local store or, with `--central`, the fleet's
//! central store, until Ctrl-C.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use apisessions::{
    analysis::inventory,
    console::{self, CentralSource, ConsoleOptions, ConsoleState, InventorySetup, Token},
};
use clap::Args;

use crate::args::SourceArgs;

#[derive(Args)]
pub struct UiArgs {
    /// Address to listen on. Any address but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: SocketAddr,
    /// A file whose first line is the token (16 characters at least) that requests must carry
    /// (`Authorization: Bearer TOKEN`, or the login form's cookie).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Compare the inventory with this OpenAPI document (3.0, 3.1 or Swagger 2.0; YAML or
    /// JSON) for every host on the endpoints page, instead of the configuration's [[api.specs]]
    /// (as `endpoints --spec`).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Where sessions come from: the local store, or with --central the fleet's (the
    /// configuration's [central]). The configuration also names the OpenAPI documents
    /// ([[api.specs]]) the endpoints page compares the local inventory with.
    #[command(flatten)]
    source: SourceArgs,
}

/// The token from `--token-file`, checked against the listen address before anything starts.
pub fn token(file: Option<&PathBuf>, listen: &[SocketAddr]) -> Result<Option<Token>> {
    let token = file.map(|path| Token::from_file(path)).transpose()?;
    for addr in listen {
        console::auth::check_listen(*addr, token.as_ref())?;
    }
    Ok(token)
}

pub fn ui(args: UiArgs) -> Result<()> {
    let token = token(args.token_file.as_ref(), &[args.listen])?;
    let (central, config) = args.source.central()?;
    let data_dir = args.source.data_dir(&config);
    let options = ConsoleOptions {
        token,
        inventory: InventorySetup {
            specs: match &args.spec {
                Some(file) => inventory::load_specs([("*", file.as_path())])?,
                None => {
                    inventory::load_configured_specs(&config, args.source.config.config.as_deref())?
                }
            },
            config: config.inventory.clone(),
        },
        central: central.map(|query| CentralSource {
            query,
            host_id: args.source.host_id.clone(),
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = console::bind(args.listen, options.token.as_ref()).await?;
        let state = ConsoleState::new(&data_dir, options);
        println!("console: http://{}/ (Ctrl-C stops it)", args.listen);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        console::serve(listener, console::router(state), shutdown).await?;
        Ok(())
    })
}

//! `apisessions ui`: the web console over the store, until Ctrl-C.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use apisessions::{
    analysis::inventory,
    console::{self, ConsoleState, InventorySetup, Token},
};
use clap::Args;

use crate::args::{ConfigArg, DataDirArg};

#[derive(Args)]
pub struct UiArgs {
    /// Address to listen on. Any address but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: SocketAddr,
    /// A file whose first line is the token (16 characters at least) that requests must carry
    /// (`Authorization: Bearer TOKEN`, or the login form's cookie).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The configuration: its data directory, and the OpenAPI documents ([[api.specs]]) the
    /// endpoints page compares the inventory with.
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data: DataDirArg,
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
    let config = args.config.load()?;
    let data_dir = args.data.resolve(&config);
    let setup = InventorySetup {
        specs: inventory::load_configured_specs(&config, args.config.config.as_deref())?,
        config: config.inventory,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = console::bind(args.listen, token.as_ref()).await?;
        let state = ConsoleState::new(&data_dir, token, setup);
        println!("console: http://{}/ (Ctrl-C stops it)", args.listen);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        console::serve(listener, console::router(state), shutdown).await?;
        Ok(())
    })
}

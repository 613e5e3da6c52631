//! Arguments shared by several commands: times, the data directory, the configuration file.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result};
use apisessions::{
    analysis::inventory::EndpointResolver, config::Config, ship::CentralQuery, store::Store,
};
use clap::Args;

/// A point in time: an age like `1h` or `30m` (that long ago), or an RFC 3339 time.
#[derive(Clone, Copy, Debug)]
pub struct When(pub u64);

impl std::str::FromStr for When {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        apisessions::report::parse_time(s, SystemTime::now()).map(Self)
    }
}

#[derive(Args)]
pub struct DataDirArg {
    /// Where state and statistics live. Default: the configuration file's storage.data_dir,
    /// else /var/lib/apisessions.
    #[arg(long, env = "APISESSIONS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn resolve(&self, config: &Config) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| config.storage.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/apisessions"))
    }
}

#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file (TOML; see the README). Command-line flags override what it says.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        })
    }
}

pub fn create_data_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Where the query commands read: the local store, or with `--central` (or the configuration's
/// `central.query = true`) the fleet's central store.
#[derive(Args)]
pub struct SourceArgs {
    /// Answer from the central ClickHouse store (the configuration's [central] section).
    #[arg(long)]
    pub central: bool,
    /// With --central: only what this host shipped (its central.host_id).
    #[arg(long, value_name = "ID", requires = "central")]
    pub host_id: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub data: DataDirArg,
}

impl SourceArgs {
    /// The central store to ask, when the query goes there; the configuration either way.
    pub fn central(&self) -> Result<(Option<CentralQuery>, Config)> {
        let config = self.config.load()?;
        if !self.central && !config.central.as_ref().is_some_and(|c| c.query) {
            return Ok((None, config));
        }
        let Some(central) = &config.central else {
            anyhow::bail!(
                "--central needs a [central] section in the configuration (--config FILE)"
            );
        };
        let query = CentralQuery::new(central).context("connecting to the central store")?;
        Ok((Some(query), config))
    }

    pub fn data_dir(&self, config: &Config) -> PathBuf {
        self.data.resolve(config)
    }

    /// For answers from the central store: the endpoints as this host's template learner knows
    /// them now, like the local answers; as shipped where there is no local store.
    pub fn central_resolver(&self, config: &Config) -> Result<EndpointResolver> {
        match Store::open_read_only(&self.data_dir(config)) {
            Ok(store) => endpoint_resolver(config, &store),
            Err(_) => Ok(EndpointResolver::default()),
        }
    }
}

/// Reads the store's endpoints as the template learner knows them now (see
/// [`EndpointResolver`]); an inventory this build cannot read leaves them as written.
pub fn endpoint_resolver(config: &Config, store: &Store) -> Result<EndpointResolver> {
    let state = store.inventory()?;
    Ok(
        EndpointResolver::new(&config.inventory, state.as_deref()).unwrap_or_else(|e| {
            log::warn!("the stored endpoint inventory is not readable ({e}): endpoints as written");
            EndpointResolver::default()
        }),
    )
}

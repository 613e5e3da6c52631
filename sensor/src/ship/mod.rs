//! The central store: exchanges and sessions shipped to ClickHouse from a durable outbox, and
//! the query commands over the fleet (see docs/CENTRAL.md).
//!
//! - [`client`]: ClickHouse over HTTP (inserts as JSONEachRow, queries with their values as
//!   external data, never pasted into SQL).
//! - [`schema`]: versioned migrations (database, `exchanges`, `sessions`) and the retention
//!   sweep; works on 18.16 and on current releases.
//! - [`rows`]: the tables' rows (the NDJSON vocabulary plus `host_id` and `exchange_id`) and a
//!   fleet session merged from its hosts' rows.
//! - [`shipper`]: the thread that reads the store's outbox (`store::outbox`) and advances its
//!   cursor only after the server acknowledged an insert.
//! - [`query`]: `sessions`, `show`, `export` answered from the central tables.
//!
//! The daemon wires it in a few lines: enable the outbox on the writer's store, start the
//! shipper on a [`crate::store::Store::share`] of it, show its counters in `stats`:
//!
//! ```ignore
//! let mut store = Store::open(&data_dir, map_size)?;
//! let shipper = match &config.central {
//!     Some(central) => {
//!         store.enable_outbox();
//!         let settings = ShipperSettings::from_config(central, config.storage.retention);
//!         Some(Shipper::spawn(store.share(), central, settings)?)
//!     }
//!     None => None,
//! };
//! let writer = StoreWriter::start(store, retention, prune_every);
//! ```

pub mod client;
pub mod query;
pub mod rows;
pub mod schema;
pub mod shipper;

use std::path::PathBuf;

pub use client::Client;
pub use query::{CentralQuery, ExchangeFilter};
pub use rows::{CentralSession, ExchangeRow, SessionRow};
pub use shipper::{Shipper, ShipperCounters, ShipperHandle, ShipperSettings};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("reading the central password from {path}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the central server cannot be reached: {0}")]
    Unreachable(String),
    #[error("the central server refused the credentials (check user and password_file): {0}")]
    Auth(String),
    #[error("the central server answered HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the central server's answer cannot be read: {0}")]
    BadAnswer(String),
    #[error("the local store: {0}")]
    Store(#[from] StoreError),
}

//! The web console: the sessions list, a session's page, the status page, a JSON API under
//! `/api/v1/` with the CLI's objects, and `/metrics` in the Prometheus text format.
//!
//! A reader like the CLI: it opens the store read-only next to the writing daemon (or, in
//! `run --ui`, shares the daemon's handle: LMDB allows one environment per process) and the
//! statistics file the daemon writes. Everything it shows was captured from traffic and is
//! attacker-controlled, so pages are built with maud, which escapes every value it inserts,
//! and are served under a Content-Security-Policy that runs no inline script at all.
//!
//! - [`server`]: the router, the security headers, binding and serving.
//! - [`auth`]: the token (bearer header or login cookie) and the listen-address rule.
//! - [`filters`]: the list's filters as query parameters, and links that keep them.
//! - [`pages`] and [`chart`]: HTML pages and the session's requests/latency chart (SVG).
//! - [`api`]: the JSON API. [`metrics`]: every statistics counter for Prometheus.
//! - [`source`]: where the pages read: the local store, or with `ui --central` the fleet's
//!   central store for sessions and exchanges ([`CentralSource`]). The endpoints page shows the
//!   inventory the local store holds, compared with the configuration's OpenAPI documents
//!   ([`InventorySetup`]) as `apisessions endpoints` does; the status page and `/metrics`
//!   this host's statistics.

pub mod api;
pub mod auth;
pub mod chart;
pub mod filters;
pub mod metrics;
pub mod pages;
pub mod server;
pub mod source;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

pub use auth::{AuthError, Token};
pub use server::{bind, metrics_router, router, serve};
pub use source::{CentralSource, InventorySetup, Listed};

use crate::{
    analysis::inventory::StateError,
    ship::CentralError,
    stats::StatsError,
    store::{Store, StoreError},
};
use source::StoreSource;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("reading the endpoint inventory")]
    Inventory(#[from] StateError),
    #[error("the central store: {0}")]
    Central(#[from] CentralError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("listening on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the console")]
    Serve(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) | Self::Store(StoreError::BadId(_)) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::Stats(StatsError::Missing(_)) => StatusCode::NOT_FOUND,
            Self::Central(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            log::error!("console: {self}");
        }
        // Plain text (and nosniff, see `server`): a message may quote what the request held.
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// What a console is given besides where its store is.
#[derive(Default)]
pub struct ConsoleOptions {
    pub token: Option<Token>,
    pub inventory: InventorySetup,
    /// `ui --central`: sessions and exchanges from the fleet's central store.
    pub central: Option<CentralSource>,
}

/// What every handler shares.
pub struct ConsoleState {
    data_dir: PathBuf,
    store: StoreSource,
    central: Option<CentralSource>,
    inventory: InventorySetup,
    token: Option<Token>,
    /// Requests served at once at most; more get 503 (see `server::limit`).
    in_flight: tokio::sync::Semaphore,
}

pub type SharedState = Arc<ConsoleState>;

/// Requests the console serves at the same time at most.
pub const MAX_IN_FLIGHT: usize = 32;

impl ConsoleState {
    /// A console over the store in `data_dir`, opened read-only when first needed.
    pub fn new(data_dir: &Path, options: ConsoleOptions) -> SharedState {
        Self::with_source(data_dir, StoreSource::Dir(Mutex::new(None)), options)
    }

    /// A console over a store this process already has open (the daemon's).
    pub fn shared(data_dir: &Path, store: Arc<Store>, options: ConsoleOptions) -> SharedState {
        Self::with_source(data_dir, StoreSource::Shared(store), options)
    }

    fn with_source(data_dir: &Path, store: StoreSource, options: ConsoleOptions) -> SharedState {
        Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            store,
            central: options.central,
            inventory: options.inventory,
            token: options.token,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether sessions come from the central store (`ui --central`).
    pub fn is_central(&self) -> bool {
        self.central.is_some()
    }
}

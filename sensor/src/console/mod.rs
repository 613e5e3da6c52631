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

pub mod api;
pub mod auth;
pub mod chart;
pub mod filters;
pub mod metrics;
pub mod pages;
pub mod server;

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

use crate::{
    analysis::inventory::{EndpointResolver, InventoryConfig},
    record::{SessionSummary, StoredExchange},
    stats::StatsError,
    store::{Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
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
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
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

/// Where the console reads sessions from.
enum StoreSource {
    /// The daemon's own handle (`run --ui`).
    Shared(Arc<Store>),
    /// Opened read-only at the first request that finds a store there (`apisessions ui` may
    /// start before the daemon has written anything).
    Dir(Mutex<Option<Arc<Store>>>),
}

/// What every handler shares.
pub struct ConsoleState {
    data_dir: PathBuf,
    store: StoreSource,
    token: Option<Token>,
    /// Requests served at once at most; more get 503 (see `server::limit`).
    in_flight: tokio::sync::Semaphore,
}

pub type SharedState = Arc<ConsoleState>;

/// Requests the console serves at the same time at most.
pub const MAX_IN_FLIGHT: usize = 32;

impl ConsoleState {
    /// A console over the store in `data_dir`, opened read-only when first needed.
    pub fn new(data_dir: &Path, token: Option<Token>) -> SharedState {
        Self::with_source(data_dir, StoreSource::Dir(Mutex::new(None)), token)
    }

    /// A console over a store this process already has open (the daemon's).
    pub fn shared(data_dir: &Path, store: Arc<Store>, token: Option<Token>) -> SharedState {
        Self::with_source(data_dir, StoreSource::Shared(store), token)
    }

    fn with_source(data_dir: &Path, store: StoreSource, token: Option<Token>) -> SharedState {
        Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            store,
            token,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The store, or None while nothing has been stored in the data directory.
    fn store(&self) -> Result<Option<Arc<Store>>, StoreError> {
        match &self.store {
            StoreSource::Shared(store) => Ok(Some(Arc::clone(store))),
            StoreSource::Dir(opened) => {
                let mut opened = opened
                    .lock()
                    .map_err(|_| StoreError::Missing(self.data_dir.clone()))?;
                if opened.is_none() {
                    match Store::open_read_only(&self.data_dir) {
                        Ok(store) => *opened = Some(Arc::new(store)),
                        Err(StoreError::Missing(_)) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                Ok(opened.clone())
            }
        }
    }

    /// Runs `read` on the store on a blocking thread (LMDB reads are blocking calls); None
    /// while there is no store yet.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<Option<T>, ConsoleError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ConsoleError> + Send + 'static,
    {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || match state.store()? {
            Some(store) => read(&store).map(Some),
            None => Ok(None),
        })
        .await
        .map_err(|e| ConsoleError::Internal(e.to_string()))?
    }

    /// Sessions matching `filters`: one page's worth and whether another page follows.
    async fn sessions(
        self: &Arc<Self>,
        filters: filters::Filters,
    ) -> Result<(Vec<SessionSummary>, bool), ConsoleError> {
        let (page, page_size) = (filters.page, filters.page_size);
        let list = self
            .read(move |store| {
                Ok(match &filters.session {
                    Some(id) => store
                        .session(id)?
                        .filter(|s| filters.filter.matches(s))
                        .into_iter()
                        .collect(),
                    None => store.list(&filters.filter)?,
                })
                .map(|mut list: Vec<SessionSummary>| {
                    let resolver = endpoint_resolver(store);
                    for summary in &mut list {
                        resolver.summary(summary);
                    }
                    list
                })
            })
            .await?
            .unwrap_or_default();
        let skip = (page - 1).saturating_mul(page_size);
        let more = list.len() > skip.saturating_add(page_size);
        Ok((list.into_iter().skip(skip).take(page_size).collect(), more))
    }

    /// One session and up to `max` of its exchanges that `keep` accepts, with how many it has
    /// that `keep` accepts in all.
    async fn session(
        self: &Arc<Self>,
        id: String,
        max: usize,
        keep: impl Fn(&StoredExchange) -> bool + Send + 'static,
    ) -> Result<(SessionSummary, Vec<StoredExchange>, usize), ConsoleError> {
        let found = self
            .read(move |store| {
                let Some(mut summary) = store.session(&id)? else {
                    return Ok(None);
                };
                let resolver = endpoint_resolver(store);
                resolver.summary(&mut summary);
                let (mut exchanges, mut matched) = (Vec::new(), 0usize);
                store.exchanges(&id, |mut e| {
                    resolver.record(&mut e);
                    if keep(&e) {
                        matched += 1;
                        if exchanges.len() < max {
                            exchanges.push(e);
                        }
                    }
                    true
                })?;
                Ok(Some((summary, exchanges, matched)))
            })
            .await?
            .flatten();
        found.ok_or_else(|| ConsoleError::NotFound("no such session".into()))
    }
}

/// The store's endpoints as the template learner knows them now (the console has no
/// configuration: the learner's default thresholds); as written when the stored inventory is
/// missing or unreadable.
fn endpoint_resolver(store: &Store) -> EndpointResolver {
    store
        .inventory()
        .ok()
        .flatten()
        .and_then(|state| EndpointResolver::new(&InventoryConfig::default(), Some(&state)).ok())
        .unwrap_or_default()
}

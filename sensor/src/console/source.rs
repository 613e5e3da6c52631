//! Where the console reads: the local store (opened read-only, or the daemon's own handle) and,
//! with `ui --central`, the fleet's central store for sessions and their exchanges, answered
//! as `sessions --central` and `show --central` answer. Every read runs on a blocking thread:
//! LMDB reads and the central store's HTTP client are blocking calls.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{ConsoleError, ConsoleState, filters::Filters};
use crate::{
    analysis::inventory::{
        EndpointFilter, EndpointResolver, EndpointRow, HostSpec, Inventory, InventoryConfig,
        InventoryState,
    },
    record::{SessionSummary, StoredExchange},
    ship::{CentralQuery, CentralSession, ExchangeFilter},
    store::{SessionFilter, Store, StoreError},
};

/// The local store.
pub(super) enum StoreSource {
    /// The daemon's own handle (`run --ui`).
    Shared(Arc<Store>),
    /// Opened read-only at the first request that finds a store there (`apisessions ui` may
    /// start before the daemon has written anything).
    Dir(Mutex<Option<Arc<Store>>>),
}

/// `ui --central`: the fleet's central store, and the one sensor to keep to (`--host-id`).
pub struct CentralSource {
    pub query: CentralQuery,
    pub host_id: Option<String>,
}

/// What the endpoints page compares the stored inventory with: the configuration's
/// `[inventory]` bounds and `[[api.specs]]` documents (see
/// [`crate::analysis::inventory::load_configured_specs`]).
#[derive(Clone, Debug, Default)]
pub struct InventorySetup {
    pub config: InventoryConfig,
    pub specs: Vec<HostSpec>,
}

/// A session as the console shows it: from the local store, or merged across the sensors of
/// the fleet that saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Listed {
    Local(SessionSummary),
    Central(CentralSession),
}

impl Listed {
    pub fn summary(&self) -> &SessionSummary {
        match self {
            Self::Local(summary) => summary,
            Self::Central(session) => &session.summary,
        }
    }

    /// The object of `sessions --json` (with `--central`: and its `host_ids`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Local(summary) => summary.to_json(),
            Self::Central(session) => session.to_json(),
        }
    }
}

impl CentralSource {
    fn sessions(&self, filters: &Filters) -> Result<Vec<Listed>, ConsoleError> {
        let host_id = self.host_id.as_deref();
        let list = match &filters.session {
            Some(id) => self
                .query
                .session(id)?
                .filter(|s| {
                    filters.filter.matches(&s.summary)
                        && host_id.is_none_or(|h| s.host_ids.iter().any(|x| x == h))
                })
                .into_iter()
                .collect(),
            None => self.query.sessions(&filters.filter, host_id)?,
        };
        Ok(list.into_iter().map(Listed::Central).collect())
    }

    /// The exchanges `filter` names (of every sensor, or what `--host-id` shipped) in time
    /// order, with their session ids; `visit` returns false to stop.
    fn exchanges(
        &self,
        filter: ExchangeFilter,
        mut visit: impl FnMut(&str, StoredExchange) -> bool,
    ) -> Result<(), ConsoleError> {
        let filter = ExchangeFilter {
            host_id: self.host_id.clone(),
            ..filter
        };
        self.query
            .exchanges(&filter, |row| visit(&row.session_id, row.to_stored()))?;
        Ok(())
    }
}

impl ConsoleState {
    /// The local store, or None while nothing has been stored in the data directory.
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

    /// The endpoints of this host's stored inventory, for records and sessions read from the
    /// central store too (as `sessions --central` reads them); as written without a store.
    fn local_resolver(&self) -> EndpointResolver {
        match self.store() {
            Ok(Some(store)) => endpoint_resolver(&store),
            _ => EndpointResolver::default(),
        }
    }

    /// Runs `work` on a blocking thread.
    async fn blocking<T, F>(self: &Arc<Self>, work: F) -> Result<T, ConsoleError>
    where
        T: Send + 'static,
        F: FnOnce(&ConsoleState) -> Result<T, ConsoleError> + Send + 'static,
    {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&state))
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?
    }

    /// Sessions matching `filters`: one page's worth and whether another page follows.
    pub(super) async fn sessions(
        self: &Arc<Self>,
        filters: Filters,
    ) -> Result<(Vec<Listed>, bool), ConsoleError> {
        let (page, page_size) = (filters.page, filters.page_size);
        let list = self
            .blocking(move |state| {
                if let Some(central) = &state.central {
                    let mut list = central.sessions(&filters)?;
                    let resolver = state.local_resolver();
                    for listed in &mut list {
                        if let Listed::Central(session) = listed {
                            resolver.summary(&mut session.summary);
                        }
                    }
                    return Ok(list);
                }
                let Some(store) = state.store()? else {
                    return Ok(Vec::new());
                };
                let mut list: Vec<SessionSummary> = match &filters.session {
                    Some(id) => store
                        .session(id)?
                        .filter(|s| filters.filter.matches(s))
                        .into_iter()
                        .collect(),
                    None => store.list(&filters.filter)?,
                };
                let resolver = endpoint_resolver(&store);
                for summary in &mut list {
                    resolver.summary(summary);
                }
                Ok(list.into_iter().map(Listed::Local).collect())
            })
            .await?;
        let skip = (page - 1).saturating_mul(page_size);
        let more = list.len() > skip.saturating_add(page_size);
        Ok((list.into_iter().skip(skip).take(page_size).collect(), more))
    }

    /// One session and up to `max` of its exchanges that `keep` accepts, with how many it has
    /// that `keep` accepts in all.
    pub(super) async fn session(
        self: &Arc<Self>,
        id: String,
        max: usize,
        keep: impl Fn(&StoredExchange) -> bool + Send + 'static,
    ) -> Result<(Listed, Vec<StoredExchange>, usize), ConsoleError> {
        let found = self
            .blocking(move |state| {
                let (mut exchanges, mut matched) = (Vec::new(), 0usize);
                let mut take = |e: StoredExchange| {
                    if keep(&e) {
                        matched += 1;
                        if exchanges.len() < max {
                            exchanges.push(e);
                        }
                    }
                    true
                };
                let listed = if let Some(central) = &state.central {
                    let Some(mut session) = central.query.session(&id)? else {
                        return Ok(None);
                    };
                    let resolver = state.local_resolver();
                    resolver.summary(&mut session.summary);
                    let filter = ExchangeFilter {
                        session_id: Some(id),
                        ..ExchangeFilter::default()
                    };
                    central.exchanges(filter, |_, mut e| {
                        resolver.record(&mut e);
                        take(e)
                    })?;
                    Listed::Central(session)
                } else {
                    let Some(store) = state.store()? else {
                        return Ok(None);
                    };
                    let Some(mut summary) = store.session(&id)? else {
                        return Ok(None);
                    };
                    let resolver = endpoint_resolver(&store);
                    resolver.summary(&mut summary);
                    store.exchanges(&id, |mut e| {
                        resolver.record(&mut e);
                        take(e)
                    })?;
                    Listed::Local(summary)
                };
                Ok(Some((listed, exchanges, matched)))
            })
            .await?;
        found.ok_or_else(|| ConsoleError::NotFound("no such session".into()))
    }

    /// NDJSON records (as `export`) of one session or of the sessions active between `since`
    /// and `until` (local: newest session first; central: in time order), `limit` at most.
    pub(super) async fn exchanges(
        self: &Arc<Self>,
        session: Option<String>,
        (since, until): (u64, u64),
        limit: usize,
    ) -> Result<Vec<Value>, ConsoleError> {
        self.blocking(move |state| {
            let mut records = Vec::new();
            if let Some(central) = &state.central {
                let filter = ExchangeFilter {
                    session_id: session,
                    since_ns: Some(since),
                    until_ns: Some(until),
                    ..ExchangeFilter::default()
                };
                let resolver = state.local_resolver();
                central.exchanges(filter, |id, mut e| {
                    resolver.record(&mut e);
                    records.push(e.to_json(id));
                    records.len() < limit
                })?;
                return Ok(records);
            }
            let Some(store) = state.store()? else {
                return Ok(records);
            };
            let ids: Vec<String> = match session {
                Some(id) => vec![id],
                None => store
                    .list(&SessionFilter {
                        since_ns: Some(since),
                        until_ns: Some(until),
                        ..SessionFilter::default()
                    })?
                    .into_iter()
                    .map(|s| s.session_id)
                    .collect(),
            };
            let resolver = endpoint_resolver(&store);
            for id in &ids {
                store.exchanges(id, |mut e| {
                    resolver.record(&mut e);
                    if (since..=until).contains(&e.ts_ns) {
                        records.push(e.to_json(id));
                    }
                    records.len() < limit
                })?;
                if records.len() >= limit {
                    break;
                }
            }
            Ok(records)
        })
        .await
    }

    /// The local store's endpoint inventory, rows that `filter` accepts, as `apisessions
    /// endpoints` lists them (the specs' orphans too, before anything is stored).
    pub(super) async fn endpoints(
        self: &Arc<Self>,
        filter: EndpointFilter,
    ) -> Result<Vec<EndpointRow>, ConsoleError> {
        self.blocking(move |state| {
            let setup = &state.inventory;
            let mut inventory = Inventory::new(setup.config.clone(), setup.specs.clone());
            if let Some(store) = state.store()?
                && let Some(bytes) = store.inventory()?
            {
                inventory.merge(&InventoryState::decode(&bytes)?);
            }
            Ok(inventory
                .rows()
                .into_iter()
                .filter(|row| filter.matches(row))
                .collect())
        })
        .await
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

//! The analysis stage: what the pipeline learns about each decoded exchange before the sinks
//! see it. Today: its session and record (endpoint template, context parameters, redaction; see
//! [`Sessionizer::record`]), its session's abuse signals ([`AbuseTracker`]), its id when it
//! comes from a capture file, the container that served it on a live host, and its endpoint in
//! the API inventory ([`Inventory`]: spec status, slow). Attack findings join here.

use std::{num::NonZeroUsize, path::Path};

use lru::LruCache;

use crate::{
    analysis::{
        abuse::{self, AbuseConfig, AbuseTracker},
        attacks::{AttackClass, AttacksConfig, AttacksError, Detector},
        inventory::{self, Inventory, InventoryState},
    },
    config::Config,
    container::ContainerIndex,
    exchange::Exchange,
    record::{Assignment, Redaction, Secret, SessionSignals, StoredExchange},
    sessions::{SessionConfig, Sessionizer},
    store::Store,
};

use super::PipelineError;

/// Everything the analysis stage holds: built once per pipeline.
pub struct Analysis {
    sessionizer: Sessionizer,
    redaction: Redaction,
    /// Capture files only: ids that let the store recognise an exchange imported before.
    ids: Option<ExchangeIds>,
    /// Live capture only: which container's namespace and cgroup served an exchange.
    containers: Option<ContainerIndex>,
    abuse: Option<AbuseTracker>,
    inventory: Option<Inventory>,
    attacks: Option<Detector>,
    pub counters: AnalysisCounters,
}

/// What the attack detection found and could not inspect whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalysisCounters {
    pub requests_inspected: u64,
    /// Findings by class (in [`AttackClass::ALL`] order).
    pub findings: [u64; AttackClass::ALL.len()],
    /// Requests whose values were not all inspected (the byte budget, the number of values).
    pub inspections_capped: u64,
    /// Requests with more findings than are kept.
    pub findings_capped: u64,
}

impl AnalysisCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out = vec![
            ("requests_inspected", self.requests_inspected),
            ("inspections_capped", self.inspections_capped),
            ("findings_capped", self.findings_capped),
        ];
        out.extend(
            AttackClass::ALL
                .iter()
                .zip(self.findings)
                .map(|(class, n)| (class.as_str(), n)),
        );
        out
    }
}

impl Analysis {
    pub fn new(sessionizer: Sessionizer, redaction: Redaction) -> Self {
        Self {
            sessionizer,
            redaction,
            ids: None,
            containers: None,
            abuse: None,
            attacks: None,
            counters: AnalysisCounters::default(),
            inventory: None,
        }
    }

    /// Inspects every request for attacks (findings in the record).
    pub fn with_attacks(mut self, detector: Detector) -> Self {
        self.attacks = Some(detector);
        self
    }

    /// Scores each session's abuse signals, unless the configuration turns them off.
    pub fn with_abuse(mut self, config: &AbuseConfig) -> Self {
        self.abuse = config.enabled.then(|| AbuseTracker::new(config.clone()));
        self
    }

    /// Counts every exchange in the endpoint inventory, which marks its record's spec status
    /// and slowness.
    pub fn with_inventory(mut self, inventory: Inventory) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// The inventory's persistable state, when there is an inventory.
    pub fn inventory_state(&self) -> Option<InventoryState> {
        self.inventory.as_ref().map(Inventory::state)
    }

    /// Gives every record a deterministic id (see [`ExchangeIds`]).
    pub fn with_exchange_ids(mut self) -> Self {
        self.ids = Some(ExchangeIds::new(self.sessionizer.secret().clone()));
        self
    }

    pub fn with_containers(mut self, containers: ContainerIndex) -> Self {
        self.containers = Some(containers);
        self
    }

    /// Takes a reloaded configuration's sessions, parameters, secrets, attack and abuse
    /// settings; active sessions and their abuse state go on. Nothing changes on an error.
    pub fn reconfigure(&mut self, config: &Config) -> Result<(), AttacksError> {
        let attacks = match config.attacks.enabled {
            true => Some(Detector::new(&AttacksConfig::from_config(config))?),
            false => None,
        };
        self.attacks = attacks;
        self.sessionizer.set_config(SessionConfig::from(config));
        self.redaction = Redaction::new(config.secrets.store_raw, &config.secrets.names);
        match (&mut self.abuse, config.abuse.enabled) {
            (Some(tracker), true) => tracker.set_config(config.abuse.clone()),
            (None, true) => self.abuse = Some(AbuseTracker::new(config.abuse.clone())),
            (_, false) => self.abuse = None,
        }
        Ok(())
    }

    pub fn sessionizer(&self) -> &Sessionizer {
        &self.sessionizer
    }

    pub(super) fn sessionizer_mut(&mut self) -> &mut Sessionizer {
        &mut self.sessionizer
    }

    pub(super) fn containers_mut(&mut self) -> Option<&mut ContainerIndex> {
        self.containers.as_mut()
    }

    /// The exchange's record and session.
    /// `handed_at`: where the record will wait in the batch for the store, if it goes there
    /// (see [`Self::take_signal_updates`]).
    pub fn analyse(
        &mut self,
        exchange: &Exchange,
        handed_at: Option<usize>,
    ) -> (StoredExchange, Assignment) {
        let (mut record, assignment) = self.sessionizer.record(exchange, &self.redaction);
        // On the request as it came (before redaction): a payload in a secret-named field is
        // found too, and kept as its keyed hash.
        if let (Some(detector), Some(request)) = (&self.attacks, &exchange.request) {
            let secret = self.sessionizer.secret();
            let inspection = detector.inspect(request, &|value| secret.hashed_value(value));
            let counters = &mut self.counters;
            counters.requests_inspected += 1;
            counters.inspections_capped += u64::from(inspection.bytes_capped);
            counters.findings_capped += u64::from(inspection.findings_capped);
            for finding in &inspection.findings {
                if let Some(i) = AttackClass::ALL.iter().position(|c| *c == finding.class) {
                    counters.findings[i] += 1;
                }
            }
            record.attacks = inspection.findings;
        }
        if let Some(ids) = &mut self.ids {
            record.exchange_id = Some(ids.next(exchange));
        }
        if let Some(containers) = &mut self.containers {
            let served = exchange.upstream.unwrap_or(exchange.server).ip();
            if let Some(by) = containers.served_by(served) {
                record.server_netns = Some(by.netns);
                record.server_cgroup = by.cgroup;
            }
        }
        if let Some(tracker) = &mut self.abuse {
            let context = abuse::Context {
                session_id: &assignment.session_id,
                fallback: assignment.key_kind.is_fallback(),
                attacks: record.attacks.len() as u32,
            };
            tracker.observe(exchange, &record, context, handed_at);
        }
        // The record's endpoint becomes the inventory's: the spec's template, else the learned
        // one (readers refine it later with what the learner knows then, see
        // `inventory::EndpointResolver`). Abuse signals above count the first pass.
        if let Some(inventory) = &mut self.inventory
            && let Some(verdict) = inventory.observe(exchange, &assignment.session_id)
        {
            record.endpoint = Some(verdict.template);
            record.spec_status = verdict.spec_status;
            record.slow = verdict.slow;
        }
        (record, assignment)
    }

    /// Sessions' abuse signals that changed since the last call, by where their newest record
    /// waits in the batch (see [`AbuseTracker::take_updates`]).
    pub fn take_signal_updates(&mut self) -> Vec<(usize, SessionSignals)> {
        self.abuse
            .as_mut()
            .map(AbuseTracker::take_updates)
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let mut stages = vec![("sessions", self.sessionizer.counters.snapshot())];
        if self.attacks.is_some() {
            stages.push(("attacks", self.counters.snapshot()));
        }
        if let Some(containers) = &self.containers {
            stages.push(("containers", containers.snapshot()));
        }
        if let Some(tracker) = &self.abuse {
            stages.push(("abuse", tracker.counters.snapshot()));
        }
        if let Some(inventory) = &self.inventory {
            stages.push(("inventory", inventory.counters().snapshot()));
        }
        stages
    }
}

/// A sessionizer that continues the sessions `store` holds: the actors active since `since_ns`
/// and their links, within the in-memory bounds. Keyed with the installation's secret in
/// `data_dir` (created on first use).
pub fn restored_sessionizer(
    config: SessionConfig,
    data_dir: &Path,
    store: &Store,
    since_ns: u64,
) -> Result<Sessionizer, PipelineError> {
    let bound = config.max_active;
    let loaded = store
        .load_state(config.max_active, config.max_links, since_ns)
        .map_err(PipelineError::LoadState)?;
    let (actors, cut) = (loaded.state.actors.len(), loaded.actors_cut);
    let mut sessionizer = Sessionizer::new(config, Secret::load_or_create(data_dir)?);
    sessionizer.restore(loaded);
    if actors > 0 {
        log::info!("continuing {actors} active sessions from the store");
    }
    if cut > 0 {
        log::warn!("{cut} more active sessions are past the {bound} held in memory and start anew");
    }
    Ok(sessionizer)
}

/// The inventory `config` asks for: its `[[api.specs]]` loaded (relative to `config_file`'s
/// directory), and what `store` holds of an earlier run merged in. A spec that cannot be
/// loaded is an error: the sensor does not start without the documents it was told to use.
pub fn restored_inventory(
    config: &Config,
    config_file: Option<&Path>,
    store: &Store,
) -> Result<Inventory, PipelineError> {
    let specs = inventory::load_configured_specs(config, config_file)?;
    let mut inventory = Inventory::new(config.inventory.clone(), specs);
    if let Some(bytes) = store.inventory().map_err(PipelineError::LoadInventory)? {
        match InventoryState::decode(&bytes) {
            Ok(state) => inventory.merge(&state),
            // Statistics, not records: a state this build cannot read starts anew.
            Err(e) => {
                log::warn!("the stored endpoint inventory is not readable ({e}): it starts anew")
            }
        }
    }
    Ok(inventory)
}

/// Deterministic ids of imported exchanges: the same capture imported again yields the same
/// ids, in the same order, so the store recognises what it already holds
/// (`StoredExchange::exchange_id`).
///
/// An id is a keyed hash of what identifies an exchange in a capture: its connection's
/// addresses, when its request and response started, its method and target. Exchanges that
/// agree on all of that (identical pipelined requests that arrived in one segment, answered in
/// one) are told apart by how many came before them, counted among the last
/// [`ExchangeIds::RECENT`] ids, which such twins always are.
pub struct ExchangeIds {
    secret: Secret,
    recent: LruCache<[u8; 16], u32>,
}

impl ExchangeIds {
    pub const RECENT: usize = 4096;

    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            recent: LruCache::new(NonZeroUsize::new(Self::RECENT).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub fn next(&mut self, exchange: &Exchange) -> [u8; 16] {
        let request = exchange.request.as_ref();
        let response = exchange.response.as_ref();
        let addresses = format!("{}|{}", exchange.client, exchange.server);
        let base = self.secret.hash(&[
            b"exchange",
            addresses.as_bytes(),
            &request.map_or(0, |r| r.meta.start_ns).to_le_bytes(),
            &response.map_or(0, |r| r.meta.start_ns).to_le_bytes(),
            request.map_or("", |r| r.method.as_str()).as_bytes(),
            request.map_or("", |r| r.uri.as_str()).as_bytes(),
        ]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&base[..16]);
        let twin = match self.recent.get_mut(&id) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                self.recent.put(id, 0);
                0
            }
        };
        if twin > 0 {
            let again = self.secret.hash(&[b"twin", &id, &twin.to_le_bytes()]);
            id.copy_from_slice(&again[..16]);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{MessageMeta, Request};

    fn exchange(start_ns: u64, uri: &str) -> Exchange {
        Exchange {
            client: "192.0.2.1:40000".parse().unwrap(),
            server: "192.0.2.2:80".parse().unwrap(),
            request: Some(Request {
                method: "GET".into(),
                uri: uri.into(),
                meta: MessageMeta {
                    start_ns,
                    ..MessageMeta::default()
                },
            }),
            response: None,
            forwarding: Default::default(),
            tls: false,
            upstream: None,
            stream_id: None,
        }
    }

    #[test]
    fn ids_repeat_for_the_same_capture_and_tell_twins_apart() {
        let capture = [
            exchange(1, "/a"),
            exchange(1, "/a"),
            exchange(1, "/a"),
            exchange(2, "/a"),
            exchange(1, "/b"),
        ];
        let ids = |secret: [u8; 32]| {
            let mut ids = ExchangeIds::new(Secret::from_bytes(secret));
            capture.iter().map(|e| ids.next(e)).collect::<Vec<_>>()
        };
        let first = ids([1; 32]);
        assert_eq!(first, ids([1; 32]), "deterministic");
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), capture.len(), "twins get ids of their own");
        assert_ne!(first, ids([2; 32]), "keyed by the installation's secret");
    }
}

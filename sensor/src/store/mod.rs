//! Stage 5, the store: sessions and exchanges in LMDB (heed), kept for the retention period.
//!
//! Databases (keys are big-endian so byte order is time order):
//! - `sessions`: session id (16 bytes) -> [`SessionSummary`]
//! - `exchanges`: session id + start ns + sequence -> a block of up to [`BLOCK_EXCHANGES`] of
//!   the session's exchanges from one transaction, in time order, each laid out compactly
//!   against the session's summary (see `store::compact`)
//! - `by_time`: session start ns + session id -> () — newest sessions, and pruning
//! - `by_ip`, `by_host`, `by_endpoint`, `by_user`: value + 0 + start ns + session id -> ()
//!
//! Values are postcard behind a format-version byte. One writer (the daemon or an import)
//! batches many exchanges per transaction; readers (the CLI) run in other processes at the same
//! time. LMDB commits are atomic, so a crash loses at most the batch in flight, never the store.

mod compact;
pub mod record;
pub mod writer;

use std::{
    collections::{HashMap, hash_map::Entry},
    fs,
    ops::Bound,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use heed::{
    CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls,
    types::{Bytes, Unit},
};
pub use record::{Redaction, SessionSummary, StoredExchange};
use serde::{Serialize, de::DeserializeOwned};
pub use writer::{StoreWriter, WriterCounters};

use crate::sessions::Assignment;
use compact::Block;

/// First byte of every stored value; bump it when a stored type changes incompatibly.
pub const FORMAT_VERSION: u8 = 3;
/// Default LMDB map size: address space, not disk (the file grows as data comes).
pub const DEFAULT_MAP_SIZE: usize = 32 << 30;
const STORE_DIR: &str = "store";
/// Exchanges of one session packed into one value at most. A value per exchange would pay a key
/// and LMDB's node overhead (38 bytes) for every ~90 bytes of exchange, in half-filled pages;
/// packed, a busy session's exchanges share them. Small enough that a block (~90 bytes each)
/// stays inside a leaf page rather than spilling to overflow pages.
pub const BLOCK_EXCHANGES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no sessions stored in {0} yet: the daemon or an import has not written there")]
    Missing(PathBuf),
    #[error("opening the store in {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: heed::Error,
    },
    #[error(
        "the store is full (LMDB map size reached); raise storage.map_size or shorten retention"
    )]
    MapFull,
    #[error("store {0}")]
    Lmdb(&'static str, #[source] heed::Error),
    #[error("a stored {what} is corrupt or from another version: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("'{0}' is not a session id (32 hex digits)")]
    BadId(String),
    #[error("creating {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn lmdb(what: &'static str) -> impl Fn(heed::Error) -> StoreError {
    move |e| match e {
        heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::MapFull,
        other => StoreError::Lmdb(what, other),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT_VERSION]).map_err(|e| StoreError::Corrupt {
        what: "value (encoding)",
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
                what,
                reason: e.to_string(),
            })
        }
        Some((version, _)) => Err(StoreError::Corrupt {
            what,
            reason: format!(
                "written in store format {version}, this build reads format {FORMAT_VERSION};                  move the store directory aside to start a new one"
            ),
        }),
        None => Err(StoreError::Corrupt {
            what,
            reason: "empty value".into(),
        }),
    }
}

/// A session id from its 32 hex digits.
pub fn id_bytes(id: &str) -> Result<[u8; 16], StoreError> {
    let bad = || StoreError::BadId(id.to_owned());
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let digits = id.as_bytes();
    if digits.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
    }
    Ok(out)
}

fn index_key(value: &str, start_ns: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + 25);
    key.extend_from_slice(value.as_bytes());
    key.push(0);
    key.extend_from_slice(&start_ns.to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn time_key(start_ns: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&start_ns.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

/// Which sessions `apisessions sessions` wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Sessions active at or after this time (ns since the epoch).
    pub since_ns: Option<u64>,
    /// Sessions that started at or before this time.
    pub until_ns: Option<u64>,
    pub ip: Option<String>,
    pub host: Option<String>,
    /// A templated endpoint (`/users/{id}`) or a path that templates to it.
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub user: Option<String>,
    pub limit: usize,
}

impl SessionFilter {
    fn matches(&self, s: &SessionSummary) -> bool {
        self.since_ns.is_none_or(|t| s.end_ns >= t)
            && self.until_ns.is_none_or(|t| s.start_ns <= t)
            && self.ip.as_ref().is_none_or(|ip| s.client_ips.contains(ip))
            && self
                .host
                .as_ref()
                .is_none_or(|h| s.hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
            && self.endpoint.as_ref().is_none_or(|e| {
                s.endpoints
                    .iter()
                    .any(|(k, _)| k.split_once(' ').is_some_and(|(_, p)| p == e))
            })
            && self
                .method
                .as_ref()
                .is_none_or(|m| s.methods.iter().any(|(x, _)| x.eq_ignore_ascii_case(m)))
            && self
                .status
                .is_none_or(|st| s.statuses.iter().any(|(x, _)| *x == st))
            && self
                .user
                .as_ref()
                .is_none_or(|u| s.user.as_ref() == Some(u))
    }
}

/// What a pruning sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub sessions: u64,
    pub exchanges: u64,
    /// More old sessions remain (the sweep stopped at its per-call bound).
    pub more: bool,
}

pub struct Store {
    env: Env<WithoutTls>,
    sessions: Database<'static, Bytes, Bytes>,
    exchanges: Database<'static, Bytes, Bytes>,
    by_time: Database<'static, Bytes, Unit>,
    by_ip: Database<'static, Bytes, Unit>,
    by_host: Database<'static, Bytes, Unit>,
    by_endpoint: Database<'static, Bytes, Unit>,
    by_user: Database<'static, Bytes, Unit>,
    /// Disambiguates exchanges of one session that start in the same nanosecond.
    sequence: AtomicU32,
}

const DB_NAMES: [&str; 7] = [
    "sessions",
    "exchanges",
    "by_time",
    "by_ip",
    "by_host",
    "by_endpoint",
    "by_user",
];

impl Store {
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(STORE_DIR)
    }

    /// Opens (creating if needed) the store for writing.
    pub fn open(data_dir: &Path, map_size: usize) -> Result<Self, StoreError> {
        let dir = Self::dir(data_dir);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Self::open_env(&dir, map_size, false)
    }

    /// Opens an existing store for reading, next to a running writer.
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = Self::dir(data_dir);
        if !dir.join("data.mdb").exists() {
            return Err(StoreError::Missing(data_dir.to_path_buf()));
        }
        Self::open_env(&dir, DEFAULT_MAP_SIZE, true)
    }

    fn open_env(dir: &Path, map_size: usize, read_only: bool) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size).max_dbs(DB_NAMES.len() as u32);
        if read_only {
            // SAFETY: READ_ONLY only restricts what this handle may do.
            unsafe { options.flags(EnvFlags::READ_ONLY) };
        }
        // SAFETY: the store directory belongs to apisessions; nothing else maps it with other
        // options, and in-process the environment is opened once per store handle.
        let env = unsafe { options.open(dir) }.map_err(open_error)?;
        let dbs: [Database<'static, Bytes, Bytes>; 7] = if read_only {
            let rtxn = env.read_txn().map_err(open_error)?;
            env.open_databases_and_commit(rtxn, |opener, rtxn| {
                let mut dbs = Vec::new();
                for name in DB_NAMES {
                    match opener.open_database(rtxn, Some(name))? {
                        Some(db) => dbs.push(db),
                        None => return Ok(CommitOrAbort::Abort(())),
                    }
                }
                Ok::<_, heed::Error>(CommitOrAbort::Commit(<[_; 7]>::try_from(dbs).ok()))
            })
            .map_err(open_error)?
            .commit()
            .flatten()
            .ok_or_else(|| StoreError::Missing(dir.to_path_buf()))?
        } else {
            let wtxn = env.write_txn().map_err(open_error)?;
            env.create_databases_and_commit(wtxn, |opener, wtxn| {
                let mut dbs = Vec::new();
                for name in DB_NAMES {
                    dbs.push(opener.create_database(wtxn, Some(name))?);
                }
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(<[_; 7]>::try_from(dbs).ok()))
            })
            .map_err(open_error)?
            .commit()
            .flatten()
            .ok_or_else(|| StoreError::Missing(dir.to_path_buf()))?
        };
        let unit = |db: Database<'static, Bytes, Bytes>| db.remap_data_type::<Unit>();
        Ok(Self {
            sessions: dbs[0],
            exchanges: dbs[1],
            by_time: unit(dbs[2]),
            by_ip: unit(dbs[3]),
            by_host: unit(dbs[4]),
            by_endpoint: unit(dbs[5]),
            by_user: unit(dbs[6]),
            env,
            sequence: AtomicU32::new(0),
        })
    }

    fn read(&self) -> Result<RoTxn<'_, WithoutTls>, StoreError> {
        self.env.read_txn().map_err(lmdb("read transaction"))
    }

    fn summary(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        id: &[u8; 16],
    ) -> Result<Option<SessionSummary>, StoreError> {
        match self.sessions.get(txn, id).map_err(lmdb("read"))? {
            Some(bytes) => decode::<StoredSession>(bytes, "session").map(|s| Some(s.summary)),
            None => Ok(None),
        }
    }

    /// Writes a batch of exchanges with their sessions in one transaction.
    ///
    /// Each session the batch touches is read and written once, however many of its exchanges
    /// the batch holds, and its exchanges go in as blocks in key order, so a transaction's
    /// B-tree work is per session rather than per exchange.
    pub fn write(&self, batch: &[(StoredExchange, Assignment)]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn().map_err(lmdb("write transaction"))?;
        // Per session: its summary and the batch's exchanges of it.
        let mut sessions: HashMap<[u8; 16], (StoredSession, Vec<&StoredExchange>)> = HashMap::new();
        for (exchange, assignment) in batch {
            let id = id_bytes(&assignment.session_id)?;
            let (stored, exchanges) = match sessions.entry(id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let stored = match self.sessions.get(&txn, &id).map_err(lmdb("read"))? {
                        Some(bytes) => decode::<StoredSession>(bytes, "session")?,
                        None => {
                            self.by_time
                                .put(&mut txn, &time_key(exchange.ts_ns, &id), &())
                                .map_err(lmdb("write"))?;
                            StoredSession {
                                indexed_ns: exchange.ts_ns,
                                summary: SessionSummary::new(assignment, exchange.ts_ns),
                            }
                        }
                    };
                    entry.insert((stored, Vec::new()))
                }
            };
            let new = stored.summary.add(exchange, assignment);
            self.index(&mut txn, &id, stored.indexed_ns, &new)?;
            exchanges.push(exchange);
        }
        let mut blocks = Vec::new();
        for (id, (stored, exchanges)) in &mut sessions {
            exchanges.sort_by_key(|e| e.ts_ns);
            for chunk in exchanges.chunks(BLOCK_EXCHANGES) {
                // The summary is final for this transaction; its lists only grow, so references
                // into them stay valid.
                let (block, first_ns) = Block::new(chunk, &stored.summary);
                blocks.push((*id, first_ns, encode(&block)?));
            }
        }
        // Key order: B-tree work stays near the pages already touched, and sequence numbers
        // follow the batch, so writing the same batch again (a repeated import) rewrites the
        // same keys.
        blocks.sort_by_key(|(id, first_ns, _)| (*id, *first_ns));
        for (id, first_ns, value) in &blocks {
            let mut key = [0u8; 28];
            key[..16].copy_from_slice(id);
            key[16..24].copy_from_slice(&first_ns.to_be_bytes());
            key[24..].copy_from_slice(&self.sequence.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            self.exchanges
                .put(&mut txn, &key, value)
                .map_err(lmdb("write"))?;
        }
        for (id, (stored, _)) in &sessions {
            self.sessions
                .put(&mut txn, id, &encode(stored)?)
                .map_err(lmdb("write"))?;
        }
        txn.commit().map_err(lmdb("commit"))
    }

    /// Adds what a session newly gained to the secondary indexes.
    fn index(
        &self,
        txn: &mut RwTxn<'_>,
        id: &[u8; 16],
        at: u64,
        new: &record::NewValues,
    ) -> Result<(), StoreError> {
        for ip in &new.ips {
            self.by_ip
                .put(txn, &index_key(ip, at, id), &())
                .map_err(lmdb("write"))?;
        }
        for host in &new.hosts {
            self.by_host
                .put(txn, &index_key(&host.to_ascii_lowercase(), at, id), &())
                .map_err(lmdb("write"))?;
        }
        for endpoint in &new.endpoints {
            self.by_endpoint
                .put(txn, &index_key(endpoint, at, id), &())
                .map_err(lmdb("write"))?;
        }
        if let Some(user) = &new.user {
            self.by_user
                .put(txn, &index_key(user, at, id), &())
                .map_err(lmdb("write"))?;
        }
        Ok(())
    }

    /// Sessions matching `filter`, newest first, at most `filter.limit` (0: all).
    pub fn list(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        let txn = self.read()?;
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        // The most selective index the filter allows; the rest is checked on the summary.
        let index = [
            (&filter.user, self.by_user),
            (&filter.ip, self.by_ip),
            (&filter.endpoint, self.by_endpoint),
            (
                &filter.host.as_ref().map(|h| h.to_ascii_lowercase()),
                self.by_host,
            ),
        ]
        .into_iter()
        .find_map(|(value, db)| value.as_ref().map(|v| (v.clone(), db)));
        let mut visit = |id: &[u8]| -> Result<bool, StoreError> {
            let Ok(id) = <[u8; 16]>::try_from(id) else {
                return Ok(true);
            };
            if let Some(mut summary) = self.summary(&txn, &id)?
                && filter.matches(&summary)
            {
                summary.sort();
                out.push(summary);
            }
            Ok(out.len() < limit)
        };
        match index {
            Some((value, db)) => {
                let mut prefix = value.into_bytes();
                prefix.push(0);
                for entry in db.rev_prefix_iter(&txn, &prefix).map_err(lmdb("read"))? {
                    let (key, ()) = entry.map_err(lmdb("read"))?;
                    if !visit(&key[key.len() - 16..])? {
                        break;
                    }
                }
            }
            None => {
                let upper = filter.until_ns.map_or(Bound::Unbounded, |t| {
                    Bound::Included((t.saturating_add(1)).to_be_bytes().to_vec())
                });
                let range = (Bound::Unbounded, upper.as_ref().map(Vec::as_slice));
                for entry in self.by_time.rev_range(&txn, &range).map_err(lmdb("read"))? {
                    let (key, ()) = entry.map_err(lmdb("read"))?;
                    if !visit(&key[8..])? {
                        break;
                    }
                }
            }
        }
        // Index order is by first-indexed start; present newest activity first.
        out.sort_by_key(|s| std::cmp::Reverse(s.start_ns));
        Ok(out)
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionSummary>, StoreError> {
        let txn = self.read()?;
        let mut summary = self.summary(&txn, &id_bytes(id)?)?;
        if let Some(s) = summary.as_mut() {
            s.sort();
        }
        Ok(summary)
    }

    /// The exchanges of one session, in time order within each transaction that wrote them (an
    /// exchange that ran long can come after one that started later); `visit` returns false to
    /// stop.
    pub fn exchanges(
        &self,
        id: &str,
        mut visit: impl FnMut(StoredExchange) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.read()?;
        let id = id_bytes(id)?;
        // Exchanges are stored against their session's summary (see `compact`).
        let Some(session) = self.summary(&txn, &id)? else {
            return Ok(());
        };
        for entry in self
            .exchanges
            .prefix_iter(&txn, &id)
            .map_err(lmdb("read"))?
        {
            let (key, bytes) = entry.map_err(lmdb("read"))?;
            let ts_ns = key
                .get(16..24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    what: "exchange key",
                    reason: format!("{} bytes", key.len()),
                })?;
            for exchange in decode::<Block>(bytes, "exchanges")?.expand(ts_ns, &session) {
                if !visit(exchange?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Number of sessions and exchanges stored (the second from the summaries: it reads every
    /// session).
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.read()?;
        let mut exchanges = 0;
        for entry in self.sessions.iter(&txn).map_err(lmdb("read"))? {
            let (_, bytes) = entry.map_err(lmdb("read"))?;
            exchanges += decode::<StoredSession>(bytes, "session")?.summary.requests;
        }
        Ok((self.sessions.len(&txn).map_err(lmdb("read"))?, exchanges))
    }

    /// Deletes sessions that ended before `cutoff_ns`, at most `max_sessions` per call (one
    /// transaction each call, so a writer never waits long). Call again while `more`.
    pub fn prune(&self, cutoff_ns: u64, max_sessions: usize) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let mut txn = self.env.write_txn().map_err(lmdb("write transaction"))?;
        let mut doomed = Vec::new();
        {
            let mut iter = self.by_time.iter(&txn).map_err(lmdb("read"))?;
            // Sessions are at most a day long: past a start a day after the cutoff none can be old.
            let horizon = cutoff_ns.saturating_add(24 * 3600 * 1_000_000_000);
            for entry in iter.by_ref() {
                let (key, ()) = entry.map_err(lmdb("read"))?;
                let start = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
                if start > horizon {
                    break;
                }
                let Ok(id) = <[u8; 16]>::try_from(&key[8..]) else {
                    continue;
                };
                let Some(bytes) = self.sessions.get(&txn, &id).map_err(lmdb("read"))? else {
                    continue;
                };
                let stored: StoredSession = decode(bytes, "session")?;
                if stored.summary.end_ns < cutoff_ns {
                    if doomed.len() == max_sessions {
                        report.more = true;
                        break;
                    }
                    doomed.push((id, stored));
                }
            }
        }
        for (id, stored) in doomed {
            let at = stored.indexed_ns;
            let s = &stored.summary;
            let last = last_exchange_key(&id);
            let range = (Bound::Included(&id[..]), Bound::Included(&last[..]));
            self.exchanges
                .delete_range(&mut txn, &range)
                .map_err(lmdb("delete"))?;
            report.exchanges += s.requests;
            self.by_time
                .delete(&mut txn, &time_key(at, &id))
                .map_err(lmdb("delete"))?;
            for ip in &s.client_ips {
                self.by_ip
                    .delete(&mut txn, &index_key(ip, at, &id))
                    .map_err(lmdb("delete"))?;
            }
            for host in &s.hosts {
                self.by_host
                    .delete(&mut txn, &index_key(&host.to_ascii_lowercase(), at, &id))
                    .map_err(lmdb("delete"))?;
            }
            for (key, _) in &s.endpoints {
                if let Some((_, endpoint)) = key.split_once(' ') {
                    self.by_endpoint
                        .delete(&mut txn, &index_key(endpoint, at, &id))
                        .map_err(lmdb("delete"))?;
                }
            }
            if let Some(user) = &s.user {
                self.by_user
                    .delete(&mut txn, &index_key(user, at, &id))
                    .map_err(lmdb("delete"))?;
            }
            self.sessions
                .delete(&mut txn, &id)
                .map_err(lmdb("delete"))?;
            report.sessions += 1;
        }
        txn.commit().map_err(lmdb("commit"))?;
        Ok(report)
    }
}

/// The greatest exchange key of a session (id, then all-ones time and sequence).
fn last_exchange_key(id: &[u8; 16]) -> [u8; 28] {
    let mut key = [0xff; 28];
    key[..16].copy_from_slice(id);
    key
}

/// A summary as stored, with the start time its index keys were made with.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredSession {
    indexed_ns: u64,
    summary: SessionSummary,
}

#[cfg(test)]
mod tests;

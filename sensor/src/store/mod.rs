//! Stage 5, the store: sessions and exchanges in LMDB (heed), kept for the retention period.
//!
//! Databases (keys are big-endian so byte order is time order):
//! - `sessions`: session id (16 bytes) -> [`SessionSummary`]
//! - `exchanges`: session id + start ns + sequence -> a block of up to [`BLOCK_EXCHANGES`] of
//!   the session's exchanges from one transaction, in time order, each laid out compactly
//!   against the session's summary (see `store::compact`)
//! - `by_time`: session start ns + session id -> () — newest sessions, and pruning
//! - `by_ip`, `by_host`, `by_endpoint`, `by_user`: value + 0 + start ns + session id -> (), a
//!   value too long for an LMDB key cut and completed by its hash (see [`keys`])
//! - `imported`: start ns + exchange id -> () for every exchange an import stored, so that the
//!   same capture imported again adds nothing (only the writer opens it)
//! - `outbox`, `outbox_meta`: the exchange blocks in commit order and the central shipper's
//!   cursor, written only when the outbox is enabled (see [`outbox`])
//! - `inventory`: the endpoint inventory's state, opaque bytes the pipeline encodes (see
//!   [`inventory`]); readers open it when it exists
//!
//! Values are postcard behind a format-version byte. One writer (the daemon or an import)
//! batches many exchanges per transaction; readers (the CLI) run in other processes at the same
//! time. LMDB commits are atomic, so a crash loses at most the batch in flight, never the store;
//! a record that cannot be stored costs only itself ([`Store::write_isolating`]).

mod compact;
mod inventory;
pub mod keys;
pub mod outbox;
mod state;

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
use serde::{Serialize, de::DeserializeOwned};

use crate::record::{
    Assignment, AttackClass, SessionState, SessionSummary, SignalName, StoredExchange,
};
use compact::Block;
use keys::{
    LMDB_MAX_KEY, exchange_key, imported_key, index_key, index_prefix, last_exchange_key, time_key,
};
use state::StateDbs;

/// First byte of every stored value; bump it when a stored type changes incompatibly, and read
/// the older values on (see [`payload`]) or raise [`OLDEST_READABLE_FORMAT`].
///
/// 8: exchange blocks keep their exchanges' endpoints (learned and spec templates).
pub const FORMAT_VERSION: u8 = 8;
/// The oldest format this build reads: a store written by an older build is read on, and new
/// values are written in [`FORMAT_VERSION`] next to the old ones.
pub const OLDEST_READABLE_FORMAT: u8 = 7;
/// Default LMDB map size: address space, not disk (the file grows as data comes).
pub const DEFAULT_MAP_SIZE: usize = 32 << 30;
const STORE_DIR: &str = "store";
/// Exchanges of one session packed into one value at most. A value per exchange would pay a key
/// and LMDB's node overhead (38 bytes) for every ~90 bytes of exchange, in half-filled pages;
/// packed, a busy session's exchanges share them. Small enough that a block (~90 bytes each)
/// stays inside a leaf page rather than spilling to overflow pages.
pub const BLOCK_EXCHANGES: usize = 16;
/// Import markers deleted per pruned session at most, so that one pruning transaction stays
/// short however much was imported.
const IMPORTED_PER_SESSION: usize = 64;

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
    #[error("{what}: a key of {len} bytes is over LMDB's limit of {limit}")]
    KeyTooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
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

impl StoreError {
    /// The error comes from what the records being written contain (a key or value one of them
    /// made, a corrupt summary of their session), not from the store: the batch's other records
    /// can still be written without them. A full map or disk, a failed commit or I/O is the
    /// store's own failure and concerns every record alike.
    pub fn is_record_specific(&self) -> bool {
        matches!(
            self,
            Self::KeyTooLong { .. }
                | Self::Corrupt { .. }
                | Self::BadId(_)
                | Self::Lmdb(
                    _,
                    heed::Error::Mdb(heed::MdbError::BadValSize)
                        | heed::Error::Encoding(_)
                        | heed::Error::Decoding(_)
                )
        )
    }
}

/// Puts `key` in `db`, checking it against LMDB's key limit first (the one place keys are
/// checked; `keys` builds them to fit), so that a key that does not fit is an error naming the
/// database rather than LMDB's bare `MDB_BAD_VALSIZE`.
fn put<'a, DC>(
    db: Database<'static, Bytes, DC>,
    txn: &mut RwTxn<'_>,
    key: &'a [u8],
    value: &'a <DC as heed::BytesEncode<'a>>::EItem,
    what: &'static str,
) -> Result<(), StoreError>
where
    DC: heed::BytesEncode<'a> + 'static,
{
    if key.len() > LMDB_MAX_KEY {
        return Err(StoreError::KeyTooLong {
            what,
            len: key.len(),
            limit: LMDB_MAX_KEY,
        });
    }
    db.put(txn, key, value).map_err(lmdb(what))
}

/// What [`Store::write_isolating`] did with a batch.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub written: usize,
    /// Records skipped because an earlier import stored them.
    pub duplicates: usize,
    /// Records that could not be stored, by their position in the batch, with the reason. The
    /// rest of the batch was stored without them.
    pub rejected: Vec<(usize, StoreError)>,
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
    let (_, rest) = payload(bytes, what)?;
    postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// A stored value's format and the bytes after its format byte, when this build reads that
/// format. Values of [`OLDEST_READABLE_FORMAT`] and later decode as this format's, except
/// exchange blocks (see `compact::Block::decode`).
fn payload<'b>(bytes: &'b [u8], what: &'static str) -> Result<(u8, &'b [u8]), StoreError> {
    match bytes.split_first() {
        Some((&version, rest)) if (OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&version) => {
            Ok((version, rest))
        }
        Some((version, _)) => Err(StoreError::Corrupt {
            what,
            reason: format!(
                "written in store format {version}, this build reads formats \
                 {OLDEST_READABLE_FORMAT} to {FORMAT_VERSION}; move the store directory aside to \
                 start a new one"
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
    /// Sessions whose abuse risk is at least this.
    pub min_risk: Option<u8>,
    /// Sessions that carry this abuse signal.
    pub signal: Option<SignalName>,
    /// Sessions with at least one attack finding (of this class, when given).
    pub attacks: bool,
    pub attack: Option<AttackClass>,
    /// Sessions with at least one slow request.
    pub slow: bool,
    pub limit: usize,
}

impl SessionFilter {
    pub fn matches(&self, s: &SessionSummary) -> bool {
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
            && self.min_risk.is_none_or(|r| s.abuse.risk >= r)
            && self.signal.is_none_or(|name| s.abuse.score(name).is_some())
            && (!self.attacks || s.attack_count() > 0)
            && self
                .attack
                .is_none_or(|class| s.attacks.iter().any(|(c, _)| *c == class))
            && (!self.slow || s.slow > 0)
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
    /// Exchanges stored by an import (see the module doc); `None` in a reader.
    imported: Option<Database<'static, Bytes, Unit>>,
    /// The sessionizer's state (see `state`); `None` in a reader.
    state: Option<StateDbs>,
    /// Disambiguates exchanges of one session that start in the same nanosecond.
    sequence: AtomicU32,
    /// The central shipper's outbox (see `outbox`); `None` in a reader.
    outbox: Option<outbox::OutboxDbs>,
    /// Blocks are appended to the outbox ([`Store::enable_outbox`]).
    outbox_on: bool,
    /// The endpoint inventory's state; `None` in a reader of a store written before it existed.
    inventory: Option<Database<'static, Bytes, Bytes>>,
}

/// The databases readers open (a store written before a writer-only database was added still
/// opens for reading).
const DB_NAMES: [&str; 7] = [
    "sessions",
    "exchanges",
    "by_time",
    "by_ip",
    "by_host",
    "by_endpoint",
    "by_user",
];
/// Created by the writer, opened by readers when it exists (stores written before it was added).
const INVENTORY_DB: &str = "inventory";
/// The databases only the writer uses, created by it when missing.
const WRITER_DB_NAMES: [&str; 5] = [
    "imported",
    "state",
    "state_by_time",
    "outbox",
    "outbox_meta",
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
        options
            .map_size(map_size)
            .max_dbs((DB_NAMES.len() + WRITER_DB_NAMES.len() + 1) as u32);
        if read_only {
            // SAFETY: READ_ONLY only restricts what this handle may do.
            unsafe { options.flags(EnvFlags::READ_ONLY) };
        }
        // SAFETY: the store directory belongs to apisessions; nothing else maps it with other
        // options, and in-process the environment is opened once per store handle.
        let env = unsafe { options.open(dir) }.map_err(open_error)?;
        if env.max_key_size() < LMDB_MAX_KEY {
            return Err(StoreError::KeyTooLong {
                what: "this LMDB build",
                len: LMDB_MAX_KEY,
                limit: env.max_key_size(),
            });
        }
        // The databases of DB_NAMES, then (writer) WRITER_DB_NAMES, then the inventory's.
        let (dbs, inventory): (Vec<Database<'static, Bytes, Bytes>>, _) = if read_only {
            let rtxn = env.read_txn().map_err(open_error)?;
            env.open_databases_and_commit(rtxn, |opener, rtxn| {
                let mut dbs = Vec::new();
                for name in DB_NAMES {
                    match opener.open_database(rtxn, Some(name))? {
                        Some(db) => dbs.push(db),
                        None => return Ok(CommitOrAbort::Abort(())),
                    }
                }
                let inventory = opener.open_database(rtxn, Some(INVENTORY_DB))?;
                Ok::<_, heed::Error>(CommitOrAbort::Commit(
                    <[_; 7]>::try_from(dbs).ok().map(|dbs| (dbs, inventory)),
                ))
            })
            .map_err(open_error)?
            .commit()
            .flatten()
            .map(|(dbs, inventory)| (Vec::from(dbs), inventory))
            .ok_or_else(|| StoreError::Missing(dir.to_path_buf()))?
        } else {
            let wtxn = env.write_txn().map_err(open_error)?;
            env.create_databases_and_commit(wtxn, |opener, wtxn| {
                let mut dbs = Vec::new();
                for name in DB_NAMES.iter().chain(&WRITER_DB_NAMES) {
                    dbs.push(opener.create_database(wtxn, Some(name))?);
                }
                let inventory = opener.create_database(wtxn, Some(INVENTORY_DB))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(
                    <[_; 12]>::try_from(dbs)
                        .ok()
                        .map(|dbs| (dbs, Some(inventory))),
                ))
            })
            .map_err(open_error)?
            .commit()
            .flatten()
            .map(|(dbs, inventory)| (Vec::from(dbs), inventory))
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
            imported: dbs.get(7).copied().map(unit),
            state: dbs
                .get(8)
                .zip(dbs.get(9))
                .map(|(entries, by_time)| StateDbs {
                    entries: *entries,
                    by_time: unit(*by_time),
                }),
            outbox: dbs
                .get(10)
                .zip(dbs.get(11))
                .map(|(log, meta)| outbox::OutboxDbs {
                    log: *log,
                    meta: *meta,
                }),
            outbox_on: false,
            inventory,
            env,
            sequence: AtomicU32::new(0),
        })
    }

    /// Another handle on this store's environment for a thread of the same process that only
    /// reads, and keeps the outbox's cursor (the central shipper): LMDB maps an environment
    /// once per process, so it cannot open the store a second time. It never writes exchanges.
    pub fn share(&self) -> Self {
        Self {
            env: self.env.clone(),
            imported: None,
            state: None,
            outbox_on: false,
            inventory: None,
            sequence: AtomicU32::new(0),
            ..*self
        }
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

    /// Writes a batch of exchanges with their sessions in one transaction, all or nothing;
    /// returns how many of them were skipped as already stored (an exchange with an
    /// `exchange_id` that an earlier import stored).
    ///
    /// Each session the batch touches is read and written once, however many of its exchanges
    /// the batch holds, and its exchanges go in as blocks in key order, so a transaction's
    /// B-tree work is per session rather than per exchange.
    pub fn write(&self, batch: &[(StoredExchange, Assignment)]) -> Result<usize, StoreError> {
        self.write_with_state(batch, &SessionState::default())
    }

    /// [`Store::write`], with the changes to the sessionizer's state that the batch's exchanges
    /// made, in the same transaction: the state on disk always matches the exchanges on disk.
    pub fn write_with_state(
        &self,
        batch: &[(StoredExchange, Assignment)],
        state: &SessionState,
    ) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn().map_err(lmdb("write transaction"))?;
        let mut duplicates = 0;
        // Per session: its summary and the batch's exchanges of it.
        let mut sessions: HashMap<[u8; 16], (StoredSession, Vec<&StoredExchange>)> = HashMap::new();
        for (exchange, assignment) in batch {
            if let (Some(exchange_id), Some(imported)) = (exchange.exchange_id, self.imported) {
                let key = imported_key(exchange.ts_ns, &exchange_id);
                let seen = imported
                    .get(&txn, &key)
                    .map_err(lmdb("reading the imported index"))?;
                if seen.is_some() {
                    duplicates += 1;
                    continue;
                }
                put(imported, &mut txn, &key, &(), "the imported index")?;
            }
            let id = id_bytes(&assignment.session_id)?;
            let (stored, exchanges) = match sessions.entry(id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let stored = match self
                        .sessions
                        .get(&txn, &id)
                        .map_err(lmdb("reading a session summary"))?
                    {
                        Some(bytes) => decode::<StoredSession>(bytes, "session")?,
                        None => {
                            let key = time_key(exchange.ts_ns, &id);
                            put(self.by_time, &mut txn, &key, &(), "the by_time index")?;
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
                blocks.push((*id, first_ns, encode(&block)?, chunk.len()));
            }
        }
        // Key order: B-tree work stays near the pages already touched, and sequence numbers
        // follow the batch, so writing the same batch again (a repeated import) rewrites the
        // same keys.
        blocks.sort_by_key(|(id, first_ns, _, _)| (*id, *first_ns));
        let outbox = self.outbox.filter(|_| self.outbox_on);
        let mut appender = outbox.map(|o| o.appender(&txn)).transpose()?;
        for (id, first_ns, value, count) in &blocks {
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
            let key = exchange_key(id, *first_ns, sequence);
            put(self.exchanges, &mut txn, &key, value, "an exchange block")?;
            if let (Some(outbox), Some(appender)) = (outbox, appender.as_mut()) {
                outbox.append(&mut txn, appender, &key, *count)?;
            }
        }
        if let (Some(outbox), Some(appender)) = (outbox, appender) {
            outbox.finish(&mut txn, appender)?;
        }
        for (id, (stored, _)) in &sessions {
            put(
                self.sessions,
                &mut txn,
                id,
                &encode(stored)?,
                "a session summary",
            )?;
        }
        if let Some(dbs) = self.state {
            dbs.write(&mut txn, state)?;
        }
        txn.commit().map_err(lmdb("commit"))?;
        Ok(duplicates)
    }

    /// Writes a batch so that no record costs the others: if the transaction fails because of
    /// what some records contain ([`StoreError::is_record_specific`]), the batch is halved and
    /// each half written on its own, down to single records, which are then reported as
    /// rejected. A batch with one bad record among n costs about 2·log2(n) extra transactions,
    /// over ever smaller halves. A failure of the store itself (full map or disk, I/O) is
    /// returned as it is: then nothing of the batch was written.
    ///
    /// `state` goes in the batch's transaction; when the batch had to be halved, in a
    /// transaction of its own after the halves.
    pub fn write_isolating(
        &self,
        batch: &[(StoredExchange, Assignment)],
        state: &SessionState,
    ) -> Result<WriteReport, StoreError> {
        let mut report = WriteReport::default();
        if !self.write_part(batch, 0, state, &mut report)? {
            self.write_with_state(&[], state)?;
        }
        Ok(report)
    }

    /// Writes `part` with `state` in one transaction, or else in halves without it, down to the
    /// single records at fault; true if it went in whole (with the state).
    fn write_part(
        &self,
        part: &[(StoredExchange, Assignment)],
        offset: usize,
        state: &SessionState,
        report: &mut WriteReport,
    ) -> Result<bool, StoreError> {
        match self.write_with_state(part, state) {
            Ok(duplicates) => {
                report.written += part.len() - duplicates;
                report.duplicates += duplicates;
                Ok(true)
            }
            Err(e) if !e.is_record_specific() => Err(e),
            Err(e) if part.len() <= 1 => {
                if !part.is_empty() {
                    report.rejected.push((offset, e));
                }
                Ok(false)
            }
            Err(_) => {
                let (none, half) = (SessionState::default(), part.len() / 2);
                self.write_part(&part[..half], offset, &none, report)?;
                self.write_part(&part[half..], offset + half, &none, report)?;
                Ok(false)
            }
        }
    }

    /// Adds what a session newly gained to the secondary indexes.
    fn index(
        &self,
        txn: &mut RwTxn<'_>,
        id: &[u8; 16],
        at: u64,
        new: &crate::record::NewValues,
    ) -> Result<(), StoreError> {
        for ip in &new.ips {
            put(
                self.by_ip,
                txn,
                &index_key(ip, at, id),
                &(),
                "the by_ip index",
            )?;
        }
        for host in &new.hosts {
            let key = index_key(&host.to_ascii_lowercase(), at, id);
            put(self.by_host, txn, &key, &(), "the by_host index")?;
        }
        for endpoint in &new.endpoints {
            let key = index_key(endpoint, at, id);
            put(self.by_endpoint, txn, &key, &(), "the by_endpoint index")?;
        }
        if let Some(user) = &new.user {
            let key = index_key(user, at, id);
            put(self.by_user, txn, &key, &(), "the by_user index")?;
        }
        Ok(())
    }

    /// Sessions matching `filter`, newest first, at most `filter.limit` (0: all).
    pub fn list(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        self.list_where(filter, None, |_| true)
    }

    /// Sessions matching `filter` and `keep`, newest first, at most `filter.limit`. With
    /// `endpoint_prefix` and no user or IP in `filter`, sessions are looked up through the
    /// indexed endpoints that start with it: the literal part of a template before its first
    /// placeholder, for an endpoint that `keep` recognises however it was written (a learned
    /// template reads the same as the literal paths written before the learner knew it).
    pub fn list_where(
        &self,
        filter: &SessionFilter,
        endpoint_prefix: Option<&str>,
        keep: impl Fn(&SessionSummary) -> bool,
    ) -> Result<Vec<SessionSummary>, StoreError> {
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
        .find_map(|(value, db)| value.as_ref().map(|v| (index_prefix(v), db)));
        let by_prefix = filter.user.is_none() && filter.ip.is_none();
        let (index, scan_limit) = match endpoint_prefix {
            // Prefix order is not time order: every match is read, the newest kept below.
            Some(prefix) if by_prefix => (
                Some((prefix.as_bytes().to_vec(), self.by_endpoint)),
                usize::MAX,
            ),
            _ => (index, limit),
        };
        // Through a prefix a session can come up under several endpoints.
        let mut seen = std::collections::HashSet::new();
        // One unreadable summary must not hide every other session: it is skipped and
        // reported once, unless nothing was readable (a store of another format, say).
        let (mut unreadable, mut readable) = (Vec::new(), 0usize);
        let mut visit = |id: &[u8]| -> Result<bool, StoreError> {
            let Ok(id) = <[u8; 16]>::try_from(id) else {
                return Ok(true);
            };
            if !seen.insert(id) {
                return Ok(true);
            }
            match self.summary(&txn, &id) {
                Ok(Some(mut summary)) => {
                    readable += 1;
                    if filter.matches(&summary) && keep(&summary) {
                        summary.sort();
                        out.push(summary);
                    }
                }
                Ok(None) => {}
                Err(e @ StoreError::Corrupt { .. }) => unreadable.push((id, e)),
                Err(e) => return Err(e),
            }
            Ok(out.len() < scan_limit)
        };
        match index {
            Some((prefix, db)) => {
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
        if let Some((id, first)) = unreadable.first() {
            if readable == 0 {
                return Err(unreadable.swap_remove(0).1);
            }
            log::warn!(
                "skipped {} unreadable session summaries (the first, {}: {first})",
                unreadable.len(),
                crate::record::hex(id)
            );
        }
        // Index order is by first-indexed start; present newest activity first.
        out.sort_by_key(|s| std::cmp::Reverse(s.start_ns));
        out.truncate(limit);
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
            for exchange in Block::decode(bytes)?.expand(ts_ns, &session) {
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
        if let Some(dbs) = self.state {
            let step = max_sessions.saturating_mul(IMPORTED_PER_SESSION);
            report.more |= dbs.prune(&mut txn, cutoff_ns, step)?;
        }
        // Outbox entries of blocks pruned before they were shipped (see `outbox`).
        if let Some(outbox) = self.outbox {
            let before = cutoff_ns.saturating_sub(24 * 3600 * 1_000_000_000);
            let step = max_sessions.saturating_mul(IMPORTED_PER_SESSION);
            report.more |= outbox.prune(&mut txn, before, step)?;
        }
        // Import markers of exchanges whose sessions are gone: a session lasts at most a day,
        // so every exchange that started a day before the cutoff belonged to one that ended
        // before it.
        if let Some(imported) = self.imported {
            let horizon = cutoff_ns.saturating_sub(24 * 3600 * 1_000_000_000);
            let upper = horizon.to_be_bytes();
            let range = (Bound::Unbounded, Bound::Excluded(&upper[..]));
            let mut old = Vec::new();
            for entry in imported.range(&txn, &range).map_err(lmdb("read"))? {
                if old.len() == max_sessions.saturating_mul(IMPORTED_PER_SESSION) {
                    report.more = true;
                    break;
                }
                old.push(entry.map_err(lmdb("read"))?.0.to_vec());
            }
            for key in old {
                imported.delete(&mut txn, &key).map_err(lmdb("delete"))?;
            }
        }
        txn.commit().map_err(lmdb("commit"))?;
        Ok(report)
    }
}

/// A summary as stored, with the start time its index keys were made with.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredSession {
    indexed_ns: u64,
    summary: SessionSummary,
}

#[cfg(test)]
mod tests;

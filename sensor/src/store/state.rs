//! The sessionizer's state in the store (see `record::state`): written in the transaction of
//! the exchanges that changed it, loaded newest first at start, pruned with the retention.
//!
//! Databases (writer-only):
//! - `state`: kind (`a` actor, `l` link) + hash (32 bytes) -> time (8 bytes, big-endian) + the
//!   entry (postcard behind the format byte)
//! - `state_by_time`: kind + time + hash -> (): the newest entries for loading, the oldest for
//!   pruning

use heed::{
    Database, RwTxn,
    types::{Bytes, Unit},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{Store, StoreError, decode, encode, lmdb, put};
use crate::record::{
    LoadedState,
    state::{Active, Link, SessionState},
};

const ACTOR: u8 = b'a';
/// An entry's hash and its encoded value, before decoding.
type RawEntry = ([u8; 32], Vec<u8>);
const LINK: u8 = b'l';

/// The state tables, opened by writers only.
#[derive(Clone, Copy)]
pub(super) struct StateDbs {
    pub(super) entries: Database<'static, Bytes, Bytes>,
    pub(super) by_time: Database<'static, Bytes, Unit>,
}

fn entry_key(kind: u8, hash: &[u8; 32]) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = kind;
    key[1..].copy_from_slice(hash);
    key
}

fn time_key(kind: u8, at_ns: u64, hash: &[u8; 32]) -> [u8; 41] {
    let mut key = [0u8; 41];
    key[0] = kind;
    key[1..9].copy_from_slice(&at_ns.to_be_bytes());
    key[9..].copy_from_slice(hash);
    key
}

impl StateDbs {
    /// Sets (or with `None` removes) one entry, moving its time index entry along.
    fn set<T: Serialize>(
        &self,
        txn: &mut RwTxn<'_>,
        kind: u8,
        hash: &[u8; 32],
        entry: Option<(u64, &T)>,
    ) -> Result<(), StoreError> {
        let key = entry_key(kind, hash);
        let old_at = self
            .entries
            .get(txn, &key)
            .map_err(lmdb("reading the session state"))?
            .and_then(|v| v.get(..8))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        if let Some(old_at) = old_at {
            self.by_time
                .delete(txn, &time_key(kind, old_at, hash))
                .map_err(lmdb("writing the session state"))?;
        }
        match entry {
            Some((at_ns, value)) => {
                let mut bytes = at_ns.to_be_bytes().to_vec();
                bytes.extend_from_slice(&encode(value)?);
                put(self.entries, txn, &key, &bytes, "the session state")?;
                let index = time_key(kind, at_ns, hash);
                put(
                    self.by_time,
                    txn,
                    &index,
                    &(),
                    "the session state's time index",
                )?;
            }
            None => {
                self.entries
                    .delete(txn, &key)
                    .map_err(lmdb("writing the session state"))?;
            }
        }
        Ok(())
    }

    pub(super) fn write(
        &self,
        txn: &mut RwTxn<'_>,
        state: &SessionState,
    ) -> Result<(), StoreError> {
        for (actor, entry) in &state.actors {
            self.set(txn, ACTOR, actor, entry.as_ref().map(|a| (a.last_ns, a)))?;
        }
        for (link, entry) in &state.links {
            self.set(txn, LINK, link, entry.as_ref().map(|l| (l.at_ns, l)))?;
        }
        Ok(())
    }

    /// Deletes entries older than `cutoff_ns`, at most `max` of them; true if more remain.
    pub(super) fn prune(
        &self,
        txn: &mut RwTxn<'_>,
        cutoff_ns: u64,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut old = Vec::new();
        let mut more = false;
        for kind in [ACTOR, LINK] {
            let upper = time_key(kind, cutoff_ns, &[0; 32]);
            let lower = [kind];
            let range = (
                std::ops::Bound::Included(&lower[..]),
                std::ops::Bound::Excluded(&upper[..]),
            );
            for entry in self.by_time.range(txn, &range).map_err(lmdb("read"))? {
                if old.len() == max {
                    more = true;
                    break;
                }
                old.push(entry.map_err(lmdb("read"))?.0.to_vec());
            }
        }
        for index in old {
            if let Some(hash) = index.get(9..).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                self.entries
                    .delete(txn, &entry_key(index[0], &hash))
                    .map_err(lmdb("delete"))?;
            }
            self.by_time.delete(txn, &index).map_err(lmdb("delete"))?;
        }
        Ok(more)
    }
}

/// The entries that decode; one that cannot be read costs only itself (the session it held
/// starts anew), counted in `unreadable`.
fn readable<T: DeserializeOwned>(
    raw: Vec<RawEntry>,
    unreadable: &mut u64,
) -> Vec<([u8; 32], Option<T>)> {
    raw.into_iter()
        .filter_map(|(hash, bytes)| match decode(&bytes, "session state") {
            Ok(entry) => Some((hash, Some(entry))),
            Err(_) => {
                *unreadable += 1;
                None
            }
        })
        .collect()
}

impl Store {
    /// The sessionizer's state as last written: the newest `max_actors` actors and `max_links`
    /// links last active at or after `since_ns` (newest first), and how many recent ones the
    /// bounds left out. Empty for a store opened for reading.
    pub fn load_state(
        &self,
        max_actors: usize,
        max_links: usize,
        since_ns: u64,
    ) -> Result<LoadedState, StoreError> {
        let mut loaded = LoadedState::default();
        let Some(dbs) = self.state else {
            return Ok(loaded);
        };
        let txn = self.read()?;
        let load = |kind: u8, max: usize| -> Result<(Vec<RawEntry>, u64), StoreError> {
            let (mut found, mut cut) = (Vec::new(), 0);
            for entry in dbs
                .by_time
                .rev_prefix_iter(&txn, &[kind])
                .map_err(lmdb("read"))?
            {
                let (index, ()) = entry.map_err(lmdb("read"))?;
                let (Some(at), Some(hash)) = (
                    index.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                    index.get(9..).and_then(|h| <[u8; 32]>::try_from(h).ok()),
                ) else {
                    continue;
                };
                if u64::from_be_bytes(at) < since_ns {
                    break;
                }
                if found.len() == max {
                    cut += 1;
                    continue;
                }
                let value = dbs
                    .entries
                    .get(&txn, &entry_key(kind, &hash))
                    .map_err(lmdb("reading the session state"))?
                    .and_then(|v| v.get(8..))
                    .unwrap_or_default();
                found.push((hash, value.to_vec()));
            }
            Ok((found, cut))
        };
        let (actors, actors_cut) = load(ACTOR, max_actors)?;
        let (links, links_cut) = load(LINK, max_links)?;
        loaded.state.actors = readable::<Active>(actors, &mut loaded.unreadable);
        loaded.state.links = readable::<Link>(links, &mut loaded.unreadable);
        loaded.actors_cut = actors_cut;
        loaded.links_cut = links_cut;
        Ok(loaded)
    }
}

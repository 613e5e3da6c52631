//! The outbox: what the writer stored, in commit order, for the central shipper (see
//! [`crate::ship`]), and the shipper's durable cursor.
//!
//! The `exchanges` database is keyed by session, so "everything written since the shipper's
//! last insert" cannot be read from it. When the outbox is enabled ([`Store::enable_outbox`]),
//! every exchange block the writer puts is also appended to `outbox`: a sequence number
//! (8 bytes, big-endian, so byte order is commit order) -> the block's key, its number of
//! exchanges and when it was committed. The shipper reads entries after its cursor, inserts
//! their exchanges (and their sessions' latest summaries) into the central store, and only once
//! the server acknowledged both inserts advances the cursor and deletes the shipped entries, in
//! one transaction ([`Store::outbox_advance`]). A crash anywhere in between ships the same
//! entries again, with the same exchange ids, which the central tables count once.
//!
//! `outbox_meta` holds the cursor and three totals (exchanges appended, exchanges done with:
//! shipped or lost, and of those lost: pruned before they were shipped), from which the pending
//! count is read without scanning.
//!
//! Bounded by the retention: the pruning sweep deletes entries committed more than a day before
//! its cutoff (their sessions, at most a day long, are pruned) and counts their exchanges as
//! lost, so an outage longer than the retention, or a shipper that no longer runs, cannot grow
//! the outbox beyond the store it describes.

use std::ops::Bound;

use heed::{Database, RwTxn, types::Bytes};

use super::{Store, StoreError, StoredExchange, compact::Block, keys::EXCHANGE_KEY, lmdb, put};
use crate::exchange::now_ns;
use crate::store::SessionSummary;

const CURSOR: &[u8] = b"cursor";
const APPENDED: &[u8] = b"appended_exchanges";
const SHIPPED: &[u8] = b"shipped_exchanges";
/// Exchanges whose blocks pruning removed before they were shipped (included in SHIPPED).
const LOST: &[u8] = b"lost_exchanges";
/// An entry's value: the block key, its exchange count (u32), its commit time (ns, u64).
const ENTRY_VALUE: usize = EXCHANGE_KEY + 4 + 8;

#[derive(Clone, Copy)]
pub(super) struct OutboxDbs {
    pub(super) log: Database<'static, Bytes, Bytes>,
    pub(super) meta: Database<'static, Bytes, Bytes>,
}

/// Appends the blocks of one write transaction (called by the writer, inside it).
pub(super) struct Appender {
    next: u64,
    exchanges: u64,
    now_ns: u64,
}

impl OutboxDbs {
    pub(super) fn appender(&self, txn: &RwTxn<'_>) -> Result<Appender, StoreError> {
        let last = self.log.last(txn).map_err(lmdb("reading the outbox"))?;
        let next = match last {
            Some((key, _)) => sequence(key)? + 1,
            // Empty (everything shipped): continue after the cursor, never reuse a number.
            None => get_u64(self.meta, txn, CURSOR)? + 1,
        };
        Ok(Appender {
            next,
            exchanges: 0,
            now_ns: now_ns(),
        })
    }

    pub(super) fn append(
        &self,
        txn: &mut RwTxn<'_>,
        appender: &mut Appender,
        block_key: &[u8],
        exchanges: usize,
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(ENTRY_VALUE);
        value.extend_from_slice(block_key);
        value.extend_from_slice(&(exchanges as u32).to_be_bytes());
        value.extend_from_slice(&appender.now_ns.to_be_bytes());
        let key = appender.next.to_be_bytes();
        put(self.log, txn, &key, &value, "the outbox")?;
        appender.next += 1;
        appender.exchanges += exchanges as u64;
        Ok(())
    }

    /// Deletes at most `max` entries committed before `before_ns` (oldest first), counting
    /// their exchanges as lost; true if more remain.
    pub(super) fn prune(
        &self,
        txn: &mut RwTxn<'_>,
        before_ns: u64,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut doomed = Vec::new();
        let mut lost = 0u64;
        let mut more = false;
        for entry in self.log.iter(txn).map_err(lmdb("reading the outbox"))? {
            let (key, value) = entry.map_err(lmdb("reading the outbox"))?;
            // Commit times only grow along the log.
            if committed_ns(value)? >= before_ns {
                break;
            }
            if doomed.len() == max {
                more = true;
                break;
            }
            lost += u64::from(announced(value));
            doomed.push(sequence(key)?);
        }
        let Some(&last) = doomed.last() else {
            return Ok(false);
        };
        for sequence in doomed {
            self.log
                .delete(txn, &sequence.to_be_bytes())
                .map_err(lmdb("deleting from the outbox"))?;
        }
        // The cursor passes them: the shipper starts after what no longer exists.
        let cursor = get_u64(self.meta, txn, CURSOR)?.max(last);
        put(self.meta, txn, CURSOR, &cursor.to_be_bytes(), "the outbox")?;
        self.add(txn, SHIPPED, lost)?;
        self.add(txn, LOST, lost)?;
        Ok(more)
    }

    fn add(&self, txn: &mut RwTxn<'_>, key: &[u8], amount: u64) -> Result<(), StoreError> {
        if amount > 0 {
            let total = get_u64(self.meta, txn, key)?.saturating_add(amount);
            put(self.meta, txn, key, &total.to_be_bytes(), "the outbox")?;
        }
        Ok(())
    }

    pub(super) fn finish(&self, txn: &mut RwTxn<'_>, appender: Appender) -> Result<(), StoreError> {
        self.add(txn, APPENDED, appender.exchanges)
    }
}

fn sequence(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "outbox key",
            reason: format!("{} bytes", key.len()),
        })
}

fn get_u64(
    db: Database<'static, Bytes, Bytes>,
    txn: &heed::RoTxn<'_>,
    key: &[u8],
) -> Result<u64, StoreError> {
    match db.get(txn, key).map_err(lmdb("reading the outbox"))? {
        None => Ok(0),
        Some(bytes) => sequence(bytes),
    }
}

/// One block the writer stored, as the shipper reads it.
#[derive(Debug)]
pub struct OutboxEntry {
    pub sequence: u64,
    /// The block's key in `exchanges`: with an exchange's position in the block, what names
    /// that exchange for as long as the store keeps it (see `ship::rows::exchange_id`).
    pub block_key: Vec<u8>,
    /// The exchanges the entry announced (also when the block is gone).
    pub announced: u32,
    /// When the writer committed it (ns since the epoch).
    pub committed_ns: u64,
    /// The block's exchanges; empty if pruning removed the block before it was shipped.
    pub exchanges: Vec<StoredExchange>,
    /// The session's latest summary (None if pruned).
    pub session: Option<SessionSummary>,
}

/// Where the outbox stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Every entry up to this sequence number was shipped.
    pub cursor: u64,
    /// Exchanges appended and not yet shipped.
    pub pending_exchanges: u64,
    /// When the oldest unshipped entry was committed (None: nothing pending).
    pub oldest_pending_ns: Option<u64>,
    /// Exchanges pruned from the store before they were shipped, over the store's life.
    pub lost_exchanges: u64,
}

impl Store {
    /// From now on the writer records what it stores in the outbox, for the central shipper.
    /// Exchanges written before (or while it is off) are not shipped. Only a writer's store has
    /// the outbox; a reader's call is a no-op.
    pub fn enable_outbox(&mut self) {
        self.outbox_on = self.outbox.is_some();
    }

    fn outbox_dbs(&self) -> Result<OutboxDbs, StoreError> {
        self.outbox.ok_or(StoreError::Corrupt {
            what: "outbox",
            reason: "this store handle was opened for reading".into(),
        })
    }

    pub fn outbox_status(&self) -> Result<OutboxStatus, StoreError> {
        let dbs = self.outbox_dbs()?;
        let txn = self.read()?;
        let appended = get_u64(dbs.meta, &txn, APPENDED)?;
        let shipped = get_u64(dbs.meta, &txn, SHIPPED)?;
        let oldest = match dbs.log.first(&txn).map_err(lmdb("reading the outbox"))? {
            Some((_, value)) => Some(committed_ns(value)?),
            None => None,
        };
        Ok(OutboxStatus {
            cursor: get_u64(dbs.meta, &txn, CURSOR)?,
            pending_exchanges: appended.saturating_sub(shipped),
            oldest_pending_ns: oldest,
            lost_exchanges: get_u64(dbs.meta, &txn, LOST)?,
        })
    }

    /// Entries after the cursor in commit order, until they hold `max_exchanges` exchanges
    /// (at least one entry if any is pending), read in one read transaction.
    pub fn outbox_read(&self, max_exchanges: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_read_after(None, max_exchanges)
    }

    /// [`Store::outbox_read`] of the entries after sequence number `after` (None: after the
    /// cursor): the shipper reads the next batch while the server inserts the one before.
    pub fn outbox_read_after(
        &self,
        after: Option<u64>,
        max_exchanges: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let dbs = self.outbox_dbs()?;
        let txn = self.read()?;
        let mut out = Vec::new();
        let mut exchanges = 0usize;
        let lower = after.map(u64::to_be_bytes);
        let range = (
            lower
                .as_ref()
                .map_or(Bound::Unbounded, |l| Bound::Excluded(&l[..])),
            Bound::Unbounded,
        );
        for entry in dbs
            .log
            .range(&txn, &range)
            .map_err(lmdb("reading the outbox"))?
        {
            if exchanges >= max_exchanges {
                break;
            }
            let (key, value) = entry.map_err(lmdb("reading the outbox"))?;
            let corrupt = || StoreError::Corrupt {
                what: "outbox entry",
                reason: format!("{} bytes", value.len()),
            };
            if value.len() != ENTRY_VALUE {
                return Err(corrupt());
            }
            // Sizes checked above: the block key, then the session id and the block's start.
            let block_key = &value[..EXCHANGE_KEY];
            let id: [u8; 16] = block_key[..16].try_into().map_err(|_| corrupt())?;
            let first_ns = block_key[16..24]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt())?;
            let session = self.summary(&txn, &id)?;
            let mut block = Vec::new();
            if let (Some(summary), Some(bytes)) = (
                &session,
                self.exchanges
                    .get(&txn, block_key)
                    .map_err(lmdb("reading an exchange block"))?,
            ) {
                for exchange in Block::decode(bytes)?.expand(first_ns, summary) {
                    block.push(exchange?);
                }
            }
            exchanges += block.len().max(1);
            out.push(OutboxEntry {
                sequence: sequence(key)?,
                block_key: block_key.to_vec(),
                announced: announced(value),
                committed_ns: committed_ns(value)?,
                exchanges: block,
                session,
            });
        }
        Ok(out)
    }

    /// Marks every entry up to `sequence` as done: moves the cursor, deletes those entries and
    /// adds their announced exchanges to the done total, `lost` of them (blocks the shipper
    /// found pruned) to the lost total, in one transaction. Call only after the central store
    /// acknowledged the rest.
    pub fn outbox_advance(&self, sequence: u64, lost: u64) -> Result<(), StoreError> {
        let dbs = self.outbox_dbs()?;
        let mut txn = self.env.write_txn().map_err(lmdb("write transaction"))?;
        let mut shipped = 0u64;
        let upper = sequence.to_be_bytes();
        let range = (Bound::Unbounded, Bound::Included(&upper[..]));
        for entry in dbs
            .log
            .range(&txn, &range)
            .map_err(lmdb("reading the outbox"))?
        {
            let (_, value) = entry.map_err(lmdb("reading the outbox"))?;
            shipped += u64::from(announced(value));
        }
        dbs.log
            .delete_range(&mut txn, &range)
            .map_err(lmdb("deleting from the outbox"))?;
        let cursor = get_u64(dbs.meta, &txn, CURSOR)?.max(sequence);
        put(
            dbs.meta,
            &mut txn,
            CURSOR,
            &cursor.to_be_bytes(),
            "the outbox",
        )?;
        dbs.add(&mut txn, SHIPPED, shipped)?;
        dbs.add(&mut txn, LOST, lost)?;
        txn.commit().map_err(lmdb("commit"))
    }
}

/// The exchange count of an entry's value (0 if the value is short: it is counted, not trusted).
fn announced(value: &[u8]) -> u32 {
    value
        .get(EXCHANGE_KEY..EXCHANGE_KEY + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

fn committed_ns(value: &[u8]) -> Result<u64, StoreError> {
    value
        .get(EXCHANGE_KEY + 4..ENTRY_VALUE)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what: "outbox entry",
            reason: format!("{} bytes", value.len()),
        })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        exchange::{Exchange, MessageMeta, Request},
        record::{Assignment, KeyKind, Redaction, Secret},
    };

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("apis-outbox-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `count` exchanges of session `session`, one second apart from `from_s`.
    fn exchanges(session: u8, from_s: u64, count: u64) -> Vec<(StoredExchange, Assignment)> {
        (from_s..from_s + count)
            .map(|s| {
                let exchange = Exchange {
                    client: "192.0.2.1:5000".parse().unwrap(),
                    server: "10.0.0.1:80".parse().unwrap(),
                    forwarding: Default::default(),
                    tls: false,
                    upstream: None,
                    stream_id: None,
                    request: Some(Request {
                        method: "GET".into(),
                        uri: format!("/items/{s}"),
                        meta: MessageMeta {
                            start_ns: s * 1_000_000_000,
                            ..MessageMeta::default()
                        },
                    }),
                    response: None,
                };
                let record = StoredExchange::new(
                    &exchange,
                    &Secret::from_bytes([1; 32]),
                    &Redaction::default(),
                );
                let assignment = Assignment {
                    session_id: format!("{session:02x}").repeat(16),
                    key_kind: KeyKind::Cookie,
                    key_name: "cookie sid".into(),
                    user: None,
                    role: None,
                    new_session: false,
                    signals: None,
                };
                (record, assignment)
            })
            .collect()
    }

    #[test]
    fn nothing_is_recorded_unless_enabled() {
        let dir = TempDir::new("off");
        let store = Store::open(&dir.0, 1 << 30).unwrap();
        store.write(&exchanges(1, 100, 5)).unwrap();
        assert!(store.outbox_read(100).unwrap().is_empty());
        assert_eq!(store.outbox_status().unwrap(), OutboxStatus::default());
        drop(store);
        let reader = Store::open_read_only(&dir.0).unwrap();
        assert!(reader.outbox_read(100).is_err(), "a reader has no outbox");
    }

    #[test]
    fn entries_come_in_commit_order_and_leave_only_when_advanced() {
        let dir = TempDir::new("order");
        let mut store = Store::open(&dir.0, 1 << 30).unwrap();
        store.enable_outbox();
        // 20 exchanges of one session: two blocks (16 + 4); then 3 of another session.
        store.write(&exchanges(1, 100, 20)).unwrap();
        store.write(&exchanges(2, 200, 3)).unwrap();
        let shipper = store.share();
        let status = shipper.outbox_status().unwrap();
        assert_eq!((status.cursor, status.pending_exchanges), (0, 23));
        let all = shipper.outbox_read(1000).unwrap();
        let sizes: Vec<usize> = all.iter().map(|e| e.exchanges.len()).collect();
        assert_eq!(sizes, [16, 4, 3]);
        assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert_eq!(
            all[0].session.as_ref().unwrap().requests,
            20,
            "the latest summary"
        );
        assert_eq!(all[2].exchanges[0].uri.as_deref(), Some("/items/200"));
        // A bound of 16 exchanges stops after the first block.
        let first = shipper.outbox_read(16).unwrap();
        assert_eq!(first.len(), 1);
        // The next batch, read while the first is in flight: the entries after it.
        let next = shipper
            .outbox_read_after(Some(first[0].sequence), 1000)
            .unwrap();
        assert_eq!(
            next.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [all[1].sequence, all[2].sequence]
        );
        // Reading does not consume; advancing does.
        assert_eq!(shipper.outbox_read(1000).unwrap().len(), 3);
        shipper.outbox_advance(first[0].sequence, 0).unwrap();
        let status = shipper.outbox_status().unwrap();
        assert_eq!(
            (status.cursor, status.pending_exchanges),
            (first[0].sequence, 7)
        );
        let rest = shipper.outbox_read(1000).unwrap();
        assert_eq!(
            rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [all[1].sequence, all[2].sequence]
        );
        shipper.outbox_advance(all[2].sequence, 0).unwrap();
        assert!(shipper.outbox_read(1000).unwrap().is_empty());
        assert_eq!(shipper.outbox_status().unwrap().pending_exchanges, 0);

        // Reopened (a restart) with the outbox empty: numbering goes on after the cursor.
        drop((store, shipper));
        let mut store = Store::open(&dir.0, 1 << 30).unwrap();
        store.enable_outbox();
        store.write(&exchanges(3, 300, 1)).unwrap();
        let again = store.outbox_read(1000).unwrap();
        assert_eq!(again.len(), 1);
        assert!(
            again[0].sequence > all[2].sequence,
            "a sequence number is never reused"
        );
    }

    #[test]
    fn a_block_pruned_before_shipping_is_announced_but_empty() {
        let dir = TempDir::new("pruned");
        let mut store = Store::open(&dir.0, 1 << 30).unwrap();
        store.enable_outbox();
        store.write(&exchanges(1, 100, 4)).unwrap();
        store.write(&exchanges(2, 10_000, 2)).unwrap();
        let pruned = store.prune(5_000 * 1_000_000_000, 100).unwrap();
        assert_eq!(pruned.sessions, 1);
        let entries = store.outbox_read(1000).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].announced, entries[0].exchanges.len()), (4, 0));
        assert!(entries[0].session.is_none());
        assert_eq!(entries[1].exchanges.len(), 2);
        store.outbox_advance(entries[1].sequence, 4).unwrap();
        let status = store.outbox_status().unwrap();
        assert_eq!((status.pending_exchanges, status.lost_exchanges), (0, 4));
    }

    #[test]
    fn pruning_bounds_the_outbox_when_nothing_ships() {
        let dir = TempDir::new("bounded");
        let mut store = Store::open(&dir.0, 1 << 30).unwrap();
        store.enable_outbox();
        for session in 1..=3 {
            store
                .write(&exchanges(session, u64::from(session) * 100, 2))
                .unwrap();
        }
        assert_eq!(store.outbox_read(1000).unwrap().len(), 3);
        // Entries carry their commit time (now): a cutoff two days ahead expires them all.
        let cursor = store.outbox_status().unwrap().cursor;
        let future = now_ns() + 2 * 86_400 * 1_000_000_000;
        while store.prune(future, 1).unwrap().more {}
        assert!(store.outbox_read(1000).unwrap().is_empty());
        let status = store.outbox_status().unwrap();
        assert_eq!((status.pending_exchanges, status.lost_exchanges), (0, 6));
        assert!(status.cursor > cursor, "the cursor passes what was pruned");
        // Numbering goes on after what pruning removed.
        store.write(&exchanges(9, 900, 1)).unwrap();
        assert_eq!(store.outbox_status().unwrap().pending_exchanges, 1);
    }
}

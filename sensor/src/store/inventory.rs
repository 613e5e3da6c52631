//! The endpoint inventory's state in the store: one value under one key, the bytes the
//! pipeline encodes (`analysis::inventory::InventoryState`, which the store does not know),
//! behind the format byte. The writer replaces it now and then; `apisessions endpoints` reads
//! it from another process, and the next run merges it into its inventory.

use super::{FORMAT_VERSION, Store, StoreError, lmdb, payload, put};

const KEY: &[u8] = b"state";

impl Store {
    /// Replaces the stored inventory state, in a transaction of its own.
    pub fn write_inventory(&self, state: &[u8]) -> Result<(), StoreError> {
        let Some(db) = self.inventory else {
            return Ok(());
        };
        let mut value = Vec::with_capacity(state.len() + 1);
        value.push(FORMAT_VERSION);
        value.extend_from_slice(state);
        let mut txn = self.env.write_txn().map_err(lmdb("write transaction"))?;
        put(db, &mut txn, KEY, &value[..], "the inventory")?;
        txn.commit().map_err(lmdb("commit"))
    }

    /// The stored inventory state's bytes, if any was written.
    pub fn inventory(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(db) = self.inventory else {
            return Ok(None);
        };
        let txn = self.read()?;
        let Some(value) = db.get(&txn, KEY).map_err(lmdb("reading the inventory"))? else {
            return Ok(None);
        };
        payload(value, "inventory").map(|(_, state)| Some(state.to_vec()))
    }
}

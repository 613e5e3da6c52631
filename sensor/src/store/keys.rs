//! Every LMDB key the store writes, built in one place so that none can exceed LMDB's limit.
//!
//! LMDB refuses keys longer than [`LMDB_MAX_KEY`] bytes (`MDB_BAD_VALSIZE`). Session, exchange and
//! time keys have fixed sizes; the secondary indexes put a captured value (an IP, a Host header, an
//! endpoint, a user name) at the front of the key, and any of those can be as long as a request
//! head. A value longer than [`MAX_INDEX_VALUE`] is therefore cut and completed by a hash of the
//! whole value: the same long value always yields the same key, so lookups of the full value still
//! find it, and two long values that share a prefix stay apart. An index hit is always checked
//! against the session's summary, so the (astronomically unlikely) collision of a cut value with
//! another costs a wasted read, never a wrong answer.

use std::borrow::Cow;

/// LMDB's key limit in its default build (`mdb_env_get_maxkeysize`); checked against the
/// environment when the store opens.
pub const LMDB_MAX_KEY: usize = 511;
/// What follows the value in an index key: a 0 byte, the session's start (8 bytes), its id (16).
const INDEX_SUFFIX: usize = 1 + 8 + 16;
/// The longest value an index key holds as it is.
pub const MAX_INDEX_VALUE: usize = LMDB_MAX_KEY - INDEX_SUFFIX;
/// Hex digits of the whole value's hash that complete a cut value.
const CUT_HASH_HEX: usize = 32;
/// Marks a cut value (the unit separator never appears in an HTTP header value or path).
const CUT_MARKER: u8 = 0x1f;

/// Size of a key of the `exchanges` database: session id, start of the block, sequence.
pub const EXCHANGE_KEY: usize = 16 + 8 + 4;

/// `value` as index keys hold it: itself if it fits, else its longest prefix that leaves room
/// for a marker and a hash of the whole value (cut on a character boundary).
pub fn index_value(value: &str) -> Cow<'_, [u8]> {
    if value.len() <= MAX_INDEX_VALUE {
        return Cow::Borrowed(value.as_bytes());
    }
    let mut cut = MAX_INDEX_VALUE - 1 - CUT_HASH_HEX;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = blake3::hash(value.as_bytes());
    let mut out = Vec::with_capacity(MAX_INDEX_VALUE);
    out.extend_from_slice(&value.as_bytes()[..cut]);
    out.push(CUT_MARKER);
    out.extend_from_slice(crate::record::hex(&hash.as_bytes()[..CUT_HASH_HEX / 2]).as_bytes());
    Cow::Owned(out)
}

/// The prefix of every index key of `value`: what a lookup by `value` iterates over.
pub fn index_prefix(value: &str) -> Vec<u8> {
    let value = index_value(value);
    let mut key = Vec::with_capacity(value.len() + 1);
    key.extend_from_slice(&value);
    key.push(0);
    key
}

/// An index key: `value` (bounded), 0, the session's start, its id.
pub fn index_key(value: &str, start_ns: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = index_prefix(value);
    key.reserve(INDEX_SUFFIX - 1);
    key.extend_from_slice(&start_ns.to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// A key of the time index: session start, then id (byte order is time order).
pub fn time_key(start_ns: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&start_ns.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

/// A key of the `exchanges` database.
pub fn exchange_key(id: &[u8; 16], first_ns: u64, sequence: u32) -> [u8; EXCHANGE_KEY] {
    let mut key = [0u8; EXCHANGE_KEY];
    key[..16].copy_from_slice(id);
    key[16..24].copy_from_slice(&first_ns.to_be_bytes());
    key[24..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// A key of the `imported` database: the exchange's start, then its id (byte order is time
/// order, so pruning deletes a prefix).
pub fn imported_key(ts_ns: u64, id: &[u8; 16]) -> [u8; 24] {
    time_key(ts_ns, id)
}

/// The greatest exchange key of a session (id, then all-ones time and sequence).
pub fn last_exchange_key(id: &[u8; 16]) -> [u8; EXCHANGE_KEY] {
    let mut key = [0xff; EXCHANGE_KEY];
    key[..16].copy_from_slice(id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [7; 16];

    #[test]
    fn index_keys_fit_at_the_boundary_and_far_past_it() {
        let fits = "a".repeat(MAX_INDEX_VALUE);
        let key = index_key(&fits, 1, &ID);
        assert_eq!(key.len(), LMDB_MAX_KEY, "the longest value kept as it is");
        assert_eq!(&key[..MAX_INDEX_VALUE], fits.as_bytes());

        for len in [MAX_INDEX_VALUE + 1, 4 * LMDB_MAX_KEY, 64 << 10] {
            let long = "a".repeat(len);
            let key = index_key(&long, 1, &ID);
            assert!(key.len() <= LMDB_MAX_KEY, "{len}: {} bytes", key.len());
            assert!(key.starts_with(&index_prefix(&long)));
            assert!(key.contains(&CUT_MARKER), "{len}: a cut value is marked");
        }
    }

    #[test]
    fn cut_values_stay_apart_and_are_stable() {
        let a = format!("{}a", "x".repeat(2000));
        let b = format!("{}b", "x".repeat(2000));
        assert_ne!(
            index_prefix(&a),
            index_prefix(&b),
            "same prefix, other ends"
        );
        assert_eq!(index_prefix(&a), index_prefix(&a.clone()));
        // One byte past the bound is cut; the bound itself is not.
        let at = "y".repeat(MAX_INDEX_VALUE);
        let past = "y".repeat(MAX_INDEX_VALUE + 1);
        assert_eq!(index_value(&at).as_ref(), at.as_bytes());
        assert_ne!(index_value(&past).as_ref(), past.as_bytes());
    }

    #[test]
    fn cuts_respect_character_boundaries() {
        // Three-byte characters make every possible cut position land inside one somewhere.
        for pad in 0..3 {
            let value = format!("{}{}", "a".repeat(pad), "€".repeat(400));
            let cut = index_value(&value);
            let marker = cut.iter().position(|b| *b == CUT_MARKER).unwrap();
            assert!(std::str::from_utf8(&cut[..marker]).is_ok(), "pad {pad}");
            assert!(cut.len() <= MAX_INDEX_VALUE);
        }
    }
}

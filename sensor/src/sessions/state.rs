//! The sessionizer's state as the store keeps it, so that sessions continue across daemon
//! restarts and across imports: each actor's current session and each handed-out value's link.
//!
//! The sessionizer notes which actors and links an exchange changed; the changes of a batch
//! travel with the batch and are written in the same transaction as its exchanges, so that after
//! any stop (SIGKILL included) the state on disk matches the exchanges on disk. At start the
//! newest entries are loaded again, within the in-memory bounds.

use serde::{Deserialize, Serialize};

use super::KeyKind;

/// An actor's current session (part), as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorState {
    pub session_id: String,
    pub start_ns: u64,
    /// Start of the session's first part (day parts share it).
    pub began_ns: u64,
    pub last_ns: u64,
    pub key_kind: KeyKind,
    pub key_name: String,
    /// For a fallback actor's session: the first value handed out per key (key, link hash).
    pub first_hand_outs: Vec<(String, [u8; 32])>,
    /// A fallback session that values were handed out to, more than one per key: each later
    /// one opens a session of its own.
    pub shared: bool,
    /// Whether the session tracks hand-outs at all (a fallback session that received some).
    pub tracks_hand_outs: bool,
    /// Values split off this shared fallback session that no request has carried back yet
    /// (bounded by `sessions::MAX_UNRETURNED_SPLITS`).
    pub unreturned_splits: u32,
}

/// Where a handed-out value leads, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub actor: [u8; 32],
    /// Set for a value handed out to a fallback actor: the `began_ns` of the session it
    /// continues (it holds only while that session does).
    pub fallback_session: Option<u64>,
    /// For a value split off a shared fallback session, until a request first carries it: that
    /// fallback actor and its session's `began_ns` (whose count of unreturned values it is in).
    pub split_from: Option<([u8; 32], u64)>,
    /// When the link was made or last used: the newest are loaded first.
    pub at_ns: u64,
}

/// Changes to the state, or the state loaded at start. `None` removes an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub actors: Vec<([u8; 32], Option<ActorState>)>,
    pub links: Vec<([u8; 32], Option<LinkState>)>,
}

impl SessionState {
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty() && self.links.is_empty()
    }

    /// Appends `later`'s changes (applied after these).
    pub fn extend(&mut self, later: Self) {
        self.actors.extend(later.actors);
        self.links.extend(later.links);
    }
}

//! The sessionizer's state: each actor's current session and each handed-out value's link. It
//! is kept in memory for assigning exchanges and in the store, so that sessions continue across
//! daemon restarts and across imports.
//!
//! The sessionizer notes which actors and links an exchange changed; the changes of a batch
//! travel with the batch and are written in the same transaction as its exchanges, so that after
//! any stop (SIGKILL included) the state on disk matches the exchanges on disk. At start the
//! newest entries are loaded again, within the in-memory bounds.

use serde::{Deserialize, Serialize};

use crate::record::session::KeyKind;

/// Who a session belongs to: a keyed hash of the key that decided it (or of a handed-out
/// value that opened a session of its own).
pub type Actor = [u8; 32];

/// An actor's current session (part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    pub(crate) id: String,
    pub(crate) start_ns: u64,
    /// Start of the session's first part: day parts of one session share it, a session after
    /// inactivity does not. Links made by a fallback hand-out name the session by it.
    pub(crate) began_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) key_kind: KeyKind,
    pub(crate) key_name: String,
    /// What responses handed out to this session, when it is a fallback actor's.
    pub(crate) hand_outs: Option<FallbackHandOuts>,
}

/// The values handed out to one fallback session, as far as the ambiguity rule needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackHandOuts {
    /// The first value of each key (key name, link hash): these continue the session. At most
    /// `sessions::MAX_FIRST_HAND_OUTS`.
    pub(crate) first: Vec<(String, [u8; 32])>,
    /// A second, different value of a key was handed out: the session is several users', and
    /// every value handed out to it from now on is a session of its own.
    pub(crate) shared: bool,
    /// Values split off into sessions of their own that no request has carried back yet.
    pub(crate) unreturned: u32,
}

/// Where a handed-out value leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub(crate) actor: Actor,
    /// Set when the value was handed out to a fallback actor: the `began_ns` of the fallback
    /// session it continues. The fallback actor's later sessions may be other users', so the
    /// link holds only while that session does.
    pub(crate) fallback_session: Option<u64>,
    /// For a value split off a shared fallback session, until a request first carries it: that
    /// fallback actor and its session's `began_ns`, whose count of unreturned values it is in.
    pub(crate) split_from: Option<(Actor, u64)>,
    /// When the link was made or last followed: the newest are loaded first after a restart.
    pub(crate) at_ns: u64,
}

/// Changes to the state (`None` removes an entry), or the state loaded at start (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub actors: Vec<(Actor, Option<Active>)>,
    pub links: Vec<([u8; 32], Option<Link>)>,
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

/// What loading the state found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Newest first.
    pub state: SessionState,
    /// Entries recent enough but past the bounds: not loaded.
    pub actors_cut: u64,
    pub links_cut: u64,
    /// Entries that could not be read (corrupt, or from another format): skipped.
    pub unreadable: u64,
}

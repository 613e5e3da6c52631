//! Records: what the analysis stages hand to the sinks, below both.
//!
//! The sessionizer ([`crate::sessions`]) turns an exchange into a [`StoredExchange`] (no raw
//! secrets, see [`Redaction`]) with its [`Assignment`], and notes the changes to its own state
//! ([`SessionState`]); the store ([`crate::store`]), the NDJSON writer and the other sinks take
//! them from here and know nothing of how sessions are formed. Every hash in a record is keyed
//! with the installation's [`Secret`].

pub mod exchange;
pub mod findings;
pub mod secret;
pub mod session;
pub mod signals;
pub mod state;

pub use exchange::{Http2Record, Redaction, SECRET_NAMES, StoredExchange};
pub use findings::{AttackClass, Finding, SpecStatus};
pub(crate) use secret::hex;
pub use secret::{Secret, SecretError};
pub use session::{Assignment, KeyKind, NewValues, SessionSummary};
pub use signals::{SessionSignals, Signal, SignalName};
pub use state::{LoadedState, SessionState};

/// Records for the store, with the changes they made to the sessionizer's state (written in the
/// same transaction).
#[derive(Debug, Default)]
pub struct Batch {
    pub exchanges: Vec<(StoredExchange, Assignment)>,
    pub state: SessionState,
    /// The endpoint inventory's whole state, encoded by the pipeline (opaque here and in the
    /// store), handed over now and then: it replaces the stored one.
    pub inventory: Option<Vec<u8>>,
}

impl Batch {
    /// An empty batch with room for `exchanges` records.
    pub fn with_capacity(exchanges: usize) -> Self {
        Self {
            exchanges: Vec::with_capacity(exchanges),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.state.is_empty() && self.inventory.is_none()
    }

    /// Appends a later batch (whose inventory state, if any, is the newer one).
    pub fn extend(&mut self, later: Self) {
        self.exchanges.extend(later.exchanges);
        self.state.extend(later.state);
        if later.inventory.is_some() {
            self.inventory = later.inventory;
        }
    }
}

impl From<Vec<(StoredExchange, Assignment)>> for Batch {
    fn from(exchanges: Vec<(StoredExchange, Assignment)>) -> Self {
        Self {
            exchanges,
            state: SessionState::default(),
            inventory: None,
        }
    }
}

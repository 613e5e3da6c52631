//! Abuse signals as records carry them: a session's risk and the signals behind it, with their
//! reasons (computed by [`crate::analysis::abuse`]).

use serde::{Deserialize, Serialize};

/// The signals, in the vocabulary of the NDJSON and `--json` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    BadUserAgent,
    RequestRate,
    RequestInterval,
    Enumeration,
    AuthFailures,
    WideScope,
    Errors,
    IpRotation,
    SessionRotation,
    ExcessiveConsumption,
    Attacks,
}

impl SignalName {
    pub const ALL: [Self; 11] = [
        Self::BadUserAgent,
        Self::RequestRate,
        Self::RequestInterval,
        Self::Enumeration,
        Self::AuthFailures,
        Self::WideScope,
        Self::Errors,
        Self::IpRotation,
        Self::SessionRotation,
        Self::ExcessiveConsumption,
        Self::Attacks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadUserAgent => "bad_user_agent",
            Self::RequestRate => "request_rate",
            Self::RequestInterval => "request_interval",
            Self::Enumeration => "enumeration",
            Self::AuthFailures => "auth_failures",
            Self::WideScope => "wide_scope",
            Self::Errors => "errors",
            Self::IpRotation => "ip_rotation",
            Self::SessionRotation => "session_rotation",
            Self::ExcessiveConsumption => "excessive_consumption",
            Self::Attacks => "attacks",
        }
    }
}

impl std::str::FromStr for SignalName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|n| n.as_str()).collect();
                format!("no signal '{s}' (one of {})", names.join(", "))
            })
    }
}

/// One signal of a session: how strong (0-100) and why, in numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub name: SignalName,
    pub score: u8,
    pub reason: String,
}

/// A session's risk and the signals that carry it, as stored with its summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSignals {
    pub risk: u8,
    /// Strongest first.
    pub signals: Vec<Signal>,
}

impl SessionSignals {
    /// Takes a newer reading: each signal at its strongest (a restarted sensor starts counting
    /// anew and must not erase what was found before), the risk at its highest.
    pub fn merge(&mut self, newer: &SessionSignals) {
        self.risk = self.risk.max(newer.risk);
        for signal in &newer.signals {
            match self.signals.iter_mut().find(|s| s.name == signal.name) {
                Some(kept) if kept.score > signal.score => {}
                Some(kept) => *kept = signal.clone(),
                None => self.signals.push(signal.clone()),
            }
        }
        self.signals
            .sort_by(|a, b| b.score.cmp(&a.score).then(a.name.cmp(&b.name)));
    }

    pub fn score(&self, name: SignalName) -> Option<u8> {
        self.signals
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.score)
    }
}

//! What the analysis finds in an exchange, as records carry it: attack findings (by
//! `analysis::attacks`) and where the request stands against the API's documents (by
//! `analysis::inventory`).

use serde::{Deserialize, Serialize};

/// The attack classes (the vocabulary, serialised as written here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackClass {
    Sqli,
    Nosqli,
    Xss,
    /// OS command injection and code injection (PHP, Java EL/OGNL, JNDI lookups, Node, Python).
    Rce,
    /// Including local file inclusion.
    PathTraversal,
    Rfi,
    Ssrf,
    Ssti,
    Xxe,
    Ldapi,
    /// Header injection, response splitting.
    Crlf,
    OpenRedirect,
    /// Known attack tools' user agents, probes of well-known sensitive paths.
    Scanner,
    /// Request smuggling and framing abuse.
    Protocol,
}

impl AttackClass {
    pub const ALL: [AttackClass; 14] = [
        Self::Sqli,
        Self::Nosqli,
        Self::Xss,
        Self::Rce,
        Self::PathTraversal,
        Self::Rfi,
        Self::Ssrf,
        Self::Ssti,
        Self::Xxe,
        Self::Ldapi,
        Self::Crlf,
        Self::OpenRedirect,
        Self::Scanner,
        Self::Protocol,
    ];

    /// The name as serialised (`path_traversal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqli => "sqli",
            Self::Nosqli => "nosqli",
            Self::Xss => "xss",
            Self::Rce => "rce",
            Self::PathTraversal => "path_traversal",
            Self::Rfi => "rfi",
            Self::Ssrf => "ssrf",
            Self::Ssti => "ssti",
            Self::Xxe => "xxe",
            Self::Ldapi => "ldapi",
            Self::Crlf => "crlf",
            Self::OpenRedirect => "open_redirect",
            Self::Scanner => "scanner",
            Self::Protocol => "protocol",
        }
    }

    /// The class named `name` (as serialised), for `--attack CLASS`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for AttackClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attack found in a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub class: AttackClass,
    /// Key path of the input (`request.query.id`, `request.body.json.a.b`, `request.path`,
    /// `request.header.User-Agent`; `request` for protocol findings).
    pub point: String,
    /// At most [`MAX_EXCERPT`] bytes of the normalised value around the match; for a
    /// secret-named input (password, token, cookie, Authorization...), the value's keyed hash.
    pub excerpt: String,
    /// The rule's id (rules.toml), `libinjection-sqli:FINGERPRINT`, `libinjection-xss` or a
    /// `protocol-*` anomaly name.
    pub rule: String,
}

/// What an observed request is to a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecStatus {
    /// In the spec, not deprecated.
    Documented,
    /// Not in the spec.
    Shadow,
    /// In the spec and deprecated, still called.
    Zombie,
    /// In the spec, never seen (only for the spec's own operations).
    Orphan,
}

impl SpecStatus {
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Documented, Self::Shadow, Self::Zombie, Self::Orphan]
            .into_iter()
            .find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Documented => "documented",
            Self::Shadow => "shadow",
            Self::Zombie => "zombie",
            Self::Orphan => "orphan",
        }
    }
}

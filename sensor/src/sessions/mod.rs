//! Stage 4, sessions: which user session each exchange belongs to.
//!
//! Grouping keys are tried in order and the first one present decides: configured keys, then
//! well-known session cookies, `Authorization` (a JWT's `sub`/`sid`, an opaque bearer token, the
//! Basic user name), API-key headers, and finally client IP + User-Agent (the IP alone without
//! one). A value that a response hands out (a session cookie, a login token) is linked to the
//! session that received it, so the requests that later carry it stay in that session.
//!
//! A session ends after an inactivity timeout and is cut into parts of at most a day. Its id is
//! a keyed BLAKE3 hash with the installation's secret: the same user yields the same ids on every
//! host that shares the secret, and no raw key value is ever part of the output.

pub mod extract;

use std::{
    borrow::Cow,
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    time::Duration,
};

use extract::{
    API_KEY_HEADERS, Credential, SESSION_COOKIES, json_at, json_body_if, request_cookie,
    set_cookie, value_at,
};
use lru::LruCache;
use serde::Serialize;

use crate::{
    config::{Config, KeyPath, MessageSide, Parameter, ParameterKind},
    exchange::{Exchange, ip_text, push_ip},
    store::{Redaction, StoredExchange},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading the installation secret {path}")]
    ReadSecret {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the installation secret {0} is not 32 bytes; remove it to make a new one (ids change)"
    )]
    BadSecret(String),
    #[error("creating the installation secret {path}")]
    WriteSecret {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no random source for the installation secret: {0}")]
    Random(String),
}

/// The per-installation key of every hash the sensor stores. Share it across a fleet to get the
/// same session ids for the same users everywhere.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub const FILE: &str = "secret";

    /// Reads `data_dir/secret`, or creates it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SessionError> {
        let path = data_dir.join(Self::FILE);
        let name = path.display().to_string();
        match fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| SessionError::BadSecret(name))?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| SessionError::Random(e.to_string()))?;
                let write = || -> io::Result<()> {
                    // create_new: two processes starting at once must not overwrite each other.
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?;
                    file.write_all(&key)?;
                    file.sync_all()
                };
                match write() {
                    Ok(()) => Ok(Self(key)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(source) => Err(SessionError::WriteSecret { path: name, source }),
                }
            }
            Err(source) => Err(SessionError::ReadSecret { path: name, source }),
        }
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// Keyed hash of length-prefixed parts (so ("ab","c") and ("a","bc") differ).
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// A value that must not be stored raw: `h:` and 32 hex digits of its keyed hash.
    pub fn hashed_value(&self, value: &str) -> String {
        let hash = self.hash(&[b"value", value.as_bytes()]);
        format!("h:{}", hex(&hash[..16]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What kind of key put an exchange in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Custom,
    Cookie,
    Jwt,
    Bearer,
    Basic,
    ApiKey,
    IpUserAgent,
    Ip,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Cookie => "cookie",
            Self::Jwt => "jwt",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::ApiKey => "api_key",
            Self::IpUserAgent => "ip_user_agent",
            Self::Ip => "ip",
        }
    }
}

/// A grouping key found in a request. Borrowed from the exchange where it can be: every
/// request yields at least one, and only one of them decides.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate<'a> {
    kind: KeyKind,
    /// Which key, e.g. "request.cookie.sid" or "cookie PHPSESSID".
    name: Cow<'static, str>,
    /// What identifies the actor (a JWT's subject, a cookie's value, ip|user-agent).
    value: Cow<'a, str>,
    /// The value as it travels (the whole JWT), when it differs from `value`: what a response
    /// may have handed out earlier.
    travels_as: Option<&'a str>,
}

impl Candidate<'_> {
    /// The value as it travels: see `travels_as`.
    fn raw(&self) -> &str {
        self.travels_as.unwrap_or(&self.value)
    }
}

/// "cookie NAME" for each of [`SESSION_COOKIES`], the name of a session-cookie key.
const COOKIE_KEY_NAMES: [&str; SESSION_COOKIES.len()] = [
    "cookie PHPSESSID",
    "cookie JSESSIONID",
    "cookie ASP.NET_SessionId",
    "cookie connect.sid",
    "cookie laravel_session",
    "cookie sessionid",
    "cookie session",
    "cookie sid",
    "cookie _session_id",
    "cookie session_id",
];

/// The session decision for one exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub session_id: String,
    pub key_kind: KeyKind,
    pub key_name: String,
    /// From the parameter typed `user` (hashed if configured so).
    pub user: Option<String>,
    pub role: Option<String>,
    /// The exchange opened a new session (or a new part of one).
    pub new_session: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub inactivity_timeout: Duration,
    /// Longest session part; a longer session continues under a new id.
    pub max_part: Duration,
    pub custom_keys: Vec<KeyPath>,
    pub parameters: Vec<Parameter>,
    /// Active sessions held in memory; the least recently active goes first.
    pub max_active: usize,
    /// Handed-out values remembered for linking.
    pub max_links: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for SessionConfig {
    fn from(config: &Config) -> Self {
        Self {
            inactivity_timeout: config.sessions.inactivity_timeout,
            max_part: Duration::from_secs(24 * 3600),
            custom_keys: config.sessions.keys.clone(),
            parameters: config.parameters.clone(),
            max_active: 200_000,
            max_links: 200_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub sessions_started: u64,
    pub split_inactivity: u64,
    pub split_day: u64,
    /// Sessions dropped from memory to stay within `max_active` (a later request starts anew).
    pub evicted: u64,
    pub links_registered: u64,
    pub links_used: u64,
    pub by_kind: [u64; 8],
}

impl SessionCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut list = vec![
            ("sessions_started", self.sessions_started),
            ("split_inactivity", self.split_inactivity),
            ("split_day", self.split_day),
            ("evicted", self.evicted),
            ("links_registered", self.links_registered),
            ("links_used", self.links_used),
        ];
        let kinds = [
            ("key_custom", KeyKind::Custom),
            ("key_cookie", KeyKind::Cookie),
            ("key_jwt", KeyKind::Jwt),
            ("key_bearer", KeyKind::Bearer),
            ("key_basic", KeyKind::Basic),
            ("key_api_key", KeyKind::ApiKey),
            ("key_ip_user_agent", KeyKind::IpUserAgent),
            ("key_ip", KeyKind::Ip),
        ];
        list.extend(
            kinds
                .iter()
                .map(|(name, kind)| (*name, self.by_kind[*kind as usize])),
        );
        list
    }
}

#[derive(Clone, Debug)]
struct Active {
    id: String,
    start_ns: u64,
    last_ns: u64,
    key_kind: KeyKind,
    key_name: String,
}

type Actor = [u8; 32];

/// Assigns exchanges to sessions, in the order they complete.
pub struct Sessionizer {
    config: SessionConfig,
    secret: Secret,
    active: LruCache<Actor, Active>,
    /// Hash of a handed-out value -> the actor whose session received it.
    links: LruCache<[u8; 32], Actor>,
    pub counters: SessionCounters,
}

/// Values that responses commonly hand out and requests then carry, besides configured
/// `response.*` keys and the session cookies. Each contains "token" or "session" (see
/// `register_links`, which skips bodies without either).
const HANDED_OUT_JSON: &[&str] = &[
    "token",
    "access_token",
    "id_token",
    "session_id",
    "sessionId",
];

impl Sessionizer {
    pub fn new(config: SessionConfig, secret: Secret) -> Self {
        Self {
            active: LruCache::unbounded(),
            links: LruCache::unbounded(),
            config,
            secret,
            counters: SessionCounters::default(),
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The grouping keys present in the request, in precedence order (the fallback last).
    fn candidates<'a>(&self, exchange: &'a Exchange) -> Vec<Candidate<'a>> {
        let mut found = Vec::new();
        let Some(request) = exchange.request.as_ref() else {
            return vec![ip_candidate(exchange, None)];
        };
        for path in self
            .config
            .custom_keys
            .iter()
            .filter(|p| p.message == MessageSide::Request)
        {
            if let Some(value) = value_at(exchange, path) {
                found.push(Candidate {
                    kind: KeyKind::Custom,
                    name: path.to_string().into(),
                    value: value.into(),
                    travels_as: None,
                });
            }
        }
        // Most requests carry no cookie: one scan for that instead of one per cookie name.
        let cookie_names = if request.meta.header("cookie").is_some() {
            SESSION_COOKIES
        } else {
            &[]
        };
        for (name, key_name) in cookie_names.iter().zip(COOKIE_KEY_NAMES) {
            if let Some(value) = request_cookie(&request.meta, name) {
                found.push(Candidate {
                    kind: KeyKind::Cookie,
                    name: key_name.into(),
                    value: value.into(),
                    travels_as: None,
                });
            }
        }
        if let Some(authorization) = request.meta.header("authorization") {
            let token = authorization.split_once(' ').map_or("", |(_, t)| t.trim());
            let (kind, value) = match Credential::from_authorization(authorization) {
                Some(Credential::Jwt(subject)) => (KeyKind::Jwt, Some(subject)),
                Some(Credential::Bearer(token)) => (KeyKind::Bearer, Some(token)),
                Some(Credential::Basic(user)) => (KeyKind::Basic, Some(user)),
                None => (KeyKind::Bearer, None),
            };
            if let Some(value) = value {
                found.push(Candidate {
                    kind,
                    name: "Authorization".into(),
                    value: value.into(),
                    travels_as: Some(token),
                });
            }
        }
        for name in API_KEY_HEADERS {
            if let Some(value) = request.meta.header(name).filter(|v| !v.is_empty()) {
                found.push(Candidate {
                    kind: KeyKind::ApiKey,
                    name: (*name).into(),
                    value: value.into(),
                    travels_as: None,
                });
            }
        }
        found.push(ip_candidate(exchange, request.meta.header("user-agent")));
        found
    }

    /// Decides the session of `exchange`; call in the order exchanges complete.
    pub fn assign(&mut self, exchange: &Exchange) -> Assignment {
        let parameters = self.parameters(exchange);
        self.assign_with(exchange, &parameters)
    }

    fn assign_with(
        &mut self,
        exchange: &Exchange,
        parameters: &[(String, Option<ParameterKind>, String)],
    ) -> Assignment {
        let ts = exchange.start_ns();
        let candidates = self.candidates(exchange);
        // A value a response handed out earlier wins over precedence: it says which session
        // the caller was in when it got the value (e.g. before logging in).
        // Without any link nothing can match: spare the hashing.
        let any_links = !self.links.is_empty();
        let linked = candidates.iter().filter(|_| any_links).find_map(|c| {
            let hash = self.secret.hash(&[b"link", c.raw().as_bytes()]);
            self.links.get(&hash).map(|actor| (c, *actor))
        });
        let (decider, actor) = match linked {
            Some((candidate, actor)) => {
                self.counters.links_used += 1;
                (candidate.clone(), actor)
            }
            None => {
                // The fallback is always there, so the list is never empty.
                let first = candidates
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| ip_candidate(exchange, None));
                let actor = self.secret.hash(&[
                    b"actor",
                    first.kind.as_str().as_bytes(),
                    first.name.as_bytes(),
                    first.value.as_bytes(),
                ]);
                (first, actor)
            }
        };
        self.counters.by_kind[decider.kind as usize] += 1;
        let (session, new_session) = self.session_for(actor, &decider, ts);
        self.register_links(exchange, actor);
        let typed = |kind| {
            parameters
                .iter()
                .find(|(_, k, _)| *k == Some(kind))
                .map(|(_, _, v)| v.clone())
        };
        let (mut user, role) = (typed(ParameterKind::User), typed(ParameterKind::Role));
        // Without a configured `user` parameter, the identity that Authorization names (a JWT's
        // subject, the Basic user) is the user.
        let user_configured = self
            .config
            .parameters
            .iter()
            .any(|p| p.kind == Some(ParameterKind::User));
        if user.is_none()
            && !user_configured
            && matches!(decider.kind, KeyKind::Jwt | KeyKind::Basic)
        {
            user = Some(decider.value.into_owned());
        }
        Assignment {
            session_id: session.id,
            key_kind: session.key_kind,
            key_name: session.key_name,
            user,
            role,
            new_session,
        }
    }

    /// The actor's current session, or a new one (after inactivity, past a day, or first seen).
    fn session_for(&mut self, actor: Actor, decider: &Candidate, ts: u64) -> (Active, bool) {
        let inactivity = self.config.inactivity_timeout.as_nanos() as u64;
        let max_part = self.config.max_part.as_nanos() as u64;
        if let Some(active) = self.active.get_mut(&actor) {
            let idle = ts.saturating_sub(active.last_ns);
            if idle > inactivity {
                self.counters.split_inactivity += 1;
            } else if ts.saturating_sub(active.start_ns) >= max_part {
                self.counters.split_day += 1;
            } else {
                active.last_ns = active.last_ns.max(ts);
                return (active.clone(), false);
            }
        }
        self.counters.sessions_started += 1;
        let id = hex(&self.secret.hash(&[b"session", &actor, &ts.to_le_bytes()])[..16]);
        let active = Active {
            id,
            start_ns: ts,
            last_ns: ts,
            key_kind: decider.kind,
            key_name: decider.name.to_string(),
        };
        if self.active.len() >= self.config.max_active && !self.active.contains(&actor) {
            self.active.pop_lru();
            self.counters.evicted += 1;
        }
        self.active.put(actor, active.clone());
        (active, true)
    }

    /// Remembers the values this exchange's response handed out, for the actor's session.
    fn register_links(&mut self, exchange: &Exchange, actor: Actor) {
        let Some(response) = exchange.response.as_ref() else {
            return;
        };
        let mut values = Vec::new();
        for path in self
            .config
            .custom_keys
            .iter()
            .filter(|p| p.message == MessageSide::Response)
        {
            values.extend(value_at(exchange, path));
        }
        if response.meta.header("set-cookie").is_some() {
            for name in SESSION_COOKIES {
                values.extend(set_cookie(&response.meta, name));
            }
        }
        // One parse of the body for all the properties, and none for a body that cannot hold
        // them: each name contains "token" or "session", and a key can only be spelled without
        // those bytes by escaping a character.
        let may_hold = |body: &[u8]| {
            memchr::memmem::find(body, b"token").is_some()
                || memchr::memmem::find(body, b"session").is_some()
                || memchr::memchr(b'\\', body).is_some()
        };
        if let Some(root) = json_body_if(&response.meta, may_hold) {
            for property in HANDED_OUT_JSON {
                values.extend(json_at(&root, &[property]));
            }
        }
        for value in values {
            let hash = self.secret.hash(&[b"link", value.as_bytes()]);
            if self.links.len() >= self.config.max_links && !self.links.contains(&hash) {
                self.links.pop_lru();
            }
            self.links.put(hash, actor);
            self.counters.links_registered += 1;
        }
    }

    /// The configured context parameters present in `exchange`, hashed where configured so:
    /// (name, type, value).
    pub fn parameters(&self, exchange: &Exchange) -> Vec<(String, Option<ParameterKind>, String)> {
        self.config
            .parameters
            .iter()
            .filter_map(|parameter| {
                let value = value_at(exchange, &parameter.path)?;
                let value = if parameter.hashed {
                    self.secret.hashed_value(&value)
                } else {
                    value
                };
                Some((parameter.name.clone(), parameter.kind, value))
            })
            .collect()
    }

    /// The exchange's session and its record as stored: stages 4 and 5 joined. The parameters
    /// are read once, for the record and for the session's user and role.
    pub fn record(
        &mut self,
        exchange: &Exchange,
        redaction: &Redaction,
    ) -> (StoredExchange, Assignment) {
        let parameters = self.parameters(exchange);
        let assignment = self.assign_with(exchange, &parameters);
        let mut record = StoredExchange::new(exchange, &self.secret, redaction);
        record.params = parameters
            .into_iter()
            .map(|(name, _, value)| (name, value))
            .collect();
        (record, assignment)
    }
}

fn ip_candidate<'a>(exchange: &Exchange, user_agent: Option<&str>) -> Candidate<'a> {
    // The real client, which behind a trusted proxy is not the connection's peer.
    let ip = exchange.client_addr().ip();
    match user_agent.filter(|ua| !ua.is_empty()) {
        Some(ua) => {
            // "ip|user-agent", built in one allocation.
            let mut value = String::with_capacity(40 + ua.len());
            push_ip(&mut value, ip);
            value.push('|');
            value.push_str(ua);
            Candidate {
                kind: KeyKind::IpUserAgent,
                name: "client ip + user-agent".into(),
                value: value.into(),
                travels_as: None,
            }
        }
        None => Candidate {
            kind: KeyKind::Ip,
            name: "client ip".into(),
            value: ip_text(ip).into(),
            travels_as: None,
        },
    }
}

#[cfg(test)]
mod tests;

//! Stage 4, sessions: which user session each exchange belongs to.
//!
//! Grouping keys are tried in order and the first one present decides: configured keys, then
//! the built-in table of [`keys`] (session cookies of the major frameworks by name and pattern,
//! a JWT's subject in `Authorization` or a cookie, other `Authorization` schemes, token
//! headers, remember-me cookies, query-string tokens; see [`keys::Tier`]), and finally client
//! IP + User-Agent (the IP alone without one). A value that a response hands out (a session cookie, a login token) is linked to the
//! session that received it, so the requests that later carry it stay in that session.
//!
//! A fallback actor (an IP, or an IP + User-Agent) can be many users: an office behind NAT on one
//! browser build. A value handed out to a fallback session continues that session only while it
//! is the only one of its key handed out there; from a second, different value on, the session is
//! *shared* and each further value (with the exchange that received it) is a session of its own.
//! A client that never sends back what it is given (a crawler, a health check) would get a
//! session per response that way: once [`MAX_UNRETURNED_SPLITS`] split-off values have not come
//! back, further ones stay in the fallback session. Only the session's first value of each key
//! and that count are remembered, so the state per fallback session is small and bounded.
//!
//! A session ends after an inactivity timeout and is cut into parts of at most a day. Its id is
//! a keyed BLAKE3 hash with the installation's secret: the same user yields the same ids on every
//! host that shares the secret, and no raw key value is ever part of the output.

pub mod extract;
pub mod keys;

use std::{borrow::Cow, collections::HashSet, sync::LazyLock, time::Duration};

use memchr::memmem;

use extract::{
    Credential, json_at, json_body_if, jwt_subject, query_pairs, request_cookies, set_cookies,
    value_at,
};
use keys::{CookieClass, CookieMatch, KeyTable, QUERY_TOKENS, Tier, cookie_tier, looks_like_jwt};
use lru::LruCache;

use crate::{
    config::{Config, KeyPath, MessageSide, Parameter, ParameterKind},
    exchange::{Exchange, ip_text, push_ip},
    record::{
        Assignment, KeyKind, Redaction, Secret, StoredExchange, hex,
        state::{Active, Actor, Link, SessionState},
    },
};

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
    /// Its place in the precedence order (see [`Tier`]); the lowest decides.
    order: (Tier, u16),
}

impl Candidate<'_> {
    /// The value as it travels: see `travels_as`.
    fn raw(&self) -> &str {
        self.travels_as.unwrap_or(&self.value)
    }
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
    /// The built-in keys, extended and narrowed by the configuration.
    pub keys: KeyTable,
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
            keys: KeyTable::from(config),
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
    /// Values handed out to a fallback session that already had another value of the same key
    /// (several users behind one address and browser): each became a session of its own.
    pub links_ambiguous: u64,
    /// Links dropped because the fallback session they continued has ended (a later holder of
    /// the value is grouped by its own key instead of joining whoever uses the fallback now).
    pub links_expired: u64,
    /// Keys handed out to a fallback session beyond [`MAX_FIRST_HAND_OUTS`]: not remembered, so
    /// a second value of them is not recognised as ambiguous.
    pub hand_outs_untracked: u64,
    /// Values handed out to a shared fallback session but kept in it, because
    /// [`MAX_UNRETURNED_SPLITS`] values split off before never came back (a client that ignores
    /// cookies, against an app that sets one on every response).
    pub links_kept_unreturned: u64,
    /// Actors' sessions and links loaded from the store at start (a restart, an import that
    /// continues an earlier one), and those left out: past the in-memory bounds, or unreadable.
    pub state_actors_loaded: u64,
    pub state_links_loaded: u64,
    pub state_actors_cut: u64,
    pub state_links_cut: u64,
    pub state_unreadable: u64,
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
            ("links_ambiguous", self.links_ambiguous),
            ("links_expired", self.links_expired),
            ("hand_outs_untracked", self.hand_outs_untracked),
            ("links_kept_unreturned", self.links_kept_unreturned),
            ("state_actors_loaded", self.state_actors_loaded),
            ("state_links_loaded", self.state_links_loaded),
            ("state_actors_cut", self.state_actors_cut),
            ("state_links_cut", self.state_links_cut),
            ("state_unreadable", self.state_unreadable),
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

/// Split-off values per fallback session that may wait for their first return before further
/// values stay in the fallback session: users log in and use their cookie within seconds, so
/// more than a handful outstanding means a client that drops what it is given.
pub const MAX_UNRETURNED_SPLITS: u32 = 8;

/// Keys remembered per fallback session: more than one login hands out (a session cookie, a
/// remember-me cookie, a token or two), so only an app that sets many session-like cookies or a
/// configuration with many `response.*` keys reaches it.
pub const MAX_FIRST_HAND_OUTS: usize = 16;

/// A value a response hands out, which later requests may carry.
#[derive(Clone, Debug)]
struct HandOut {
    /// Which key handed it out: "cookie sid", "response.body.json.token", a configured path.
    key: Cow<'static, str>,
    /// The kind of a session this value opens on its own.
    kind: KeyKind,
    /// `Secret::hash(["link", value])`: how links know it; the raw value is not kept.
    link: [u8; 32],
}

/// The key that decided an exchange's session.
struct Decider<'a> {
    actor: Actor,
    kind: KeyKind,
    name: Cow<'static, str>,
    /// The identity a request's key names (a JWT's subject, the Basic user): the user when no
    /// `user` parameter is configured.
    identity: Option<Cow<'a, str>>,
    /// The exchange's values were just split off this fallback session: see [`Link::split_from`].
    split_from: Option<(Actor, u64)>,
}

/// Assigns exchanges to sessions, in the order they complete.
pub struct Sessionizer {
    config: SessionConfig,
    secret: Secret,
    active: LruCache<Actor, Active>,
    /// Hash of a handed-out value -> where requests that carry it belong.
    links: LruCache<[u8; 32], Link>,
    /// What changed since the last [`Sessionizer::take_changes`], when the caller keeps the
    /// state in a store (`None` otherwise: nothing to remember then). Bounded by the exchanges
    /// of one batch.
    changed: Option<Changed>,
    pub counters: SessionCounters,
}

/// The actors and links that exchanges changed, to be written with them.
#[derive(Debug, Default)]
struct Changed {
    actors: HashSet<Actor>,
    links: HashSet<[u8; 32]>,
}

/// Values that responses commonly hand out and requests then carry, besides configured
/// `response.*` keys and the session cookies: (JSON property, key name). Each property contains
/// "token" or "session" (see `hand_outs`, which skips bodies without either).
const HANDED_OUT_JSON: &[(&str, &str)] = &[
    ("token", "response.body.json.token"),
    ("access_token", "response.body.json.access_token"),
    ("id_token", "response.body.json.id_token"),
    ("session_id", "response.body.json.session_id"),
    ("sessionId", "response.body.json.sessionId"),
];

impl Sessionizer {
    pub fn new(config: SessionConfig, secret: Secret) -> Self {
        Self {
            active: LruCache::unbounded(),
            links: LruCache::unbounded(),
            changed: None,
            config,
            secret,
            counters: SessionCounters::default(),
        }
    }

    /// Takes a reloaded configuration: exchanges from now on are grouped by its keys and split
    /// by its timeout; the active sessions and links stay.
    pub fn set_config(&mut self, config: SessionConfig) {
        self.config = config;
    }

    /// Continues from `loaded` (a store's state, newest first) and from now on notes what
    /// changes, for [`Sessionizer::take_changes`]: sessions go on across restarts and imports.
    pub fn restore(&mut self, loaded: crate::record::LoadedState) {
        let crate::record::LoadedState {
            state,
            actors_cut,
            links_cut,
            unreadable,
        } = loaded;
        self.counters.state_actors_cut += actors_cut;
        self.counters.state_links_cut += links_cut;
        self.counters.state_unreadable += unreadable;
        // Oldest first, so that the newest end up the most recently used.
        for (actor, active) in state.actors.into_iter().rev() {
            if let Some(active) = active
                && self.active.len() < self.config.max_active
            {
                self.active.put(actor, active);
                self.counters.state_actors_loaded += 1;
            }
        }
        for (hash, link) in state.links.into_iter().rev() {
            if let Some(link) = link
                && self.links.len() < self.config.max_links
            {
                self.links.put(hash, link);
                self.counters.state_links_loaded += 1;
            }
        }
        self.changed = Some(Changed::default());
    }

    /// The state of the actors and links changed since the last call, as it now is in memory
    /// (`None` for one no longer there), for the store to write with the exchanges that changed
    /// it. Empty unless [`Sessionizer::restore`] was called.
    pub fn take_changes(&mut self) -> SessionState {
        let Some(changed) = self.changed.as_mut() else {
            return SessionState::default();
        };
        let changed = std::mem::take(changed);
        SessionState {
            actors: changed
                .actors
                .into_iter()
                .map(|actor| (actor, self.active.peek(&actor).cloned()))
                .collect(),
            links: changed
                .links
                .into_iter()
                .map(|hash| (hash, self.links.peek(&hash).copied()))
                .collect(),
        }
    }

    fn actor_changed(&mut self, actor: Actor) {
        if let Some(changed) = self.changed.as_mut() {
            changed.actors.insert(actor);
        }
    }

    fn link_changed(&mut self, hash: [u8; 32]) {
        if let Some(changed) = self.changed.as_mut() {
            changed.links.insert(hash);
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The grouping keys present in the request, in precedence order (the fallback last):
    /// see [`Tier`] and the README's table.
    fn candidates<'a>(&self, exchange: &'a Exchange) -> Vec<Candidate<'a>> {
        let mut found = Vec::new();
        let Some(request) = exchange.request.as_ref() else {
            return vec![ip_candidate(exchange, None)];
        };
        for (i, path) in self
            .config
            .custom_keys
            .iter()
            .filter(|p| p.message == MessageSide::Request)
            .enumerate()
        {
            if let Some(value) = value_at(exchange, path) {
                found.push(Candidate {
                    kind: KeyKind::Custom,
                    name: path.to_string().into(),
                    value: value.into(),
                    travels_as: None,
                    order: (Tier::Configured, rank(i)),
                });
            }
        }
        let keys = &self.config.keys;
        for (name, value) in request_cookies(&request.meta) {
            if let Some(candidate) = cookie_candidate(keys, name, value) {
                found.push(candidate);
            }
        }
        if let Some(authorization) = request.meta.header("authorization") {
            let token = authorization.split_once(' ').map_or("", |(_, t)| t.trim());
            let (kind, tier, value) = match Credential::from_authorization(authorization) {
                Some(Credential::Jwt(subject)) => (KeyKind::Jwt, Tier::JwtSubject, Some(subject)),
                Some(Credential::Bearer(token)) => {
                    (KeyKind::Bearer, Tier::Authorization, Some(token))
                }
                Some(Credential::Basic(user)) => (KeyKind::Basic, Tier::Authorization, Some(user)),
                Some(Credential::ApiKey(key)) => (KeyKind::ApiKey, Tier::Authorization, Some(key)),
                None => (KeyKind::Bearer, Tier::Authorization, None),
            };
            if let Some(value) = value {
                found.push(Candidate {
                    kind,
                    name: "Authorization".into(),
                    value: value.into(),
                    travels_as: Some(token),
                    order: (tier, 0),
                });
            }
        }
        for (i, name) in keys.token_headers().enumerate() {
            if let Some(value) = request.meta.header(name).filter(|v| !v.is_empty()) {
                found.push(Candidate {
                    kind: KeyKind::ApiKey,
                    name: name.to_owned().into(),
                    value: value.into(),
                    travels_as: None,
                    order: (Tier::TokenHeader, rank(i)),
                });
            }
        }
        if request.uri.contains('?') {
            for (name, value) in query_pairs(&request.uri) {
                let Some(i) = QUERY_TOKENS.iter().position(|q| *q == name) else {
                    continue;
                };
                if value.is_empty() {
                    continue;
                }
                found.push(Candidate {
                    kind: if name.contains("key") {
                        KeyKind::ApiKey
                    } else {
                        KeyKind::Bearer
                    },
                    name: format!("query {name}").into(),
                    value,
                    travels_as: None,
                    order: (Tier::QueryToken, rank(i)),
                });
            }
        }
        // Stable: within a rule, the earlier in the request decides.
        found.sort_by_key(|c| c.order);
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
        let hand_outs = self.hand_outs(exchange);
        let decider = self.decide(exchange, &hand_outs, ts);
        self.counters.by_kind[decider.kind as usize] += 1;
        let (session_id, key_kind, key_name, new_session) = self.session_for(&decider, ts);
        self.actor_changed(decider.actor);
        self.link(&hand_outs, &decider, ts);
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
        if user.is_none() && !user_configured {
            user = decider.identity.map(Cow::into_owned);
        }
        Assignment {
            session_id,
            key_kind,
            key_name,
            user,
            role,
            new_session,
            signals: None,
        }
    }

    /// Which actor's session `exchange` belongs to, and by which key.
    fn decide<'a>(
        &mut self,
        exchange: &'a Exchange,
        hand_outs: &[HandOut],
        ts: u64,
    ) -> Decider<'a> {
        let candidates = self.candidates(exchange);
        // A value a response handed out earlier wins over precedence: it says which session
        // the caller was in when it got the value (e.g. before logging in).
        // Without any link nothing can match: spare the hashing.
        let linked = if self.links.is_empty() {
            None
        } else {
            candidates.iter().find_map(|c| {
                let hash = self.secret.hash(&[b"link", c.raw().as_bytes()]);
                self.live_link(&hash, ts).map(|link| (c, hash, link))
            })
        };
        if let Some((candidate, hash, link)) = linked {
            self.counters.links_used += 1;
            if let Some(from) = link.split_from {
                self.returned(hash, from);
            }
            return Decider {
                actor: link.actor,
                kind: candidate.kind,
                name: candidate.name.clone(),
                identity: identity(candidate),
                split_from: None,
            };
        }
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
        if first.kind.is_fallback()
            && let Some(own) = self.own_session_of_hand_out(actor, hand_outs, ts)
        {
            return own;
        }
        Decider {
            actor,
            kind: first.kind,
            identity: identity(&first),
            name: first.name,
            split_from: None,
        }
    }

    /// The actor a link leads to, if it still holds: a link made by a fallback hand-out holds
    /// only while the fallback session it continues does (is neither over nor replaced).
    fn live_link(&mut self, hash: &[u8; 32], ts: u64) -> Option<Link> {
        let link = *self.links.get(hash)?;
        let inactivity = self.config.inactivity_timeout.as_nanos() as u64;
        let holds = link.fallback_session.is_none_or(|began| {
            self.active.peek(&link.actor).is_some_and(|active| {
                active.began_ns == began && ts.saturating_sub(active.last_ns) <= inactivity
            })
        });
        self.link_changed(*hash);
        if holds {
            if let Some(held) = self.links.peek_mut(hash) {
                held.at_ns = held.at_ns.max(ts);
            }
            return Some(link);
        }
        self.links.pop(hash);
        self.counters.links_expired += 1;
        None
    }

    /// For an exchange of the fallback actor whose response hands out values: the session of
    /// those values when they are not (or no longer) the fallback session's. `None` keeps the
    /// exchange in the fallback session, where the values then link.
    fn own_session_of_hand_out(
        &mut self,
        fallback: Actor,
        hand_outs: &[HandOut],
        ts: u64,
    ) -> Option<Decider<'static>> {
        let first = hand_outs.first()?;
        let own = |actor: Actor, split_from| Decider {
            actor,
            kind: first.kind,
            name: first.key.clone(),
            identity: None,
            split_from,
        };
        // Handed out before (a second time): wherever it went then.
        if let Some(link) = hand_outs.iter().find_map(|h| self.live_link(&h.link, ts)) {
            return (link.actor != fallback).then(|| own(link.actor, None));
        }
        let inactivity = self.config.inactivity_timeout.as_nanos() as u64;
        self.actor_changed(fallback);
        let active = self
            .active
            .peek_mut(&fallback)
            .filter(|active| ts.saturating_sub(active.last_ns) <= inactivity)?;
        let began = active.began_ns;
        let state = active.hand_outs.as_mut()?;
        let conflict = |h: &HandOut| state.first.iter().any(|(k, l)| *k == h.key && *l != h.link);
        if !state.shared && !hand_outs.iter().any(conflict) {
            return None;
        }
        state.shared = true;
        if state.unreturned >= MAX_UNRETURNED_SPLITS {
            self.counters.links_kept_unreturned += 1;
            return None;
        }
        state.unreturned += 1;
        self.counters.links_ambiguous += 1;
        // Keyed by the value's hash: the same value always opens the same actor's session.
        let actor = self.secret.hash(&[b"actor", b"handed out", &first.link]);
        Some(own(actor, Some((fallback, began))))
    }

    /// A value split off the fallback session `from` came back in a request: one less waiting.
    fn returned(&mut self, hash: [u8; 32], (fallback, began): (Actor, u64)) {
        self.link_changed(hash);
        self.actor_changed(fallback);
        if let Some(link) = self.links.peek_mut(&hash) {
            link.split_from = None;
        }
        if let Some(state) = self
            .active
            .peek_mut(&fallback)
            .filter(|active| active.began_ns == began)
            .and_then(|active| active.hand_outs.as_mut())
        {
            state.unreturned = state.unreturned.saturating_sub(1);
        }
    }

    /// The actor's current session, or a new one (after inactivity, past a day, or first seen).
    /// Returns (id, key kind, key name, whether it is new).
    fn session_for(&mut self, decider: &Decider, ts: u64) -> (String, KeyKind, String, bool) {
        let inactivity = self.config.inactivity_timeout.as_nanos() as u64;
        let max_part = self.config.max_part.as_nanos() as u64;
        let actor = decider.actor;
        // What a day part inherits from the part before it.
        let mut continued = None;
        if let Some(active) = self.active.get_mut(&actor) {
            // Idle after the session's last request, or before its first: an exchange from
            // long before (an older capture imported into a store whose sessions are newer)
            // does not join it.
            let idle = ts
                .saturating_sub(active.last_ns)
                .max(active.start_ns.saturating_sub(ts));
            if idle > inactivity {
                self.counters.split_inactivity += 1;
            } else if ts.saturating_sub(active.start_ns) >= max_part {
                self.counters.split_day += 1;
                // The same session under a new id: its kind and its hand-outs carry over.
                continued = Some((
                    active.began_ns,
                    active.key_kind,
                    std::mem::take(&mut active.key_name),
                    active.hand_outs.take(),
                ));
            } else {
                active.last_ns = active.last_ns.max(ts);
                let (id, name) = (active.id.clone(), active.key_name.clone());
                return (id, active.key_kind, name, false);
            }
        }
        self.counters.sessions_started += 1;
        // Keyed by the actor and the inactivity window the session started in, not its exact
        // start: hosts that share the secret see a user's first requests at slightly different
        // times and must still give the session the same id (the fleet's view merges by id).
        // A later session of the same actor starts a whole timeout after this one's last
        // request, so always in another window: ids stay unique on one host.
        let window = inactivity.max(1);
        let id = hex(&self
            .secret
            .hash(&[b"session", &actor, &(ts / window).to_le_bytes()])[..16]);
        let (began_ns, key_kind, key_name, hand_outs) =
            continued.unwrap_or_else(|| (ts, decider.kind, decider.name.to_string(), None));
        let active = Active {
            id,
            start_ns: ts,
            began_ns,
            last_ns: ts,
            key_kind,
            key_name,
            hand_outs,
        };
        if self.active.len() >= self.config.max_active && !self.active.contains(&actor) {
            self.active.pop_lru();
            self.counters.evicted += 1;
        }
        let (id, name) = (active.id.clone(), active.key_name.clone());
        self.active.put(actor, active);
        (id, key_kind, name, true)
    }

    /// The values this exchange's response hands out, in precedence order: configured
    /// `response.*` keys, cookies the key table recognises (by the request side's order), JSON
    /// tokens.
    fn hand_outs(&self, exchange: &Exchange) -> Vec<HandOut> {
        let Some(response) = exchange.response.as_ref() else {
            return Vec::new();
        };
        let mut values: Vec<(Cow<'static, str>, KeyKind, String)> = Vec::new();
        for path in self
            .config
            .custom_keys
            .iter()
            .filter(|p| p.message == MessageSide::Response)
        {
            if let Some(value) = value_at(exchange, path) {
                values.push((path.to_string().into(), KeyKind::Custom, value));
            }
        }
        if response.meta.header("set-cookie").is_some() {
            // Recognised as the requests' cookies are, so that what is handed out links.
            let mut cookies: Vec<Candidate> = set_cookies(&response.meta)
                .filter_map(|(name, value)| cookie_candidate(&self.config.keys, name, value))
                .collect();
            cookies.sort_by_key(|c| c.order);
            for cookie in cookies {
                let raw = cookie.raw().to_owned();
                values.push((cookie.name, KeyKind::Cookie, raw));
            }
        }
        // One parse of the body for all the properties, and none for a body that cannot hold
        // them: each name contains "token" or "session", and a key can only be spelled without
        // those bytes by escaping a character.
        // Searchers built once: building one costs more than searching a small body.
        static TOKEN: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new(b"token"));
        static SESSION: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new(b"session"));
        let may_hold = |body: &[u8]| {
            TOKEN.find(body).is_some()
                || SESSION.find(body).is_some()
                || memchr::memchr(b'\\', body).is_some()
        };
        if let Some(root) = json_body_if(&response.meta, may_hold) {
            for (property, key_name) in HANDED_OUT_JSON {
                if let Some(value) = json_at(&root, &[property]) {
                    // Tokens travel back as bearer tokens, mostly.
                    values.push(((*key_name).into(), KeyKind::Bearer, value));
                }
            }
        }
        values
            .into_iter()
            .map(|(key, kind, value)| HandOut {
                key,
                kind,
                link: self.secret.hash(&[b"link", value.as_bytes()]),
            })
            .collect()
    }

    /// Links the values handed out to `actor`'s session. Into a fallback session they link
    /// only while it lasts. Those handed out to the fallback actor itself (rather than to a
    /// request that carried a value of its own, as in a cookie refresh) are remembered there,
    /// the first of each key.
    fn link(&mut self, hand_outs: &[HandOut], decider: &Decider, ts: u64) {
        if hand_outs.is_empty() {
            return;
        }
        let actor = decider.actor;
        let fallback_hand_out = decider.kind.is_fallback();
        let mut fallback_session = None;
        if let Some(active) = self
            .active
            .peek_mut(&actor)
            .filter(|active| active.key_kind.is_fallback())
        {
            fallback_session = Some(active.began_ns);
            if fallback_hand_out {
                let state = active.hand_outs.get_or_insert_default();
                for h in hand_outs {
                    if state.first.iter().any(|(key, _)| *key == h.key) {
                        continue;
                    }
                    if state.first.len() < MAX_FIRST_HAND_OUTS {
                        state.first.push((h.key.to_string(), h.link));
                    } else {
                        self.counters.hand_outs_untracked += 1;
                    }
                }
            }
        }
        for h in hand_outs {
            if self.links.len() >= self.config.max_links && !self.links.contains(&h.link) {
                self.links.pop_lru();
            }
            self.links.put(
                h.link,
                Link {
                    actor,
                    fallback_session,
                    split_from: decider.split_from,
                    at_ns: ts,
                },
            );
            self.link_changed(h.link);
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

/// A cookie as a grouping key, if the key table recognises it: a session, token or
/// remember-me cookie by its name, or any cookie that is not excluded and holds a JWT with a
/// subject. A JWT's subject is the key (and the user); the whole JWT is what links.
fn cookie_candidate<'a>(keys: &KeyTable, name: &str, value: &'a str) -> Option<Candidate<'a>> {
    let matched = keys.cookie(name, value);
    if matched == CookieMatch::Excluded {
        return None;
    }
    let subject = looks_like_jwt(value).then(|| jwt_subject(value)).flatten();
    let (class, rank) = match (matched, &subject) {
        (CookieMatch::Key { class, rank }, _) => (class, rank),
        (_, Some(_)) => (CookieClass::Token, u16::MAX),
        _ => return None,
    };
    let order = (cookie_tier(class, subject.is_some()), rank);
    let name = format!("cookie {name}").into();
    Some(match subject {
        Some(subject) => Candidate {
            kind: KeyKind::Jwt,
            name,
            value: subject.into(),
            travels_as: Some(value),
            order,
        },
        None => Candidate {
            kind: KeyKind::Cookie,
            name,
            value: value.into(),
            travels_as: None,
            order,
        },
    })
}

/// A rule's place in a list, for [`Candidate::order`].
fn rank(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

/// The identity a request key names, for the session's user.
fn identity<'a>(candidate: &Candidate<'a>) -> Option<Cow<'a, str>> {
    matches!(candidate.kind, KeyKind::Jwt | KeyKind::Basic).then(|| candidate.value.clone())
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
                order: (Tier::Fallback, 0),
            }
        }
        None => Candidate {
            kind: KeyKind::Ip,
            name: "client ip".into(),
            value: ip_text(ip).into(),
            travels_as: None,
            order: (Tier::Fallback, 0),
        },
    }
}

#[cfg(test)]
mod tests;

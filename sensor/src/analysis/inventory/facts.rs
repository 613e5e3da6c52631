//! What the inventory takes from one exchange: a small struct of facts, extracted once (the
//! body decoded, JSON parsed and scanned here and nowhere else), so the aggregate itself is
//! plain counting and stays testable without building exchanges.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{
    sensitive::{Findings, KindSet, MAX_SCAN, Scanner},
    types::{self, TypeSet, ValueType},
};
use crate::{
    exchange::{Exchange, MessageMeta},
    http::content,
};

macro_rules! auth_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// How a request authenticated, as seen from its headers and query.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum AuthKind { $($variant,)* }

        impl AuthKind {
            pub const ALL: &'static [AuthKind] = &[$(AuthKind::$variant,)*];
            pub fn name(self) -> &'static str {
                match self { $(AuthKind::$variant => $name,)* }
            }
            fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(AuthKind::$variant),)* _ => None }
            }
        }
    };
}

auth_kinds! {
    None => "none",
    Cookie => "cookie",
    Bearer => "bearer",
    Jwt => "jwt",
    Basic => "basic",
    ApiKey => "api_key",
}

/// Auth kinds seen, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthSet(u8);

impl AuthSet {
    pub fn only(kind: AuthKind) -> AuthSet {
        let mut set = AuthSet::default();
        set.insert(kind);
        set
    }
    pub fn insert(&mut self, kind: AuthKind) {
        self.0 |= 1 << kind as u8;
    }
    pub fn contains(self, kind: AuthKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }
    pub fn union(self, other: AuthSet) -> AuthSet {
        AuthSet(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn names(self) -> Vec<&'static str> {
        AuthKind::ALL
            .iter()
            .filter(|k| self.contains(**k))
            .map(|k| k.name())
            .collect()
    }
}

impl Serialize for AuthSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AuthSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut set = AuthSet::default();
        for name in Vec::<String>::deserialize(deserializer)? {
            set.insert(
                AuthKind::from_name(&name)
                    .ok_or_else(|| de::Error::custom(format!("unknown auth kind '{name}'")))?,
            );
        }
        Ok(set)
    }
}

/// Headers that carry an API key or token (lower case).
const API_KEY_HEADERS: &[&str] = &[
    "x-api-key",
    "api-key",
    "apikey",
    "x-apikey",
    "x-auth-token",
    "x-access-token",
    "x-token",
    "x-user-token",
    "x-session-id",
    "x-amz-security-token",
];
/// Query parameters that carry one.
const API_KEY_PARAMS: &[&str] = &["api_key", "apikey", "access_token", "token", "key"];

/// Longest Host kept (a DNS name, a colon and a port); the header is the client's to choose.
const MAX_HOST: usize = 261;
/// Longest method kept (methods are tokens of any length to HTTP).
const MAX_METHOD: usize = 32;

/// `text` cut to at most `max` bytes, on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The host an exchange counts under: its Host header (trimmed, lower case, bounded), else the
/// server's address (`server`, called only then).
pub fn host_key(header: Option<&str>, server: impl FnOnce() -> String) -> String {
    header
        .map(|h| bounded(h.trim(), MAX_HOST).to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(server)
}

/// The method as the inventory keeps it.
pub fn method_key(method: &str) -> &str {
    bounded(method, MAX_METHOD)
}

/// Query parameters and JSON fields taken from one exchange at most.
const MAX_PARAMS_PER_EXCHANGE: usize = 64;

/// Where a parameter was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamIn {
    Query,
    /// A JSON body field (path `a.b`, `items[].id`) or a form field.
    Body,
}

/// The facts of one exchange the inventory counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeFacts {
    /// The Host header (lower case), else the server address.
    pub host: String,
    pub method: String,
    /// The request target as sent.
    pub uri: String,
    pub start_ns: u64,
    pub status: Option<u16>,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub params: Vec<(ParamIn, String, TypeSet)>,
    pub auth: AuthSet,
    pub request_sensitive: KindSet,
    pub response_sensitive: KindSet,
    /// A scan or a parameter list hit its bound.
    pub capped: bool,
}

impl ExchangeFacts {
    /// The facts of `exchange`; None without a request (nothing to attribute it to).
    pub fn from_exchange(exchange: &Exchange, scanner: &mut Scanner) -> Option<ExchangeFacts> {
        let mut facts = Self::head(exchange)?;
        facts.scan(exchange, scanner, true);
        Some(facts)
    }

    /// What identifies the exchange's endpoint, its timings and sizes, before any scan; None
    /// without a request.
    pub fn head(exchange: &Exchange) -> Option<ExchangeFacts> {
        let request = exchange.request.as_ref()?;
        let host = host_key(request.meta.header("host"), || exchange.server.to_string());
        Some(ExchangeFacts {
            host,
            method: method_key(&request.method).to_owned(),
            uri: request.uri.clone(),
            start_ns: exchange.start_ns(),
            status: exchange.response.as_ref().and_then(|r| r.status),
            ttfb_ms: exchange.ttfb_ms(),
            duration_ms: exchange.duration_ms(),
            request_bytes: request.meta.body_len,
            response_bytes: exchange.response.as_ref().map_or(0, |r| r.meta.body_len),
            ..ExchangeFacts::default()
        })
    }

    /// Parameters, auth kinds and sensitive kinds. `bodies`: whether bodies are scanned for
    /// sensitive data too (the inventory samples them on busy endpoints); headers, the query
    /// and the parameters in bodies always are.
    pub fn scan(&mut self, exchange: &Exchange, scanner: &mut Scanner, bodies: bool) {
        let Some(request) = exchange.request.as_ref() else {
            return;
        };
        let facts = self;
        let mut request_findings = scanner.scan_message(request.meta.all_headers(), None, b"");
        facts.auth = auth_of(&request.meta);
        if let Some((_, query)) = request.uri.split_once('?') {
            let query = query.split('#').next().unwrap_or(query);
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                request_findings.merge(scanner.scan_field(&name, &value));
                if API_KEY_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p)) && !value.is_empty()
                {
                    facts.auth.insert(if looks_like_jwt(&value) {
                        AuthKind::Jwt
                    } else {
                        AuthKind::ApiKey
                    });
                }
                facts.push_param(ParamIn::Query, &name, types::infer_text(&value));
            }
        }
        if facts.auth.is_empty() {
            facts.auth.insert(AuthKind::None);
        }

        if let Some(body) = decoded_body(&request.meta) {
            let content_type = request.meta.header("content-type");
            if bodies {
                request_findings.merge(scanner.scan_message([], content_type, &body));
            }
            let ct = content_type.unwrap_or("").to_ascii_lowercase();
            if ct.contains("json") || (ct.is_empty() && body.first() == Some(&b'{')) {
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let mut fields = Vec::new();
                    facts.capped |= types::flatten_json(&json, &mut fields);
                    for (path, t) in fields {
                        facts.push_param(ParamIn::Body, &path, t);
                    }
                }
            } else if ct.contains("x-www-form-urlencoded") {
                for (name, value) in form_urlencoded::parse(&body) {
                    request_findings.merge(scanner.scan_field(&name, &value));
                    facts.push_param(ParamIn::Body, &name, types::infer_text(&value));
                }
            }
        }
        facts.request_sensitive = request_findings.kinds;
        facts.capped |= request_findings.capped;

        if let Some(response) = &exchange.response {
            let body = match bodies {
                true => decoded_body(&response.meta).unwrap_or_default(),
                false => Default::default(),
            };
            let found: Findings = scanner.scan_message(
                response.meta.all_headers(),
                response.meta.header("content-type"),
                &body,
            );
            facts.response_sensitive = found.kinds;
            facts.capped |= found.capped;
        }
    }

    /// One entry per place and name, whatever the repeats (`tags=a&tags=b`, the elements of
    /// an array): the inventory counts exchanges that carry a field, not its values.
    fn push_param(&mut self, place: ParamIn, name: &str, t: ValueType) {
        if let Some((_, _, types)) = self
            .params
            .iter_mut()
            .find(|(p, n, _)| *p == place && n == name)
        {
            types.insert(t);
            return;
        }
        if self.params.len() >= MAX_PARAMS_PER_EXCHANGE {
            self.capped = true;
            return;
        }
        self.params.push((place, name.to_owned(), TypeSet::of(t)));
    }
}

fn auth_of(meta: &MessageMeta) -> AuthSet {
    let mut auth = AuthSet::default();
    if let Some(value) = meta.header("authorization") {
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let credentials = credentials.trim();
        auth.insert(match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "jwt" if looks_like_jwt(credentials) => AuthKind::Jwt,
            "bearer" => AuthKind::Bearer,
            "basic" | "digest" => AuthKind::Basic,
            _ => AuthKind::ApiKey,
        });
    }
    if meta.all_headers().any(|(name, value)| {
        !value.is_empty() && API_KEY_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
    }) {
        auth.insert(AuthKind::ApiKey);
    }
    if meta.header("cookie").is_some_and(|c| !c.trim().is_empty()) {
        auth.insert(AuthKind::Cookie);
    }
    auth
}

/// Three base64url parts, the first two JSON objects (`eyJ` is `{"`).
fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    header.starts_with("eyJ") && payload.starts_with("eyJ")
}

/// The body as the application sees it: content-decoded, bounded by the scan cap.
fn decoded_body(meta: &MessageMeta) -> Option<Cow<'_, [u8]>> {
    if meta.body.is_empty() {
        return None;
    }
    let encoding = meta.header("content-encoding").unwrap_or("");
    // The scan looks at MAX_SCAN bytes; one more tells it the body went on.
    let limit = MAX_SCAN + 1;
    if encoding
        .split(',')
        .all(|c| c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity"))
    {
        return Some(Cow::Borrowed(&meta.body[..meta.body.len().min(limit)]));
    }
    content::decode(&meta.body, encoding, limit)
        .ok()
        .map(|d| Cow::Owned(d.bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exchange::{Request, Response};

    /// An exchange as a test builds it: request and response heads, bodies and timings (one
    /// call per exchange reads best with every part named in place).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exchange(
        method: &str,
        uri: &str,
        request_headers: &[(&str, &str)],
        request_body: &[u8],
        status: u16,
        response_body: &[u8],
        start_ns: u64,
        duration_ms: u64,
    ) -> Exchange {
        let headers = |h: &[(&str, &str)]| {
            h.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        Exchange {
            client: "10.0.0.1:40000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            request: Some(Request {
                method: method.to_owned(),
                uri: uri.to_owned(),
                meta: MessageMeta {
                    start_ns,
                    end_ns: start_ns + 1000,
                    version: "1.1",
                    headers: headers(request_headers),
                    body_len: request_body.len() as u64,
                    body: request_body.to_vec(),
                    ..MessageMeta::default()
                },
            }),
            response: Some(Response {
                status: Some(status),
                reason: "OK".to_owned(),
                meta: MessageMeta {
                    start_ns: start_ns + duration_ms * 500_000,
                    end_ns: start_ns + duration_ms * 1_000_000,
                    version: "1.1",
                    headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
                    body_len: response_body.len() as u64,
                    body: response_body.to_vec(),
                    ..MessageMeta::default()
                },
                ..Response::default()
            }),
            forwarding: Default::default(),
            tls: false,
            upstream: None,
            stream_id: None,
        }
    }

    #[test]
    fn facts_of_an_exchange() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let bearer = format!("Bearer {jwt}");
        let e = exchange(
            "POST",
            "/users?verbose=true&limit=10&api_key=abc&tags=a&tags=1",
            &[
                ("Host", "API.example.com"),
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
                ("Cookie", "sid=1"),
            ],
            br#"{"email":"a@b.io","password":"x","age":3}"#,
            201,
            br#"{"id":"550e8400-e29b-41d4-a716-446655440000","card":"4111111111111111"}"#,
            1_000_000_000,
            12,
        );
        let facts = ExchangeFacts::from_exchange(&e, &mut Scanner::new()).unwrap();
        assert_eq!(facts.host, "api.example.com");
        assert_eq!(facts.status, Some(201));
        assert_eq!(facts.duration_ms, Some(12.0));
        assert_eq!(facts.auth.names(), ["cookie", "jwt", "api_key"]);
        assert_eq!(facts.request_sensitive.names(), ["email", "password"]);
        assert_eq!(facts.response_sensitive.names(), ["payment_card"]);
        let params: Vec<_> = facts
            .params
            .iter()
            .map(|(p, n, t)| format!("{p:?}:{n}:{}", serde_json::to_string(t).unwrap()))
            .collect();
        assert_eq!(
            params,
            [
                r#"Query:verbose:["boolean"]"#,
                r#"Query:limit:["integer"]"#,
                r#"Query:api_key:["string"]"#,
                r#"Query:tags:["integer","string"]"#,
                r#"Body:age:["integer"]"#,
                r#"Body:email:["email"]"#,
                r#"Body:password:["string"]"#
            ]
        );

        let long_host = format!("{}.example", "é".repeat(300));
        let odd = exchange("GET", "/", &[("Host", &long_host)], b"", 200, b"", 0, 1);
        let facts = ExchangeFacts::from_exchange(&odd, &mut Scanner::new()).unwrap();
        assert!(facts.host.len() <= MAX_HOST && facts.host.starts_with('é'));

        let anonymous = exchange("GET", "/", &[], b"", 200, b"", 0, 1);
        let facts = ExchangeFacts::from_exchange(&anonymous, &mut Scanner::new()).unwrap();
        assert_eq!(facts.auth.names(), ["none"]);
        assert_eq!(facts.host, "10.0.0.2:80");
        let set: AuthSet = serde_json::from_str(r#"["basic","none"]"#).unwrap();
        assert_eq!(set.names(), ["none", "basic"]);
    }
}

//! The points of a request a client controls, each with its key path and its value as the
//! application would see it (decoded once, the way its framework does).
//!
//! Bounded: at most [`MAX_POINTS`] values and `budget` bytes of them per request, JSON walked
//! at most [`MAX_JSON_DEPTH`] deep; the walk reports whether it had to stop.

use std::borrow::Cow;

use serde_json::Value;

use crate::{exchange::Request, http::content};

/// Values inspected per request at most, whatever their size: a form with 100 000 empty
/// fields costs per field, not per byte.
pub const MAX_POINTS: usize = 512;
/// JSON nesting walked at most (deeper values are left uninspected and the walk is capped).
pub const MAX_JSON_DEPTH: usize = 32;

/// Where a value comes from, as rules name it (`points` in rules.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The whole decoded path.
    Path,
    /// One decoded path segment (libinjection's unit; rules see the whole path).
    Segment,
    Query,
    Cookie,
    /// A client-input header other than User-Agent.
    Header,
    UserAgent,
    Form,
    Json,
    /// The whole body of an XML request.
    Xml,
    /// A body of another type, as text.
    Body,
    /// A parameter name (query, form) or a JSON object key.
    Name,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Path,
        Kind::Segment,
        Kind::Query,
        Kind::Cookie,
        Kind::Header,
        Kind::UserAgent,
        Kind::Form,
        Kind::Json,
        Kind::Xml,
        Kind::Body,
        Kind::Name,
    ];

    /// The name used in rules.toml.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Path => "path",
            Kind::Segment => "segment",
            Kind::Query => "query",
            Kind::Cookie => "cookie",
            Kind::Header => "header",
            Kind::UserAgent => "user_agent",
            Kind::Form => "form",
            Kind::Json => "json",
            Kind::Xml => "xml",
            Kind::Body => "body",
            Kind::Name => "name",
        }
    }

    /// A bit for sets of kinds.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// One inspected value.
#[derive(Debug)]
pub struct Point<'a> {
    pub kind: Kind,
    /// Where the value is, up to its name (`request.query.`, `request.path`).
    pub prefix: &'static str,
    /// Its name after `prefix` (a parameter, a header, a JSON path), borrowed where it can be:
    /// the key path is only needed for findings, and most requests have none.
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
    /// A secret-named field (or a cookie): its excerpt must be hashed.
    pub secret: bool,
}

impl Point<'_> {
    /// Key path (`request.query.id`).
    pub fn path(&self) -> String {
        [self.prefix, &self.name].concat()
    }
}

/// Which headers carry client input, and which names are secrets.
pub struct Selection<'c> {
    pub headers: &'c [String],
    pub is_secret: &'c dyn Fn(&str) -> bool,
}

/// All points of `request`, in a fixed order (path, query, cookies, headers, body). Returns
/// whether the walk stopped at a bound (points or bytes).
pub fn collect<'r>(
    request: &'r Request,
    selection: &Selection<'_>,
    budget: usize,
    out: &mut Vec<Point<'r>>,
) -> bool {
    let mut walk = Walk {
        out,
        budget,
        capped: false,
    };
    let uri = request.uri.as_str();
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, q.split('#').next().unwrap_or(q)),
        None => (uri.split('#').next().unwrap_or(uri), ""),
    };
    walk.push(Kind::Path, "request.path", "", Cow::Borrowed(path), false);
    // Segments only where one could hold an injection (anything beyond a plain word or id):
    // libinjection runs per segment, and most paths are `/users/42`.
    for segment in path.split('/').filter(|s| !is_plain(s)) {
        walk.push(
            Kind::Segment,
            "request.path",
            "",
            Cow::Borrowed(segment),
            false,
        );
    }
    walk.pairs(Kind::Query, "request.query.", query, selection.is_secret);

    for (name, value) in request.meta.all_headers() {
        if name.eq_ignore_ascii_case("cookie") {
            for (cookie, value) in value
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .map(|(n, v)| (n.trim(), v.trim().trim_matches('"')))
                .filter(|(_, v)| !v.is_empty())
            {
                // Every cookie value is treated as a secret: session cookies are credentials
                // and which cookie is one is the application's business.
                walk.push(
                    Kind::Cookie,
                    "request.cookie.",
                    cookie,
                    Cow::Borrowed(value),
                    true,
                );
            }
            continue;
        }
        let kind = if name.eq_ignore_ascii_case("user-agent") {
            Kind::UserAgent
        } else if CLIENT_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
            || selection
                .headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            Kind::Header
        } else {
            continue;
        };
        walk.push(
            kind,
            "request.header.",
            name,
            Cow::Borrowed(value),
            (selection.is_secret)(name),
        );
    }

    walk.body(request, selection.is_secret);
    walk.capped
}

/// Headers that carry client input besides User-Agent and cookies (the list).
const CLIENT_HEADERS: &[&str] = &["referer", "x-forwarded-for", "origin"];

/// Where JSON body values are (their path follows).
const JSON_PREFIX: &str = "request.body.json";

/// Body bytes decoded for inspection at most (a compressed body may expand to far more).
const BODY_DECODE_LIMIT: usize = 256 * 1024;

/// A value no rule can match: letters, digits, `-`, `_`, `.` (ids, words, file names).
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

struct Walk<'o, 'r> {
    out: &'o mut Vec<Point<'r>>,
    budget: usize,
    capped: bool,
}

impl<'r> Walk<'_, 'r> {
    /// Adds a point if the bounds allow.
    fn push(
        &mut self,
        kind: Kind,
        prefix: &'static str,
        name: impl Into<Cow<'r, str>>,
        value: Cow<'r, str>,
        secret: bool,
    ) {
        if value.is_empty() {
            return;
        }
        if self.out.len() >= MAX_POINTS || value.len() > self.budget {
            self.capped = true;
            return;
        }
        self.budget -= value.len();
        self.out.push(Point {
            kind,
            prefix,
            name: name.into(),
            value,
            secret,
        });
    }

    /// `name=value&...` pairs (a query string or a form body), decoded once with `+` as space
    /// (what the application's framework does); borrowed where nothing was escaped.
    fn pairs(
        &mut self,
        kind: Kind,
        prefix: &'static str,
        text: &'r str,
        is_secret: &dyn Fn(&str) -> bool,
    ) {
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            self.pair(kind, prefix, name, value, is_secret);
        }
    }

    fn pair(
        &mut self,
        kind: Kind,
        prefix: &'static str,
        name: Cow<'r, str>,
        value: Cow<'r, str>,
        is_secret: &dyn Fn(&str) -> bool,
    ) {
        // Operators in names (`user[$ne]=`) are NoSQL injection; names are inspected only when
        // they are more than a plain word.
        if !is_plain(&name) {
            self.push(Kind::Name, prefix, name.clone(), name.clone(), false);
        }
        let secret = is_secret(&name);
        self.push(kind, prefix, name, value, secret);
    }

    fn body(&mut self, request: &'r Request, is_secret: &dyn Fn(&str) -> bool) {
        let meta = &request.meta;
        if meta.body.is_empty() {
            return;
        }
        let encoding = meta.header("content-encoding").unwrap_or("");
        let body: Cow<'r, [u8]> = if encoding
            .split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        {
            Cow::Borrowed(&meta.body)
        } else {
            match content::decode(&meta.body, encoding, BODY_DECODE_LIMIT) {
                Ok(decoded) => Cow::Owned(decoded.bytes),
                // Undecodable: inspect what was sent, as text.
                Err(_) => Cow::Borrowed(&meta.body),
            }
        };
        let content_type = meta
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = match body {
            Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        };
        let trimmed = text.trim_start();
        if content_type.contains("json") || (content_type.is_empty() && trimmed.starts_with('{')) {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                // The JSON path after `request.body.json`.
                let mut path = String::new();
                self.json(&value, &mut path, 0, false, is_secret);
                return;
            }
        } else if content_type.contains("x-www-form-urlencoded") {
            match text {
                Cow::Borrowed(text) => {
                    self.pairs(Kind::Form, "request.body.form.", text, is_secret)
                }
                // A decoded body is owned here: so are its pairs.
                Cow::Owned(text) => {
                    for (name, value) in form_urlencoded::parse(text.as_bytes()) {
                        let (name, value) = (name.into_owned(), value.into_owned());
                        self.pair(
                            Kind::Form,
                            "request.body.form.",
                            Cow::Owned(name),
                            Cow::Owned(value),
                            is_secret,
                        );
                    }
                }
            }
            return;
        } else if content_type.contains("xml")
            || trimmed.starts_with("<?xml")
            || trimmed.starts_with("<!DOCTYPE")
        {
            self.push(Kind::Xml, "request.body.xml", "", text, false);
            return;
        }
        self.push(Kind::Body, "request.body", "", text, false);
    }

    fn json(
        &mut self,
        value: &Value,
        path: &mut String,
        depth: usize,
        secret: bool,
        is_secret: &dyn Fn(&str) -> bool,
    ) {
        if depth > MAX_JSON_DEPTH {
            self.capped = true;
            return;
        }
        match value {
            Value::String(text) => {
                self.push(
                    Kind::Json,
                    JSON_PREFIX,
                    path.clone(),
                    Cow::Owned(text.clone()),
                    secret,
                );
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('.');
                    path.push_str(&i.to_string());
                    self.json(item, path, depth + 1, secret, is_secret);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    if !is_plain(key) {
                        self.push(
                            Kind::Name,
                            JSON_PREFIX,
                            path.clone(),
                            Cow::Owned(key.clone()),
                            false,
                        );
                    }
                    self.json(item, path, depth + 1, secret || is_secret(key), is_secret);
                    path.truncate(len);
                }
            }
            // Numbers, booleans and null carry no payload.
            _ => {}
        }
    }
}

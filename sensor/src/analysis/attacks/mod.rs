//! Attack detection per request: which inputs of a request carry an attack payload, of which
//! class, found by which rule.
//!
//! A request's client-controlled points ([`points`]: path, query, cookies, input headers, form
//! fields, JSON values at any depth, XML bodies) are normalised the way attackers evade filters
//! ([`normalize`]: repeated URL-decoding, `+`, JSON escapes, HTML references for XSS, NUL
//! removal; rules match case-insensitively), then
//!
//! - SQL injection and XSS go through libinjection ([`libinjection`]),
//! - the other classes through rules kept as data ([`rules`], `rules.toml`), one `RegexSet`
//!   scan per value (linear time: no rule can hang on hostile input),
//! - framing abuse (`protocol`) comes from the HTTP decoder's [`Anomalies`].
//!
//! Work is bounded per request: at most `max_bytes` of values and [`points::MAX_POINTS`] values
//! are inspected and [`MAX_FINDINGS`] findings kept; [`Inspection`] says when a bound cut.
//! The detector is built once ([`Detector::new`]) and shared; inspecting takes `&self`.
//!
//! [`Anomalies`]: crate::exchange::Anomalies

pub mod libinjection;
pub mod normalize;
pub mod points;
pub mod rules;

use crate::exchange::{Anomalies, Request};
use points::{Kind, Point, Selection};

pub use crate::record::{AttackClass, Finding};

/// What inspecting one request found, and whether a bound cut the inspection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// In request order (path, query, cookies, headers, body), at most one per class and point
    /// (protocol findings: one per anomaly, at `request`).
    pub findings: Vec<Finding>,
    /// Value bytes inspected.
    pub bytes_inspected: usize,
    /// Some values were left uninspected: the byte budget, the number of values or the JSON
    /// depth ran out (the pipeline counts these).
    pub bytes_capped: bool,
    /// More findings than [`MAX_FINDINGS`]: the rest were dropped (counted too).
    pub findings_capped: bool,
}

/// Excerpts are cut to this many bytes (on a char boundary).
pub const MAX_EXCERPT: usize = 128;
/// Findings kept per request: a request full of payloads is flagged as well by 32 as by 300.
pub const MAX_FINDINGS: usize = 32;
/// Default `attacks.max_bytes`: value bytes inspected per request.
pub const DEFAULT_MAX_BYTES: usize = crate::config::ATTACKS_MAX_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum AttacksError {
    #[error("attack rules: {0}")]
    Rules(String),
    #[error("attack prefilter")]
    Prefilter(#[source] aho_corasick::BuildError),
}

/// What the detector needs from the configuration (`[attacks]`, `[secrets]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttacksConfig {
    /// Request headers inspected besides User-Agent, Referer, X-Forwarded-For, Origin, cookies.
    pub headers: Vec<String>,
    /// Value bytes inspected per request at most.
    pub max_bytes: usize,
    /// Names (headers, fields) whose values are secrets beyond the built-in table.
    pub secret_names: Vec<String>,
}

impl Default for AttacksConfig {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            secret_names: Vec::new(),
        }
    }
}

impl AttacksConfig {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            headers: config.attacks.headers.clone(),
            max_bytes: config.attacks.max_bytes,
            secret_names: config.secrets.names.clone(),
        }
    }
}

/// Input names whose values are credentials: a finding there keeps its class and point, and
/// its excerpt becomes a keyed hash. Exact names, lower-case: the record's
/// [`SECRET_NAMES`](crate::record::SECRET_NAMES) (what redaction hashes) and these, which the
/// detector sees besides (headers, cookies, payment and one-time codes).
const MORE_SECRET_NAMES: &[&str] = &[
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-session-id",
    "x-csrf-token",
    "x-xsrf-token",
    "pass",
    "passphrase",
    "otp",
    "pin",
    "cvv",
    "card_number",
];

/// Parts of names that make any name a secret (`new_password`, `X-Refresh-Token`).
const SECRET_PARTS: &[&str] = &[
    "password", "passwd", "token", "secret", "apikey", "api_key", "api-key",
];

/// The detector: rules compiled once, shared by every request.
pub struct Detector {
    rules: rules::Rules,
    gate: libinjection::Gate,
    headers: Vec<String>,
    max_bytes: usize,
    secret_names: Vec<String>,
    /// [`SECRET_PARTS`] in any ASCII case, in one pass over a name.
    secret_parts: aho_corasick::AhoCorasick,
}

impl Detector {
    pub fn new(config: &AttacksConfig) -> Result<Self, AttacksError> {
        let specs = rules::specs(rules::RULES_TOML)?;
        Ok(Self {
            rules: rules::Rules::compile(&specs)?,
            gate: libinjection::Gate::new().map_err(AttacksError::Prefilter)?,
            headers: config.headers.clone(),
            max_bytes: config.max_bytes,
            secret_names: config
                .secret_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            secret_parts: aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(SECRET_PARTS)
                .map_err(AttacksError::Prefilter)?,
        })
    }

    /// Whether the values of inputs named `name` are secrets (their excerpts are hashed).
    /// Called for every header and parameter: no allocation.
    pub fn is_secret_name(&self, name: &str) -> bool {
        let named = |secret: &str| secret.eq_ignore_ascii_case(name);
        self.secret_parts.is_match(name)
            || crate::record::SECRET_NAMES.iter().any(|s| named(s))
            || MORE_SECRET_NAMES.iter().any(|s| named(s))
            || self.secret_names.iter().any(|s| named(s))
    }

    /// Inspects a request. `secret_excerpt` turns the value of a secret input into what may be
    /// stored instead (the sessions' keyed hash), and is called only for findings there.
    pub fn inspect(
        &self,
        request: &Request,
        secret_excerpt: &dyn Fn(&str) -> String,
    ) -> Inspection {
        let mut inspection = Inspection::default();
        let mut points = Vec::new();
        let is_secret = |name: &str| self.is_secret_name(name);
        let selection = Selection {
            headers: &self.headers,
            is_secret: &is_secret,
        };
        inspection.bytes_capped = points::collect(request, &selection, self.max_bytes, &mut points);
        let host = request.meta.header("host");
        for point in &points {
            inspection.bytes_inspected += point.value.len();
            let same_site = names_own_site(point, host);
            self.inspect_point(point, same_site, host, secret_excerpt, &mut inspection);
        }
        protocol(request, &mut inspection);
        inspection
    }

    /// `same_site`: the point is a Referer or Origin naming the request's own host, which is
    /// no server-side request to anywhere (an intranet site on a private address).
    fn inspect_point(
        &self,
        point: &Point<'_>,
        same_site: bool,
        host: Option<&str>,
        secret_excerpt: &dyn Fn(&str) -> String,
        inspection: &mut Inspection,
    ) {
        let value = normalize::url_decoded(&point.value);
        let mut report = |class: AttackClass, rule: &str, at: usize, text: &str| {
            let findings = &mut inspection.findings;
            if findings
                .iter()
                .any(|f| f.class == class && f.point == point.path())
            {
                return;
            }
            if findings.len() >= MAX_FINDINGS {
                inspection.findings_capped = true;
                return;
            }
            let excerpt = if point.secret {
                secret_excerpt(text)
            } else {
                normalize::excerpt(text, at, MAX_EXCERPT)
            };
            findings.push(Finding {
                class,
                point: point.path(),
                excerpt,
                rule: rule.to_owned(),
            });
        };

        let header = matches!(point.kind, Kind::Header | Kind::UserAgent);
        if libinjection_applies(point.kind)
            && let Some(libinjection::Verdict::Sqli(fingerprint)) = self.gate.sqli(&value, header)
        {
            let at = first_operator(&value);
            report(
                AttackClass::Sqli,
                &format!("libinjection-sqli:{fingerprint}"),
                at,
                &value,
            );
        }
        // XSS hides behind HTML references, which only a browser decodes: the decoded form is
        // inspected for XSS alone (`&lt;` is prose elsewhere).
        let html = normalize::for_xss(&value);
        if libinjection_applies(point.kind) && self.gate.xss(&html, header).is_some() {
            report(
                AttackClass::Xss,
                "libinjection-xss",
                first_operator(&html),
                &html,
            );
        }
        if point.kind == Kind::Segment || !worth_rules(point.kind, &value) {
            return;
        }
        if let Some(at) = offsite_redirect(point, &value, host) {
            report(
                AttackClass::OpenRedirect,
                "open-redirect-offsite",
                at,
                &value,
            );
        }
        for (text, xss_only) in [(&*value, false), (&*html, true)] {
            if xss_only && matches!(html, std::borrow::Cow::Borrowed(_)) {
                // Nothing was decoded.
                continue;
            }
            if !self.rules.set.is_match(text) {
                continue;
            }
            for index in self.rules.set.matches(text).iter() {
                let Some(rule) = self.rules.rules.get(index) else {
                    continue;
                };
                if rule.kinds & point.kind.bit() == 0
                    || (xss_only && rule.class != AttackClass::Xss)
                    || (same_site && rule.class == AttackClass::Ssrf)
                {
                    continue;
                }
                let at = rule.regex.find(text).map_or(0, |m| m.start());
                report(rule.class, &rule.id, at, text);
            }
        }
    }
}

/// Whether `point` is a Referer or Origin header whose URL's authority is `host`.
fn names_own_site(point: &Point<'_>, host: Option<&str>) -> bool {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return false;
    };
    let header = point.kind == Kind::Header
        && (point.name.eq_ignore_ascii_case("referer")
            || point.name.eq_ignore_ascii_case("origin"));
    let authority = point
        .value
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest));
    header && authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Parameters whose value an application sends the browser to (after a login, a checkout, a
/// logout). OAuth's `redirect_uri` is not among them: it names another site by design.
const REDIRECT_NAMES: &[&str] = &[
    "next",
    "redirect",
    "redirect_url",
    "redirect_to",
    "redirecturl",
    "redirectto",
    "return",
    "return_to",
    "returnto",
    "return_url",
    "returnurl",
    "continue",
    "goto",
    "dest",
    "destination",
    "forward",
    "rurl",
];

/// Where an open redirect starts in `value`: a query or form parameter named like a redirect
/// target holding an absolute URL (or `//host`) of another site than the request's `Host`.
/// Another site is one whose host is neither the request's nor a parent or child domain of it
/// (`www.shop.example` and `api.shop.example` share `shop.example`).
fn offsite_redirect(point: &Point<'_>, value: &str, host: Option<&str>) -> Option<usize> {
    if !matches!(point.kind, Kind::Query | Kind::Form) {
        return None;
    }
    let name = point.name.rsplit('.').next()?;
    if !REDIRECT_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return None;
    }
    let trimmed = value.trim_start();
    let at = value.len() - trimmed.len();
    let lower = trimmed.to_ascii_lowercase();
    let rest = ["https://", "http://", "//"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))?;
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or(rest);
    let target = authority.rsplit('@').next().unwrap_or(authority);
    let target = strip_port(target);
    if target.is_empty() {
        return None;
    }
    let own = host.map(|h| strip_port(h).to_ascii_lowercase());
    let related = |a: &str, b: &str| {
        a == b
            || a.strip_suffix(b).is_some_and(|p| p.ends_with('.'))
            || b.strip_suffix(a).is_some_and(|p| p.ends_with('.'))
    };
    match own {
        Some(own) if related(target, &own) || shares_parent(target, &own) => None,
        _ => Some(at),
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether two host names share a parent domain of at least two labels (`www.shop.example`,
/// `api.shop.example`). Without the public-suffix list `a.co.uk` and `b.co.uk` would pass as
/// related: a miss, never a false finding.
fn shares_parent(a: &str, b: &str) -> bool {
    let parent = |h: &str| h.split_once('.').map(|(_, p)| p.to_owned());
    match (parent(a), parent(b)) {
        (Some(pa), Some(pb)) => pa == pb && pa.contains('.'),
        _ => false,
    }
}

/// Where an injection likely starts, for libinjection's verdicts (which give no position):
/// the first character beyond a word (a quote, a bracket, an operator).
fn first_operator(value: &str) -> usize {
    value
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'.')))
        .unwrap_or(0)
}

/// Where libinjection looks: values an application could put into SQL or a page. Not whole
/// paths (segments instead), parameter names, XML or other raw bodies.
fn libinjection_applies(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Segment
            | Kind::Query
            | Kind::Cookie
            | Kind::Header
            | Kind::UserAgent
            | Kind::Form
            | Kind::Json
    )
}

/// Whether any rule could match: every rule needs a character beyond letters, digits, spaces
/// and `-_.,` (an operator, a slash, a quote, a brace...), except on paths and user agents
/// (scanners' names and probe paths).
fn worth_rules(kind: Kind, value: &str) -> bool {
    matches!(kind, Kind::Path | Kind::UserAgent)
        || value
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'_' | b'.' | b',')))
}

/// `protocol` findings from the decoder's framing anomalies.
fn protocol(request: &Request, inspection: &mut Inspection) {
    let anomalies: Anomalies = request.meta.anomalies;
    if anomalies.is_empty() {
        return;
    }
    let mut framing = String::new();
    for (name, value) in request.meta.all_headers() {
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            if !framing.is_empty() {
                framing.push_str("; ");
            }
            framing.push_str(name);
            framing.push_str(": ");
            framing.push_str(value);
        }
    }
    let excerpt = normalize::excerpt(&framing, 0, MAX_EXCERPT);
    for rule in anomalies.names() {
        if inspection.findings.len() >= MAX_FINDINGS {
            inspection.findings_capped = true;
            return;
        }
        inspection.findings.push(Finding {
            class: AttackClass::Protocol,
            point: "request".into(),
            excerpt: excerpt.clone(),
            rule: rule.into(),
        });
    }
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod cost_tests;
#[cfg(test)]
mod tests;

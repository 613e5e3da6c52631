//! The configuration file: one TOML file, every key optional, defaults that work without it.
//!
//! Unknown keys and invalid values are rejected with the file, the line and column, and the
//! reason. Command-line flags override what the file says.
//!
//! ```toml
//! [capture]
//! interfaces = ["eth0"]          # default: every interface that is up
//! ports = [80, 8080]             # default: "auto" (the host's listeners that speak HTTP)
//! exclude_ports = [9100]         # never watched
//! all_ports = false
//! attach = "auto"                # auto | tcx | clsact | socket
//! snaplen = 65536                # payload bytes per TCP segment
//! ring_size = 16777216           # kernel ring buffer, a power of two
//! body_cap = 16384               # body bytes kept per HTTP message
//! decode_threads = 0             # threads decoding connections beside the analysis', 0-64
//! tls = true                     # TLS plaintext through uprobes on OpenSSL (see README)
//! tls_ports = [443, 8443]        # servers listening here are read in their TLS library
//!
//! [storage]
//! data_dir = "/var/lib/apisessions"
//! retention = "7d"
//!
//! [sessions]
//! inactivity_timeout = "30m"
//! keys = ["request.cookie.sid", "request.header.X-User-Id"]   # tried before the built-in keys
//! cookies = ["myapp_auth", "*_login"]  # session cookies besides the built-in ones (names, patterns)
//! exclude_cookies = ["tracking_*"]     # cookies that are never a key
//! headers = ["X-Tenant-Token"]         # token headers besides the built-in ones
//!
//! [[parameters]]
//! name = "user"
//! path = "request.header.Authorization.jwt.sub"
//! type = "user"                  # user | role (optional)
//! hashed = false
//!
//! [secrets]
//! store_raw = false              # true keeps raw secrets on disk: only for lab use
//! names = ["x-internal-token"]   # more header/field names to treat as secrets
//!
//! [proxy]
//! trusted = ["127.0.0.0/8", "::1", "10.0.0.0/8"]   # peers whose forwarding headers are believed
//! trust_host_addresses = true    # and this host's own addresses
//! headers = ["x-forwarded-for", "forwarded", "x-real-ip"]   # read in order, the first present decides
//! join = true                    # one exchange per client request when both hops are captured
//! join_window = "3s"             # how long a proxy's upstream exchange waits for its client's
//!
//! [abuse]                        # signals and risk per session (see analysis::abuse)
//! report_score = 25              # signals listed with a session from this score (0-100)
//! enumeration = { low = 10, flag = 30, high = 100 }   # score 0 / 50 / 100 at these counts
//! enumeration_window = "2m"
//! [abuse.weights]                # weight of a signal in the risk, 0-1
//! attacks = 1.0
//!
//! [central]                      # ship to a ClickHouse server (see docs/CENTRAL.md)
//! url = "http://clickhouse.example:8123"   # http or https; port 8123 by default
//! database = "apisessions"
//! user = "default"
//! password_file = "/etc/apisessions/central.pass"   # or APISESSIONS_CENTRAL_PASSWORD
//! host_id = "api-1"              # default: the host name
//! batch_size = 10000             # exchanges per insert at most
//! interval = "1s"                # how long a partial batch waits
//! query = false                  # true: the query commands answer from the central store
//!
//! [[api.specs]]                  # OpenAPI documents (3.0, 3.1, Swagger 2.0; YAML or JSON)
//! host = "api.example.com"       # the Host they describe (any port unless one is given)
//! file = "specs/api.yaml"        # relative to this file's directory
//!
//! [inventory]
//! slow_floor_ms = 100            # never slow below this, whatever the endpoint's p99
//! slow_min_samples = 50          # timed calls an endpoint needs before anything is slow
//! max_endpoints = 10000          # (host, method, template) tracked
//! max_query_params = 64          # per endpoint
//! max_body_fields = 128          # per endpoint
//!
//! [inventory.templates]          # the template learner (see analysis::inventory::templates)
//! min_distinct = 5
//! min_distinct_per_100 = 50
//! many_distinct = 48
//! min_samples = 5
//! max_values = 64
//! max_positions = 4096
//! hot_min = 3
//! hot_factor = 4
//!
//! [attacks]
//! enabled = true                 # detect attacks in every request
//! headers = ["x-search"]         # headers inspected besides User-Agent, Referer, X-Forwarded-For, Origin
//! max_bytes = 65536              # value bytes inspected per request (past it: counted, not inspected)
//! ```

use std::{
    fmt, fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, de};

pub mod abuse;
pub mod inventory;
pub mod reload;

use crate::capture::AttachMode;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `file:line:column: reason`, as compilers print it, so editors can jump there.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: CaptureSection,
    pub storage: StorageSection,
    pub sessions: SessionsSection,
    pub parameters: Vec<Parameter>,
    pub secrets: SecretsSection,
    pub proxy: ProxySection,
    pub attacks: AttacksSection,
    pub abuse: abuse::AbuseConfig,
    /// Shipping to (and querying) a central ClickHouse store; none without a `[central]` table.
    pub central: Option<CentralSection>,
    pub api: ApiSection,
    pub inventory: inventory::InventoryConfig,
}

/// The capture settings `apisessions run` takes from its command line, laid over the file's
/// at start and again at every reload (the flags keep winning).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureOverrides {
    pub interfaces: Vec<String>,
    pub ports: Vec<u16>,
    pub all_ports: bool,
    pub attach: Option<AttachMode>,
    pub snaplen: Option<u32>,
    pub ring_size: Option<u32>,
    pub body_cap: Option<usize>,
    pub decode_threads: Option<usize>,
    /// `--tls-port`: these TLS ports instead of the file's (and TLS capture on).
    pub tls_ports: Vec<u16>,
}

impl CaptureOverrides {
    pub fn apply(&self, config: &mut Config) {
        let capture = &mut config.capture;
        if !self.interfaces.is_empty() {
            capture.interfaces = self.interfaces.clone();
        }
        if !self.ports.is_empty() {
            capture.ports = Ports::List(self.ports.clone());
            capture.all_ports = false;
        }
        capture.all_ports |= self.all_ports;
        capture.attach = self.attach.unwrap_or(capture.attach);
        capture.snaplen = self.snaplen.unwrap_or(capture.snaplen);
        capture.ring_size = self.ring_size.unwrap_or(capture.ring_size);
        capture.body_cap = self.body_cap.unwrap_or(capture.body_cap);
        capture.decode_threads = self.decode_threads.unwrap_or(capture.decode_threads);
        if !self.tls_ports.is_empty() {
            capture.tls_ports = self.tls_ports.clone();
            capture.tls = true;
        }
    }
}

/// `[api]`: the API's own documents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub specs: Vec<SpecSource>,
}

/// `[[api.specs]]`: an OpenAPI document and the host it describes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecSource {
    pub host: String,
    pub file: PathBuf,
}

impl SpecSource {
    /// The document's path: a relative `file` is relative to the configuration file's
    /// directory, so a configuration and its specs move together.
    pub fn path(&self, config_file: &Path) -> PathBuf {
        match config_file.parent() {
            Some(dir) if self.file.is_relative() => dir.join(&self.file),
            _ => self.file.clone(),
        }
    }
}

/// Which ports `capture.ports` watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// The host's own listening ports, kept while they speak HTTP (`"auto"`, the default).
    Auto,
    /// Exactly these.
    List(Vec<u16>),
}

impl Ports {
    /// The ports listed explicitly (none for `Auto`).
    pub fn listed(&self) -> &[u16] {
        match self {
            Self::Auto => &[],
            Self::List(ports) => ports,
        }
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<u16>),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Text(text)) if text == "auto" => Ok(Self::Auto),
            Ok(Raw::List(ports)) => Ok(Self::List(ports)),
            Ok(Raw::Text(text)) => Err(de::Error::custom(format!(
                "ports is \"auto\" or a list of ports (0-65535), not \"{text}\""
            ))),
            Err(_) => Err(de::Error::custom(
                "ports is \"auto\" or a list of ports (0-65535)",
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    pub interfaces: Vec<String>,
    pub ports: Ports,
    /// Ports never watched, whatever listens there.
    pub exclude_ports: Vec<u16>,
    pub all_ports: bool,
    #[serde(deserialize_with = "from_text")]
    pub attach: AttachMode,
    pub snaplen: u32,
    pub ring_size: u32,
    pub body_cap: usize,
    /// Threads that decode connections (reassembly and HTTP) beside the analysis' own, each a
    /// share of them by a hash of the connection (see `flow::shards`); 0 decodes on the
    /// analysis' thread.
    pub decode_threads: usize,
    /// TLS plaintext through uprobes on the TLS library of the servers on `tls_ports`.
    pub tls: bool,
    /// Ports whose servers speak TLS: decoded from their TLS library, never from the wire.
    pub tls_ports: Vec<u16>,
}

/// `capture.tls_ports` by default: HTTPS and its usual alternative.
pub const DEFAULT_TLS_PORTS: [u16; 2] = [443, 8443];

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ports: Ports::Auto,
            exclude_ports: Vec::new(),
            all_ports: false,
            attach: AttachMode::Auto,
            snaplen: sensor_ebpf::DEFAULT_SNAPLEN,
            ring_size: sensor_ebpf::DEFAULT_RING_BYTES,
            body_cap: crate::http::HttpConfig::default().body_cap,
            decode_threads: 0,
            tls: true,
            tls_ports: DEFAULT_TLS_PORTS.to_vec(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub data_dir: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            data_dir: None,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    #[serde(deserialize_with = "duration")]
    pub inactivity_timeout: Duration,
    /// Custom grouping keys, tried in order before the built-in ones.
    pub keys: Vec<KeyPath>,
    /// More session cookies (names or patterns), tried before the built-in ones; they win over
    /// the built-in exclusions.
    pub cookies: Vec<NamePattern>,
    /// Cookies that are never a key (names or patterns), whatever else matches them.
    pub exclude_cookies: Vec<NamePattern>,
    /// More token headers, tried before the built-in ones.
    #[serde(deserialize_with = "header_names")]
    pub headers: Vec<String>,
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            inactivity_timeout: Duration::from_secs(30 * 60),
            keys: Vec::new(),
            cookies: Vec::new(),
            exclude_cookies: Vec::new(),
            headers: Vec::new(),
        }
    }
}

/// A cookie name or a pattern of names, matched ignoring ASCII case: `name`, `prefix*`,
/// `*suffix` or `*part*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        match self {
            Self::Exact(n) => name.eq_ignore_ascii_case(n.as_bytes()),
            Self::Prefix(p) => name
                .get(..p.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(p.as_bytes())),
            Self::Suffix(s) => name
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| name[at..].eq_ignore_ascii_case(s.as_bytes())),
            Self::Contains(part) => {
                let part = part.as_bytes();
                name.len() >= part.len()
                    && name
                        .windows(part.len())
                        .any(|w| w.eq_ignore_ascii_case(part))
            }
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => write!(f, "{n}"),
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Suffix(s) => write!(f, "*{s}"),
            Self::Contains(part) => write!(f, "*{part}*"),
        }
    }
}

impl FromStr for NamePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (lead, body, trail) = (
            text.starts_with('*'),
            text.trim_matches('*'),
            text.len() > 1 && text.ends_with('*'),
        );
        // Cookie names are RFC 9110 tokens.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
        if body.is_empty() || !body.bytes().all(token) {
            return Err(format!(
                "'{text}' is not a cookie name or pattern (NAME, PREFIX*, *SUFFIX or *PART*)"
            ));
        }
        let body = body.to_owned();
        Ok(match (lead, trail) {
            (false, false) => Self::Exact(body),
            (false, true) => Self::Prefix(body),
            (true, false) => Self::Suffix(body),
            (true, true) => Self::Contains(body),
        })
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

/// A context parameter taken from every exchange.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    pub path: KeyPath,
    #[serde(default, rename = "type")]
    pub kind: Option<ParameterKind>,
    /// Store a keyed hash (`h:…`) instead of the value.
    #[serde(default)]
    pub hashed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterKind {
    User,
    Role,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSection {
    /// Keep raw secrets (Authorization, cookies, API keys, passwords) on disk. Off by default.
    pub store_raw: bool,
    /// More header, cookie, query and body field names to treat as secrets.
    pub names: Vec<String>,
}

/// Reverse proxies in front of the captured applications (see [`crate::proxy`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Peers whose forwarding headers are believed: addresses or CIDR ranges.
    #[serde(deserialize_with = "networks")]
    pub trusted: Vec<IpNet>,
    /// Also trust the addresses of this host's own interfaces (a proxy on the same host).
    pub trust_host_addresses: bool,
    /// Forwarding headers read, in order; the first one present decides. `forwarded` is read
    /// as RFC 7239, any other as a comma-separated address list like `x-forwarded-for`.
    #[serde(deserialize_with = "header_names")]
    pub headers: Vec<String>,
    /// Join a proxy's upstream exchange to its client's exchange when both are captured.
    pub join: bool,
    /// How long an upstream exchange waits for its client's exchange to complete.
    #[serde(deserialize_with = "duration")]
    pub join_window: Duration,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            trusted: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
            trust_host_addresses: true,
            headers: ["x-forwarded-for", "forwarded", "x-real-ip"]
                .map(str::to_owned)
                .to_vec(),
            join: true,
            join_window: Duration::from_secs(3),
        }
    }
}

/// Default `attacks.max_bytes`: value bytes inspected per request.
pub const ATTACKS_MAX_BYTES: usize = 64 * 1024;

/// Attack detection (`[attacks]`; the detector is `analysis::attacks`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttacksSection {
    pub enabled: bool,
    /// Request headers inspected besides User-Agent, Referer, X-Forwarded-For and Origin.
    #[serde(deserialize_with = "header_names")]
    pub headers: Vec<String>,
    /// Value bytes inspected per request at most.
    #[serde(deserialize_with = "positive")]
    pub max_bytes: usize,
}

impl Default for AttacksSection {
    fn default() -> Self {
        Self {
            enabled: true,
            headers: Vec::new(),
            max_bytes: ATTACKS_MAX_BYTES,
        }
    }
}

/// A count that must be at least 1.
fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    match usize::deserialize(deserializer)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// Addresses or CIDR ranges (`10.0.0.0/8`, `::1`, `192.0.2.7`).
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    de::Error::custom(format!(
                        "'{text}' is neither an address nor a CIDR range (e.g. 10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

/// Header names (RFC 9110 tokens), kept lower-case.
fn header_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .into_iter()
        .map(|name| {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(de::Error::custom(format!("'{name}' is not a header name")));
            }
            Ok(name.to_ascii_lowercase())
        })
        .collect()
}

/// Where a value sits in an exchange, e.g. `request.header.Authorization.jwt.sub`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    pub message: MessageSide,
    pub location: Location,
    /// A JWT claim inside the value (`….jwt.sub`).
    pub jwt_claim: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageSide {
    Request,
    Response,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Header(String),
    Cookie(String),
    Query(String),
    /// A property path in a JSON body: `user.id` -> ["user", "id"].
    Json(Vec<String>),
    Form(String),
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.message {
            MessageSide::Request => "request",
            MessageSide::Response => "response",
        };
        match &self.location {
            Location::Header(name) => write!(f, "{side}.header.{name}")?,
            Location::Cookie(name) => write!(f, "{side}.cookie.{name}")?,
            Location::Query(name) => write!(f, "{side}.query.{name}")?,
            Location::Json(path) => write!(f, "{side}.body.json.{}", path.join("."))?,
            Location::Form(name) => write!(f, "{side}.body.form.{name}")?,
        }
        if let Some(claim) = &self.jwt_claim {
            write!(f, ".jwt.{claim}")?;
        }
        Ok(())
    }
}

impl FromStr for KeyPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "expected request|response . header|cookie|query|body.json|body.form . NAME \
                     [.jwt.CLAIM], e.g. request.cookie.sid";
        let (text, jwt_claim) = match text.split_once(".jwt.") {
            Some((head, claim)) if !claim.is_empty() && !claim.contains('.') => {
                (head, Some(claim.to_owned()))
            }
            Some(_) => return Err(format!("'{text}': a JWT claim is one name after '.jwt.'")),
            None => (text, None),
        };
        let (side, rest) = text
            .split_once('.')
            .ok_or_else(|| format!("'{text}': {usage}"))?;
        let message = match side {
            "request" => MessageSide::Request,
            "response" => MessageSide::Response,
            other => {
                return Err(format!(
                    "'{text}': '{other}' is neither request nor response"
                ));
            }
        };
        let (kind, name) = rest
            .split_once('.')
            .ok_or_else(|| format!("'{text}': {usage}"))?;
        let location = match (kind, name) {
            (_, "") => return Err(format!("'{text}': the name is missing")),
            ("header", name) => Location::Header(name.to_owned()),
            ("cookie", name) => Location::Cookie(name.to_owned()),
            ("query", name) => Location::Query(name.to_owned()),
            ("body", rest) => match rest.split_once('.') {
                Some(("json", path)) if path.split('.').all(|p| !p.is_empty()) => {
                    Location::Json(path.split('.').map(str::to_owned).collect())
                }
                Some(("form", name)) if !name.is_empty() => Location::Form(name.to_owned()),
                _ => {
                    return Err(format!(
                        "'{text}': a body key is body.json.PATH or body.form.NAME"
                    ));
                }
            },
            (other, _) => {
                return Err(format!(
                    "'{text}': '{other}' is not header, cookie, query or body"
                ));
            }
        };
        if message == MessageSide::Response && matches!(location, Location::Query(_)) {
            return Err(format!("'{text}': responses have no query string"));
        }
        Ok(Self {
            message,
            location,
            jwt_claim,
        })
    }
}

impl<'de> Deserialize<'de> for KeyPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

/// Any `FromStr` type from a TOML string, with its own error message.
fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(de::Error::custom)
}

/// A duration written like "30m", "7d", "1h 30m".
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    let value = humantime::parse_duration(&text).map_err(|e| {
        de::Error::custom(format!(
            "'{text}' is not a duration ({e}); e.g. \"30m\", \"7d\""
        ))
    })?;
    if value.is_zero() {
        return Err(de::Error::custom("the duration must be longer than zero"));
    }
    Ok(value)
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, offset);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.message().trim().to_owned(),
            }
        })?;
        config.check(text, path)?;
        Ok(config)
    }

    /// Checks that span several values (which serde cannot see one value at a time).
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |(line, column): (usize, usize), reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        };
        let capture = &self.capture;
        if !capture.ring_size.is_power_of_two() || capture.ring_size < 4096 {
            let reason = format!(
                "ring_size {} must be a power of two of at least 4096",
                capture.ring_size
            );
            return Err(invalid(find(text, "ring_size", 1), reason));
        }
        if capture.snaplen > sensor_ebpf::MAX_SNAPLEN {
            let reason = format!(
                "snaplen {} exceeds the maximum of {}",
                capture.snaplen,
                sensor_ebpf::MAX_SNAPLEN
            );
            return Err(invalid(find(text, "snaplen", 1), reason));
        }
        if capture.decode_threads > crate::flow::shards::MAX_WORKERS {
            let reason = format!(
                "decode_threads {} is more than {}",
                capture.decode_threads,
                crate::flow::shards::MAX_WORKERS
            );
            return Err(invalid(find(text, "decode_threads", 1), reason));
        }
        if capture.tls_ports.contains(&0) {
            let reason = "tls_ports: 0 is not a port".into();
            return Err(invalid(find(text, "tls_ports", 1), reason));
        }
        if let Some(port) = capture
            .ports
            .listed()
            .iter()
            .find(|p| capture.tls && capture.tls_ports.contains(p))
        {
            let reason = format!(
                "port {port} is in both ports and tls_ports: a TLS port is decoded from its TLS \
                 library, never from the wire"
            );
            return Err(invalid(find(text, "tls_ports", 1), reason));
        }
        if !capture.all_ports && capture.ports == Ports::List(Vec::new()) {
            let reason = "no ports to capture (set all_ports = true to take every port)".into();
            return Err(invalid(find(text, "ports", 1), reason));
        }
        if let Err((key, reason)) = self.abuse.validate() {
            let at = text
                .find("[abuse")
                .map(|start| start + text[start..].find(key).unwrap_or(0))
                .map_or((1, 1), |offset| line_column(text, offset));
            return Err(invalid(at, reason));
        }
        for spec in &self.api.specs {
            if spec.host.is_empty() || spec.host.contains(['/', ' ']) {
                let at = find(text, &format!("\"{}\"", spec.host), 1);
                let reason = format!("'{}' is not a host name (host or host:port)", spec.host);
                return Err(invalid(at, reason));
            }
        }
        let inventory = &self.inventory;
        let learner = &inventory.templates;
        let positive = [
            ("max_endpoints", inventory.max_endpoints),
            ("max_query_params", inventory.max_query_params),
            ("max_body_fields", inventory.max_body_fields),
            ("max_positions", learner.max_positions),
            ("hot_factor", learner.hot_factor as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(
                    find(text, key, 1),
                    format!("{key} must be at least 1"),
                ));
            }
        }
        if learner.min_distinct < 2 || learner.max_values < learner.min_distinct {
            let reason = format!(
                "the learner needs 2 <= min_distinct ({}) <= max_values ({})",
                learner.min_distinct, learner.max_values
            );
            return Err(invalid(find(text, "min_distinct", 1), reason));
        }
        if learner.many_distinct < learner.min_distinct {
            let reason = format!(
                "many_distinct ({}) must be at least min_distinct ({})",
                learner.many_distinct, learner.min_distinct
            );
            return Err(invalid(find(text, "many_distinct", 1), reason));
        }
        let mut names = std::collections::HashSet::new();
        for parameter in &self.parameters {
            if parameter.name.is_empty() {
                let at = find(text, "name = \"\"", 1);
                return Err(invalid(at, "a parameter needs a name".into()));
            }
            if !names.insert(parameter.name.as_str()) {
                // The second `name = "…"` with this name is the duplicate.
                let at = find(text, &format!("\"{}\"", parameter.name), 2);
                let reason = format!("parameter '{}' is defined twice", parameter.name);
                return Err(invalid(at, reason));
            }
        }
        Ok(())
    }
}

/// The central store (ClickHouse over HTTP, see [`crate::ship`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralSection {
    #[serde(deserialize_with = "from_text")]
    pub url: CentralUrl,
    #[serde(
        default = "CentralSection::default_database",
        deserialize_with = "identifier"
    )]
    pub database: String,
    #[serde(default = "CentralSection::default_user")]
    pub user: String,
    /// A file holding the password (its first line); else `APISESSIONS_CENTRAL_PASSWORD`, else none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Names this sensor in the central tables; the host name when not set.
    #[serde(default, deserialize_with = "host_id")]
    pub host_id: Option<String>,
    /// Exchanges per insert at most.
    #[serde(
        default = "CentralSection::default_batch_size",
        deserialize_with = "batch_size"
    )]
    pub batch_size: usize,
    /// How long exchanges wait for a batch to fill before a smaller one is sent.
    #[serde(
        default = "CentralSection::default_interval",
        deserialize_with = "duration"
    )]
    pub interval: Duration,
    /// The query commands answer from the central store (as with `--central`).
    #[serde(default)]
    pub query: bool,
}

impl CentralSection {
    pub const MAX_BATCH_SIZE: usize = 1_000_000;

    fn default_database() -> String {
        "apisessions".into()
    }

    fn default_user() -> String {
        "default".into()
    }

    fn default_batch_size() -> usize {
        10_000
    }

    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }

    /// A section for `url` with every other value at its default.
    pub fn new(url: CentralUrl) -> Self {
        Self {
            url,
            database: Self::default_database(),
            user: Self::default_user(),
            password_file: None,
            host_id: None,
            batch_size: Self::default_batch_size(),
            interval: Self::default_interval(),
            query: false,
        }
    }

    /// The configured host id, else the host name (else "localhost" if it cannot be read).
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// `http[s]://host[:port]`: where the central server's HTTP interface listens (port 8123
/// unless given). No credentials (they would end up in logs) and no path or query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralUrl {
    pub https: bool,
    /// As written (an IPv6 address with its brackets).
    pub host: String,
    pub port: u16,
}

impl CentralUrl {
    pub const DEFAULT_PORT: u16 = 8123;
}

impl fmt::Display for CentralUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl FromStr for CentralUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("'{text}' is not a central url: {why}");
        let uri: http::Uri = text.parse().map_err(|e| bad(&format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials do not belong in the url (use user and password_file)",
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("a path or query is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(Self::DEFAULT_PORT),
        })
    }
}

/// A ClickHouse database name: it is written into SQL, so only a plain identifier.
fn identifier<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let mut chars = text.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 64;
    if !plain {
        return Err(de::Error::custom(format!(
            "'{text}' is not a database name (letters, digits and _, not starting with a digit)"
        )));
    }
    Ok(text)
}

fn host_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
        return Err(de::Error::custom(
            "host_id must be 1 to 255 bytes without control characters",
        ));
    }
    Ok(Some(text))
}

fn batch_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let value = usize::deserialize(deserializer)?;
    if value == 0 || value > CentralSection::MAX_BATCH_SIZE {
        return Err(de::Error::custom(format!(
            "batch_size {value} must be between 1 and {}",
            CentralSection::MAX_BATCH_SIZE
        )));
    }
    Ok(value)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Where `needle` appears for the `nth` time (1-based), for checks made after parsing.
fn find(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    text.match_indices(needle)
        .nth(nth.saturating_sub(1))
        .map_or((1, 1), |(offset, _)| line_column(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn no_file_content_gives_working_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.capture.ports, Ports::Auto);
        assert_eq!(config.storage.retention, Duration::from_secs(7 * 86400));
        assert_eq!(
            config.sessions.inactivity_timeout,
            Duration::from_secs(1800)
        );
        let proxy = &config.proxy;
        let trusted: Vec<String> = proxy.trusted.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["127.0.0.0/8", "::1/128"]);
        assert!(proxy.trust_host_addresses && proxy.join);
        assert_eq!(proxy.headers, ["x-forwarded-for", "forwarded", "x-real-ip"]);
        assert!(config.attacks.enabled && config.attacks.headers.is_empty());
        assert_eq!(config.attacks.max_bytes, 64 * 1024);
        assert!(config.capture.tls);
        assert_eq!(config.capture.tls_ports, [443, 8443]);
    }

    #[test]
    fn tls_settings_and_the_tls_port_flag() {
        let mut config = parse("[capture]\ntls = false\ntls_ports = [9443]\n").unwrap();
        assert!(!config.capture.tls);
        assert_eq!(config.capture.tls_ports, [9443]);
        // `--tls-port` names the ports and turns TLS capture on.
        CaptureOverrides {
            tls_ports: vec![8443, 443],
            ..CaptureOverrides::default()
        }
        .apply(&mut config);
        assert!(config.capture.tls);
        assert_eq!(config.capture.tls_ports, [8443, 443]);
        // A port listed in both is fine while TLS capture is off.
        assert!(parse("[capture]\ntls = false\nports = [443]\n").is_ok());
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            r#"
[capture]
interfaces = ["eth0", "lo"]
ports = [8080]
attach = "clsact"
body_cap = 4096

[storage]
data_dir = "/srv/apis"
retention = "2d"

[sessions]
inactivity_timeout = "15m"
keys = ["request.cookie.sid", "request.body.json.user.id", "response.body.json.token"]
cookies = ["app_auth", "*_login", "tok*", "*sso*"]
exclude_cookies = ["session_pref"]
headers = ["X-Tenant-Token"]

[[parameters]]
name = "user"
path = "request.header.Authorization.jwt.sub"
type = "user"

[[parameters]]
name = "card"
path = "request.body.form.card"
hashed = true

[secrets]
names = ["x-internal"]

[proxy]
trusted = ["10.1.2.3", "192.168.0.0/16", "fd00::/8"]
trust_host_addresses = false
headers = ["Forwarded", "X-Real-IP"]
join = false
join_window = "10s"

[[api.specs]]
host = "api.example.com"
file = "specs/api.yaml"

[[api.specs]]
host = "admin.example.com:8443"
file = "/etc/specs/admin.json"

[inventory]
slow_floor_ms = 250
max_endpoints = 500

[inventory.templates]
min_distinct = 8

[attacks]
enabled = false
headers = ["X-Search"]
max_bytes = 4096
"#,
        )
        .unwrap();
        assert_eq!(config.capture.attach, AttachMode::Clsact);
        assert_eq!(config.storage.retention, Duration::from_secs(2 * 86400));
        assert_eq!(
            config.sessions.keys[1].location,
            Location::Json(vec!["user".into(), "id".into()])
        );
        assert_eq!(config.sessions.keys[2].message, MessageSide::Response);
        let cookies: Vec<String> = config
            .sessions
            .cookies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(cookies, ["app_auth", "*_login", "tok*", "*sso*"]);
        assert_eq!(
            config.sessions.cookies[3],
            NamePattern::Contains("sso".into())
        );
        assert_eq!(
            config.sessions.exclude_cookies,
            [NamePattern::Exact("session_pref".into())]
        );
        assert_eq!(config.sessions.headers, ["x-tenant-token"]);
        assert_eq!(config.parameters[0].path.jwt_claim.as_deref(), Some("sub"));
        assert_eq!(config.parameters[0].kind, Some(ParameterKind::User));
        assert!(config.parameters[1].hashed);
        assert_eq!(
            config.parameters[0].path.to_string(),
            "request.header.Authorization.jwt.sub"
        );
        let proxy = &config.proxy;
        let nets: Vec<String> = proxy.trusted.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.1.2.3/32", "192.168.0.0/16", "fd00::/8"]);
        assert_eq!(proxy.headers, ["forwarded", "x-real-ip"]);
        assert!(!proxy.join && !proxy.trust_host_addresses);
        assert_eq!(proxy.join_window, Duration::from_secs(10));
        let specs = &config.api.specs;
        assert_eq!(specs[0].host, "api.example.com");
        assert_eq!(
            specs[0].path(Path::new("/etc/apisessions/config.toml")),
            Path::new("/etc/apisessions/specs/api.yaml")
        );
        assert_eq!(
            specs[1].path(Path::new("/etc/apisessions/config.toml")),
            Path::new("/etc/specs/admin.json")
        );
        assert_eq!(config.inventory.slow_floor_ms, 250);
        assert_eq!(config.inventory.max_endpoints, 500);
        assert_eq!(config.inventory.templates.min_distinct, 8);
        assert_eq!(config.inventory.templates.max_values, 64);
        let attacks = &config.attacks;
        assert!(!attacks.enabled);
        assert_eq!(
            (attacks.headers.as_slice(), attacks.max_bytes),
            (&["x-search".to_owned()][..], 4096)
        );
    }

    #[test]
    fn errors_name_file_line_column_and_reason() {
        let cases = [
            (
                "[capture]\nportz = [1]\n",
                "test.toml:2:1:",
                "unknown field `portz`",
            ),
            (
                "[capture]\nports = [70000]\n",
                "test.toml:2:9:",
                "\"auto\" or a list of ports",
            ),
            (
                "[capture]\nports = \"all\"\n",
                "test.toml:2:9:",
                "not \"all\"",
            ),
            (
                "[capture]\ntls_ports = [443, 0]\n",
                "test.toml:2:1:",
                "0 is not a port",
            ),
            (
                "[capture]\nports = [8443]\ntls_ports = [8443]\n",
                "test.toml:3:1:",
                "port 8443 is in both ports and tls_ports",
            ),
            (
                "[capture]\ntls = \"yes\"\n",
                "test.toml:2:7:",
                "expected a boolean",
            ),
            (
                "[storage]\nretention = \"soon\"\n",
                "test.toml:2:13:",
                "is not a duration",
            ),
            (
                "[sessions]\nkeys = [\"request.cookie\"]\n",
                "test.toml:2:8:",
                "e.g. request.cookie.sid",
            ),
            (
                "[sessions]\nkeys = [\"server.header.x\"]\n",
                "test.toml:2:8:",
                "neither request nor response",
            ),
            (
                "[sessions]\nkeys = [\"response.query.x\"]\n",
                "test.toml:2:8:",
                "no query string",
            ),
            (
                "[capture]\nattach = \"xdp\"\n",
                "test.toml:2:10:",
                "unknown attach mode",
            ),
            (
                "\n\n[capture]\nring_size = 1000\n",
                "test.toml:4:1:",
                "power of two",
            ),
            (
                "[capture]\ndecode_threads = 65\n",
                "test.toml:2:1:",
                "more than 64",
            ),
            (
                "[[parameters]]\nname = \"a\"\npath = \"request.query.a\"\ntype = \"admin\"\n",
                "test.toml:4:8:",
                "unknown variant",
            ),
            (
                "[[parameters]]\nname = \"a\"\npath = \"request.query.a\"\n[[parameters]]\nname = \"a\"\npath = \"request.query.b\"\n",
                "test.toml:5:8:",
                "defined twice",
            ),
            (
                "[proxy]\ntrusted = [\"10.0.0.0/33\"]\n",
                "test.toml:2:11:",
                "neither an address nor a CIDR range",
            ),
            (
                "[proxy]\nheaders = [\"x-forwarded-for\", \"bad header\"]\n",
                "test.toml:2:11:",
                "not a header name",
            ),
            (
                "[proxy]\njoin_window = \"0s\"\n",
                "test.toml:2:15:",
                "longer than zero",
            ),
            ("[proxy]\njoin = 1\n", "test.toml:2:8:", "invalid type"),
            (
                "[attacks]\nmax_bytes = 0\n",
                "test.toml:2:13:",
                "at least 1",
            ),
            (
                "[attacks]\nheaders = [\"x y\"]\n",
                "test.toml:2:11:",
                "not a header name",
            ),
            (
                "[attacks]\nenable = true\n",
                "test.toml:2:1:",
                "unknown field `enable`",
            ),
            (
                "[sessions]\ncookies = [\"ok\", \"a*b\"]\n",
                "test.toml:2:11:",
                "not a cookie name or pattern",
            ),
            (
                "[sessions]\nexclude_cookies = [\"*\"]\n",
                "test.toml:2:19:",
                "not a cookie name or pattern",
            ),
            (
                "[sessions]\nheaders = [\"x token\"]\n",
                "test.toml:2:11:",
                "not a header name",
            ),
            (
                "[[api.specs]]\nhost = \"a\"\nfile = \"x.yaml\"\nurl = \"x\"\n",
                "test.toml:4:1:",
                "unknown field `url`",
            ),
            (
                "[[api.specs]]\nhost = \"a\"\n",
                "test.toml:1:1:",
                "missing field `file`",
            ),
            (
                "[[api.specs]]\nhost = \"http://a\"\nfile = \"x\"\n",
                "test.toml:2:8:",
                "not a host name",
            ),
            (
                "[inventory]\nslow_floor_ms = -1\n",
                "test.toml:2:17:",
                "invalid value",
            ),
            (
                "[inventory]\nmax_endpoints = 0\n",
                "test.toml:2:1:",
                "at least 1",
            ),
            (
                "[inventory.templates]\nmin_distinct = 100\n",
                "test.toml:2:1:",
                "min_distinct (100) <= max_values (64)",
            ),
            (
                "[inventory.templates]\nmin_distinct = 8\nmany_distinct = 6\n",
                "test.toml:3:1:",
                "many_distinct (6) must be at least min_distinct (8)",
            ),
            (
                "[inventory.templates]\nmin_distinctt = 1\n",
                "test.toml:2:1:",
                "unknown field `min_distinctt`",
            ),
            ("[capture\n", "test.toml:1:", ""),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(text, location, reason)| (parse(text).unwrap_err(), location, reason))
            .filter(|(error, location, reason)| {
                !error.starts_with(**location) || !error.contains(**reason)
            })
            .map(|(error, location, reason)| format!("want {location} …{reason}…, got {error}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_central_section_has_defaults_and_rejects_bad_values() {
        assert_eq!(parse("").unwrap().central, None);
        let central = parse("[central]\nurl = \"http://ch.example\"\n")
            .unwrap()
            .central
            .unwrap();
        assert_eq!(central.url.to_string(), "http://ch.example:8123");
        assert_eq!(
            (central.database.as_str(), central.user.as_str()),
            ("apisessions", "default")
        );
        assert_eq!(
            (central.batch_size, central.interval, central.query),
            (10_000, Duration::from_secs(1), false)
        );
        assert!(!central.host_id().is_empty(), "the host name by default");
        let central = parse(
            "[central]\nurl = \"https://[::1]:9443/\"\ndatabase = \"fleet_1\"\nuser = \"ship\"\n\
             password_file = \"/etc/p\"\nhost_id = \"api-1\"\nbatch_size = 500\ninterval = \"250ms\"\nquery = true\n",
        )
        .unwrap()
        .central
        .unwrap();
        assert_eq!(central.url.to_string(), "https://[::1]:9443");
        assert_eq!(central.host_id(), "api-1");
        assert_eq!(
            (central.batch_size, central.interval),
            (500, Duration::from_millis(250))
        );

        let cases = [
            (
                "[central]\ndatabase = \"x\"\n",
                "test.toml:1:1:",
                "missing field `url`",
            ),
            (
                "[central]\nurl = \"ftp://x\"\n",
                "test.toml:2:7:",
                "http or https",
            ),
            (
                "[central]\nurl = \"http://u:p@x\"\n",
                "test.toml:2:7:",
                "credentials",
            ),
            (
                "[central]\nurl = \"http://x/db?q=1\"\n",
                "test.toml:2:7:",
                "path or query",
            ),
            (
                "[central]\nurl = \"http://x\"\ndatabase = \"a; DROP\"\n",
                "test.toml:3:12:",
                "not a database name",
            ),
            (
                "[central]\nurl = \"http://x\"\nbatch_size = 0\n",
                "test.toml:3:14:",
                "between 1",
            ),
            (
                "[central]\nurl = \"http://x\"\nhost_id = \"\"\n",
                "test.toml:3:11:",
                "host_id",
            ),
            (
                "[central]\nurl = \"http://x\"\ninterval = \"0s\"\n",
                "test.toml:3:12:",
                "longer than zero",
            ),
            (
                "[central]\nurl = \"http://x\"\npassword = \"x\"\n",
                "test.toml:3:1:",
                "unknown field `password`",
            ),
        ];
        for (text, location, reason) in cases {
            let error = parse(text).unwrap_err();
            assert!(
                error.starts_with(location) && error.contains(reason),
                "want {location} …{reason}…, got {error}"
            );
        }
    }
}

//! The built-in session keys, as data: which cookies, headers, `Authorization` schemes and
//! query parameters carry a session or a user, which cookies never do, and the order in which
//! they decide when a request carries several. The README's table lists the same entries (a
//! test keeps the two in step).
//!
//! Recognising a cookie costs a walk over a few dozen short name patterns and no allocation
//! (only a recognised cookie's key name is built): this runs for every exchange. Measured in
//! release mode (`per_exchange_cost_of_finding_the_keys` in the tests): a browser request with
//! ten cookies, the session cookie last, about 2.4 µs for all its keys, against 5.1 µs for the
//! ten fixed names this table replaced (which scanned the cookies once per name).

use crate::config::{Config, NamePattern};

/// What a recognised cookie is, which sets its place in the precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieClass {
    /// A framework's session cookie: the application's own session id.
    Session,
    /// An authentication token kept in a cookie (often a JWT).
    Token,
    /// A remember-me cookie: outlives sessions, so it decides only without anything better.
    Remember,
}

/// Cookies that are keys: the major frameworks' session cookies, exact names first (more
/// specific), then patterns; token cookies; remember-me cookies. (pattern, class, from where).
pub const BUILTIN_COOKIES: &[(&str, CookieClass, &str)] = &[
    ("PHPSESSID", CookieClass::Session, "PHP native sessions"),
    (
        "JSESSIONID",
        CookieClass::Session,
        "Java servlets (Tomcat, Jetty, Spring)",
    ),
    ("ASP.NET_SessionId", CookieClass::Session, "ASP.NET"),
    (
        ".AspNetCore.Session",
        CookieClass::Session,
        "ASP.NET Core session",
    ),
    (
        ".AspNetCore.Cookies",
        CookieClass::Session,
        "ASP.NET Core cookie authentication",
    ),
    (
        "connect.sid",
        CookieClass::Session,
        "Express express-session",
    ),
    ("laravel_session", CookieClass::Session, "Laravel"),
    ("sessionid", CookieClass::Session, "Django"),
    (
        "session",
        CookieClass::Session,
        "Flask, Express cookie-session",
    ),
    ("sid", CookieClass::Session, "generic"),
    (
        "_session_id",
        CookieClass::Session,
        "Rails (ActiveRecord store)",
    ),
    ("session_id", CookieClass::Session, "generic"),
    ("sessionId", CookieClass::Session, "fastify-session"),
    ("koa.sess", CookieClass::Session, "koa-session"),
    ("KEYCLOAK_SESSION", CookieClass::Session, "Keycloak"),
    ("KEYCLOAK_IDENTITY", CookieClass::Session, "Keycloak"),
    ("ci_session", CookieClass::Session, "CodeIgniter"),
    ("PLAY_SESSION", CookieClass::Session, "Play Framework"),
    ("next-auth.session-token", CookieClass::Session, "next-auth"),
    ("authjs.session-token", CookieClass::Session, "Auth.js"),
    ("rack.session", CookieClass::Session, "Rack, Sinatra"),
    (
        "beaker.session.id",
        CookieClass::Session,
        "Pylons, Pyramid (Beaker)",
    ),
    ("_oauth2_proxy", CookieClass::Session, "oauth2-proxy"),
    (
        "*_session",
        CookieClass::Session,
        "Rails `_<app>_session`, Laravel `<app>_session`",
    ),
    (
        "*session-token*",
        CookieClass::Session,
        "next-auth and Auth.js variants",
    ),
    ("*.sid", CookieClass::Session, "Express `<name>.sid`"),
    (
        "*sess*",
        CookieClass::Session,
        "anything named like a session",
    ),
    ("access_token", CookieClass::Token, "token in a cookie"),
    ("jwt", CookieClass::Token, "token in a cookie"),
    ("token", CookieClass::Token, "token in a cookie"),
    ("auth_token", CookieClass::Token, "token in a cookie"),
    ("id_token", CookieClass::Token, "OpenID Connect"),
    ("remember_token", CookieClass::Remember, "Flask-Login"),
    ("remember_user_token", CookieClass::Remember, "Devise"),
    ("remember_web_*", CookieClass::Remember, "Laravel"),
    ("remember-me", CookieClass::Remember, "Spring Security"),
    ("rememberMe", CookieClass::Remember, "Apache Shiro"),
];

/// Cookies that are per browser but not a session: they would split one user's session (a new
/// value per page) or merge users (one value for every client behind a balancer). Matched
/// before [`BUILTIN_COOKIES`], so `*sess*` cannot catch them. (pattern, why).
pub const EXCLUDED_COOKIES: &[(&str, &str)] = &[
    (
        "_ga",
        "Google Analytics: a visitor id, across sessions and logins",
    ),
    ("_ga_*", "Google Analytics 4: per-property visitor state"),
    ("_gid", "Google Analytics: a visitor id for a day"),
    ("_gat*", "Google Analytics: a rate limit flag"),
    ("_gcl_*", "Google Ads: click attribution"),
    ("_fbp", "Meta pixel: a browser id"),
    ("_fbc", "Meta pixel: click attribution"),
    ("__utm*", "Urchin analytics: visitor and campaign state"),
    ("_hj*", "Hotjar: analytics session and user ids"),
    ("ajs_*", "Segment: analytics ids"),
    (
        "AWSALB*",
        "AWS load balancer stickiness: one value for all clients of a target",
    ),
    ("AWSELB", "AWS classic load balancer stickiness"),
    (
        "SERVERID",
        "HAProxy stickiness: names a backend, not a user",
    ),
    ("ROUTEID", "Apache mod_proxy_balancer stickiness"),
    ("BIGipServer*", "F5 BIG-IP stickiness"),
    (
        "__cf_bm",
        "Cloudflare bot management: changes every 30 minutes",
    ),
    ("cf_clearance", "Cloudflare challenge passed"),
    ("__cfruid", "Cloudflare rate limiting"),
    ("_cfuvid", "Cloudflare rate limiting"),
    (
        "*consent*",
        "cookie-consent choices (OptanonConsent, CookieConsent, …)",
    ),
    ("cookieyes-*", "cookie-consent choices"),
    (
        "*csrf*",
        "CSRF tokens (csrftoken, _csrf, csrf_token): rotate, and exist before login",
    ),
    ("*xsrf*", "CSRF tokens (XSRF-TOKEN, _xsrf)"),
    (
        "*.sig",
        "signatures of another cookie (cookie-session `session.sig`)",
    ),
];

/// Token headers besides `Authorization`, in precedence order.
pub const TOKEN_HEADERS: &[&str] = &[
    "X-API-Key",
    "Api-Key",
    "X-Auth-Token",
    "X-Session-Id",
    "X-Access-Token",
    "X-Token",
    "X-User-Token",
    "X-Amz-Security-Token",
];

/// Query parameters that carry a token, in precedence order.
pub const QUERY_TOKENS: &[&str] = &["access_token", "api_key", "apikey", "token"];

/// Where a key stands when a request carries several: the lowest decides, and within one tier
/// the earlier rule (then the earlier in the request). The most specific and stable key first:
/// the application's own session id before a JWT's subject (a subject spans a user's devices
/// and tabs, a session cookie is one of them), a subject before opaque tokens (a refreshed token
/// keeps its subject), credentials a client sends on purpose before cookies that merely carry a
/// token, and remember-me cookies and query strings, which outlive or leak out of sessions, last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Configured,
    SessionCookie,
    /// A JWT's subject: the `Authorization` header's, then a cookie's.
    JwtSubject,
    /// Opaque bearer tokens, `Token`/`ApiKey`/`Key` schemes, the Basic user.
    Authorization,
    TokenCookie,
    TokenHeader,
    RememberCookie,
    QueryToken,
    Fallback,
}

/// Shortest value of a cookie that only a built-in *pattern* names: session ids are long random
/// strings, while short values under session-like names are settings shared by every client
/// (`sessionTimeout=1800`, `session_pref=dark`) that would merge users.
pub const MIN_PATTERN_VALUE: usize = 16;

/// One cookie rule: a name or pattern, what it makes of a cookie (`None`: excluded), and
/// whether the value must look like an id ([`MIN_PATTERN_VALUE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct CookieRule {
    pattern: NamePattern,
    class: Option<CookieClass>,
    id_shaped: bool,
}

/// The cookie rules in the order they are tried: configured exclusions, configured cookies,
/// built-in exclusions, built-in cookies. The first that matches says what a cookie is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTable {
    cookie_rules: Vec<CookieRule>,
    /// Configured token headers, then [`TOKEN_HEADERS`].
    headers: Vec<String>,
}

impl Default for KeyTable {
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for KeyTable {
    fn from(config: &Config) -> Self {
        let sessions = &config.sessions;
        let configured = |pattern: &NamePattern, class| CookieRule {
            pattern: pattern.clone(),
            class,
            id_shaped: false,
        };
        let builtin = |text: &str, class: Option<CookieClass>| {
            let pattern = text
                .parse::<NamePattern>()
                .unwrap_or_else(|_| NamePattern::Exact(text.to_owned()));
            let id_shaped = class.is_some() && !matches!(pattern, NamePattern::Exact(_));
            CookieRule {
                pattern,
                class,
                id_shaped,
            }
        };
        let cookie_rules = (sessions.exclude_cookies.iter())
            .map(|p| configured(p, None))
            .chain((sessions.cookies.iter()).map(|p| configured(p, Some(CookieClass::Session))))
            .chain(EXCLUDED_COOKIES.iter().map(|(p, _)| builtin(p, None)))
            .chain(
                BUILTIN_COOKIES
                    .iter()
                    .map(|(p, class, _)| builtin(p, Some(*class))),
            )
            .collect();
        let headers = (sessions.headers.iter().cloned())
            .chain(TOKEN_HEADERS.iter().map(|h| (*h).to_owned()))
            .collect();
        Self {
            cookie_rules,
            headers,
        }
    }
}

/// What the rules say of a cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieMatch {
    /// A key of this class; `rank` is the rule's place (lower is more specific).
    Key { class: CookieClass, rank: u16 },
    /// Never a key, not even with a JWT in it.
    Excluded,
    /// No rule names it (or only a pattern, and the value is too short for an id): a key only
    /// if its value is a JWT with a subject.
    Unknown,
}

impl KeyTable {
    /// What the cookie `name=value` is.
    pub fn cookie(&self, name: &str, value: &str) -> CookieMatch {
        // `__Host-` and `__Secure-` only restrict where a browser accepts the cookie.
        let bare = strip_prefix_ignore_case(name, "__Host-")
            .or_else(|| strip_prefix_ignore_case(name, "__Secure-"))
            .unwrap_or(name);
        let Some((rank, rule)) =
            (self.cookie_rules.iter().enumerate()).find(|(_, rule)| rule.pattern.matches(bare))
        else {
            return CookieMatch::Unknown;
        };
        match rule.class {
            None => CookieMatch::Excluded,
            Some(_) if rule.id_shaped && value.len() < MIN_PATTERN_VALUE => CookieMatch::Unknown,
            Some(class) => CookieMatch::Key {
                class,
                rank: u16::try_from(rank).unwrap_or(u16::MAX),
            },
        }
    }

    pub fn token_headers(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(String::as_str)
    }
}

/// The tier of a cookie of `class`, and whether its value is a JWT's subject.
pub fn cookie_tier(class: CookieClass, jwt: bool) -> Tier {
    match (class, jwt) {
        (CookieClass::Session, _) => Tier::SessionCookie,
        (CookieClass::Token, true) => Tier::JwtSubject,
        (CookieClass::Token, false) => Tier::TokenCookie,
        (CookieClass::Remember, _) => Tier::RememberCookie,
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// A value shaped like a JWT (`eyJ…` header, three dot-separated parts): worth decoding.
pub fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ") && value.bytes().filter(|b| *b == b'.').count() == 2
}

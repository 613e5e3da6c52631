//! Reading values out of an exchange: at a configured key path, and the built-in session keys.
//!
//! Everything here reads untrusted traffic: malformed cookies, JSON, base64 or JWTs give `None`,
//! never a panic. Bodies are content-decoded (bounded) before JSON or form parsing.

use std::borrow::Cow;

use base64::Engine as _;

use crate::{
    config::{KeyPath, Location, MessageSide},
    exchange::{Exchange, MessageMeta},
    http::content,
};

/// Decoded body bytes read for JSON or form keys at most (decompression-bomb bound).
const BODY_DECODE_LIMIT: usize = 1 << 20;

/// The value at `path` in `exchange`, as text.
pub fn value_at(exchange: &Exchange, path: &KeyPath) -> Option<String> {
    let (meta, uri) = match path.message {
        MessageSide::Request => {
            let request = exchange.request.as_ref()?;
            (&request.meta, Some(request.uri.as_str()))
        }
        MessageSide::Response => (&exchange.response.as_ref()?.meta, None),
    };
    let raw = match &path.location {
        Location::Header(name) => meta.header(name).map(str::to_owned),
        Location::Cookie(name) => match path.message {
            MessageSide::Request => request_cookie(meta, name),
            MessageSide::Response => set_cookie(meta, name),
        },
        Location::Query(name) => query_param(uri?, name),
        Location::Json(property) => json_value(meta, property),
        Location::Form(name) => form_value(meta, name),
    }?;
    match &path.jwt_claim {
        Some(claim) => jwt_claim(&raw, claim),
        None => Some(raw),
    }
}

/// The cookies a client sent (all `Cookie` headers): (name, value), values unquoted, empty
/// ones left out. Borrowed from the message.
pub fn request_cookies(meta: &MessageMeta) -> impl Iterator<Item = (&str, &str)> {
    meta.all_headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(n, v)| (n.trim(), v.trim().trim_matches('"')))
        .filter(|(_, v)| !v.is_empty())
}

/// The cookies a server sets (`Set-Cookie: name=value; attributes`): (name, value), values
/// unquoted. Left out: empty values and deletions (`Max-Age=0` or less, an `Expires` in 1970,
/// PHP's `deleted`), which hand nothing out.
pub fn set_cookies(meta: &MessageMeta) -> impl Iterator<Item = (&str, &str)> {
    meta.all_headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| {
            let mut parts = value.split(';');
            let (name, value) = parts.next()?.trim().split_once('=')?;
            let value = value.trim().trim_matches('"');
            let deletion = value == "deleted"
                || parts.any(|attribute| {
                    let (key, v) = attribute.trim().split_once('=').unwrap_or((attribute, ""));
                    let key = key.trim();
                    (key.eq_ignore_ascii_case("max-age")
                        && v.trim().parse::<i64>().is_ok_and(|a| a <= 0))
                        || (key.eq_ignore_ascii_case("expires") && v.contains("1970"))
                });
            (!value.is_empty() && !deletion).then(|| (name.trim(), value))
        })
}

/// A cookie sent by the client.
pub fn request_cookie(meta: &MessageMeta, name: &str) -> Option<String> {
    request_cookies(meta)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A cookie set by the server.
pub fn set_cookie(meta: &MessageMeta, name: &str) -> Option<String> {
    set_cookies(meta)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

pub fn query_param(uri: &str, name: &str) -> Option<String> {
    query_pairs(uri)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The query string's parameters, decoded (borrowed where nothing was escaped).
pub fn query_pairs(uri: &str) -> form_urlencoded::Parse<'_> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
}

/// The body as the application sees it: content-decoded, bounded. Borrowed when there is
/// nothing to decode (the common case), so reading a key does not copy the body.
fn decoded_body(meta: &MessageMeta) -> Option<Cow<'_, [u8]>> {
    if meta.body.is_empty() {
        return None;
    }
    let encoding = meta.header("content-encoding").unwrap_or("");
    let identity = encoding
        .split(',')
        .map(str::trim)
        .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"));
    if identity {
        // What `content::decode` returns for identity, without its copy.
        let len = meta.body.len().min(BODY_DECODE_LIMIT);
        return Some(Cow::Borrowed(&meta.body[..len]));
    }
    content::decode(&meta.body, encoding, BODY_DECODE_LIMIT)
        .ok()
        .map(|d| Cow::Owned(d.bytes))
}

/// The message's body parsed as JSON, if it is JSON. Parse once and read several properties
/// with [`json_at`]: parsing costs far more than a lookup.
pub fn json_body(meta: &MessageMeta) -> Option<serde_json::Value> {
    json_body_if(meta, |_| true)
}

/// [`json_body`], parsed only if `worth_parsing` says so of the decoded bytes (a cheap scan
/// that rules out what is looked for saves the parse).
pub fn json_body_if(
    meta: &MessageMeta,
    worth_parsing: impl FnOnce(&[u8]) -> bool,
) -> Option<serde_json::Value> {
    let body = decoded_body(meta)?;
    if !worth_parsing(&body) {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// The scalar at `property` (object keys, or array indexes) below `root`, as text.
pub fn json_at<S: AsRef<str>>(root: &serde_json::Value, property: &[S]) -> Option<String> {
    let mut value = root;
    for step in property {
        let step = step.as_ref();
        value = match value {
            serde_json::Value::Object(map) => map.get(step)?,
            serde_json::Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    scalar_text(value)
}

fn json_value(meta: &MessageMeta, property: &[String]) -> Option<String> {
    json_at(&json_body(meta)?, property)
}

fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn form_value(meta: &MessageMeta, name: &str) -> Option<String> {
    let body = decoded_body(meta)?;
    form_urlencoded::parse(&body)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The claims of a JWT (`header.payload.signature`), unverified: the sensor groups traffic, it
/// does not authenticate it. A `Bearer ` prefix is ignored.
pub fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(claims) => Some(claims),
        _ => None,
    }
}

pub fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    scalar_text(jwt_claims(token)?.get(claim)?)
}

/// Who a JWT names: its `sub` claim, else its `sid` (a session's id).
pub fn jwt_subject(token: &str) -> Option<String> {
    let claims = jwt_claims(token)?;
    ["sub", "sid"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(scalar_text))
}

/// What the `Authorization` header says about who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A JWT's `sub` (or else `sid`) claim.
    Jwt(String),
    /// An opaque bearer token.
    Bearer(String),
    /// The user name of Basic authentication.
    Basic(String),
    /// An API key: the `ApiKey` and `Key` schemes.
    ApiKey(String),
}

impl Credential {
    pub fn from_authorization(value: &str) -> Option<Self> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if rest.is_empty() {
            return None;
        }
        // `Token` (Django REST framework, Rails) and `JWT` (older JWT libraries) are bearer
        // tokens by another name.
        if ["bearer", "token", "jwt"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            let subject = jwt_subject(rest);
            return Some(subject.map_or_else(|| Self::Bearer(rest.to_owned()), Self::Jwt));
        }
        if scheme.eq_ignore_ascii_case("apikey") || scheme.eq_ignore_ascii_case("key") {
            return Some(Self::ApiKey(rest.to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
            return (!user.is_empty()).then(|| Self::Basic(user.to_owned()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Request, Response};

    pub(crate) fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
    }

    fn exchange(
        uri: &str,
        request_headers: &[(&str, &str)],
        body: &[u8],
        response_headers: &[(&str, &str)],
        response_body: &[u8],
    ) -> Exchange {
        let headers = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        Exchange {
            client: "10.0.0.2:1".parse().unwrap(),
            server: "10.0.0.1:80".parse().unwrap(),
            forwarding: Default::default(),
            tls: false,
            upstream: None,
            stream_id: None,
            request: Some(Request {
                method: "POST".into(),
                uri: uri.into(),
                meta: MessageMeta {
                    headers: headers(request_headers),
                    body: body.to_vec(),
                    ..MessageMeta::default()
                },
            }),
            response: Some(Response {
                status: Some(200),
                meta: MessageMeta {
                    headers: headers(response_headers),
                    body: response_body.to_vec(),
                    ..MessageMeta::default()
                },
                ..Response::default()
            }),
        }
    }

    fn at(exchange: &Exchange, path: &str) -> Option<String> {
        value_at(exchange, &path.parse().unwrap())
    }

    #[test]
    fn every_kind_of_key_path_is_read() {
        let token = jwt(r#"{"sub":"alice","role":"admin","n":7}"#);
        let bearer = format!("Bearer {token}");
        let e = exchange(
            "/login?token=q%20v&x=1",
            &[
                ("Cookie", "a=1; sid=\"s-42\""),
                ("X-User-Id", "u9"),
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            br#"{"user":{"id":123,"tags":["a","b"]},"login":"bob"}"#,
            &[("Set-Cookie", "SESSIONID=new-sess; Path=/; HttpOnly")],
            br#"{"token":"tok-1","ok":true}"#,
        );
        assert_eq!(at(&e, "request.cookie.sid").as_deref(), Some("s-42"));
        assert_eq!(at(&e, "request.header.x-user-id").as_deref(), Some("u9"));
        assert_eq!(at(&e, "request.query.token").as_deref(), Some("q v"));
        assert_eq!(at(&e, "request.body.json.user.id").as_deref(), Some("123"));
        assert_eq!(
            at(&e, "request.body.json.user.tags.1").as_deref(),
            Some("b")
        );
        assert_eq!(
            at(&e, "request.header.Authorization.jwt.sub").as_deref(),
            Some("alice")
        );
        assert_eq!(
            at(&e, "request.header.Authorization.jwt.n").as_deref(),
            Some("7")
        );
        assert_eq!(at(&e, "response.body.json.token").as_deref(), Some("tok-1"));
        assert_eq!(
            at(&e, "response.cookie.SESSIONID").as_deref(),
            Some("new-sess")
        );
        assert_eq!(at(&e, "request.body.json.missing"), None);
        assert_eq!(at(&e, "request.cookie.nope"), None);
        let form = exchange("/f", &[], b"login=carol&password=x%26y", &[], b"");
        assert_eq!(
            at(&form, "request.body.form.login").as_deref(),
            Some("carol")
        );
        assert_eq!(
            at(&form, "request.body.form.password").as_deref(),
            Some("x&y")
        );
    }

    #[test]
    fn gzip_json_bodies_are_decoded_first() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"token":"zipped"}"#).unwrap();
        let e = exchange(
            "/",
            &[],
            b"",
            &[("Content-Encoding", "gzip")],
            &gz.finish().unwrap(),
        );
        assert_eq!(
            at(&e, "response.body.json.token").as_deref(),
            Some("zipped")
        );
    }

    #[test]
    fn authorization_schemes() {
        let token = jwt(r#"{"sid":"s1"}"#);
        assert_eq!(
            Credential::from_authorization(&format!("Bearer {token}")),
            Some(Credential::Jwt("s1".into()))
        );
        assert_eq!(
            Credential::from_authorization("Bearer opaque-123"),
            Some(Credential::Bearer("opaque-123".into()))
        );
        assert_eq!(
            Credential::from_authorization("Basic Ym9iOnNlY3JldA=="),
            Some(Credential::Basic("bob".into()))
        );
        assert_eq!(
            Credential::from_authorization("Token 9944b09199c62bcf"),
            Some(Credential::Bearer("9944b09199c62bcf".into()))
        );
        assert_eq!(
            Credential::from_authorization(&format!("JWT {}", jwt(r#"{"sub":"amy"}"#))),
            Some(Credential::Jwt("amy".into()))
        );
        for scheme in ["ApiKey", "Key", "apikey"] {
            assert_eq!(
                Credential::from_authorization(&format!("{scheme} k-1")),
                Some(Credential::ApiKey("k-1".into()))
            );
        }
        for bad in ["Bearer", "Basic !!!", "Digest x", "", "Bearer a.b.c.d"] {
            assert!(
                !matches!(
                    Credential::from_authorization(bad),
                    Some(Credential::Jwt(_)) | Some(Credential::Basic(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_input_gives_none_not_panics() {
        for token in [
            "",
            ".",
            "a.b",
            "a.!!!.c",
            "a.bnVsbA.c",
            &jwt("[1,2]"),
            &jwt("{\"sub\":{}}"),
        ] {
            assert_eq!(jwt_claim(token, "sub"), None, "{token}");
        }
        let e = exchange(
            "/?%zz=%",
            &[("Cookie", ";;=;a")],
            b"{not json",
            &[("Set-Cookie", "=")],
            b"\xff",
        );
        assert_eq!(at(&e, "request.query.x"), None);
        assert_eq!(at(&e, "request.cookie.a"), None);
        assert_eq!(at(&e, "request.body.json.a"), None);
        assert_eq!(at(&e, "response.cookie.x"), None);
    }
}

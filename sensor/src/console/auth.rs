//! Who may read the console: anyone on a loopback address without a token; with a token, only
//! requests that carry it, as `Authorization: Bearer TOKEN` (the API, Prometheus'
//! `bearer_token_file`) or as the cookie the login form sets (a browser).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use axum::{
    Form,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::console::{ConsoleError, SharedState, pages};

/// A token shorter than this is refused: it would be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
pub const COOKIE: &str = "apisessions_console";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token in {0} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort(PathBuf),
    #[error(
        "refusing to listen on {0} without a token: anyone who can reach it could read the \
         captured traffic; give --token-file FILE, or listen on a loopback address (127.0.0.1)"
    )]
    OpenWithoutToken(SocketAddr),
}

/// The console's token. Compared through BLAKE3 hashes, whose equality is constant-time, so a
/// response's timing tells nothing about how much of a guess was right.
#[derive(Clone)]
pub struct Token {
    hash: blake3::Hash,
    /// What the login cookie holds: derived from the token, so the cookie is not the token
    /// itself (a cookie that leaks does not give the bearer token for the API away).
    cookie: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token from the file's first line (surrounding white space removed).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        Self::new(token).ok_or_else(|| AuthError::TooShort(path.to_path_buf()))
    }

    pub fn new(token: &str) -> Option<Self> {
        if token.chars().count() < MIN_TOKEN_LEN {
            return None;
        }
        let key = blake3::derive_key("apisessions console login cookie v1", token.as_bytes());
        Some(Self {
            hash: blake3::hash(token.as_bytes()),
            cookie: blake3::keyed_hash(&key, b"cookie").to_hex().to_string(),
        })
    }

    pub fn matches(&self, candidate: &str) -> bool {
        blake3::hash(candidate.as_bytes()) == self.hash
    }

    fn cookie_matches(&self, candidate: &str) -> bool {
        blake3::hash(candidate.as_bytes()) == blake3::hash(self.cookie.as_bytes())
    }

    /// Whether the request carries the token (bearer header or login cookie).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_once(' '))
            .any(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && self.matches(token.trim())
            });
        bearer
            || headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .any(|(name, value)| name == COOKIE && self.cookie_matches(value))
    }
}

/// Refuses a listen address other than loopback when there is no token.
pub fn check_listen(addr: SocketAddr, token: Option<&Token>) -> Result<(), AuthError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(AuthError::OpenWithoutToken(addr));
    }
    Ok(())
}

/// The middleware in front of every route but the login page and the static assets.
pub async fn require_token(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if token.admits(request.headers()) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if request.method() == Method::GET && !path.starts_with("/api/") && path != "/metrics" {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required (Authorization: Bearer TOKEN)\n",
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

pub async fn login_page(State(state): State<SharedState>) -> Response {
    pages::login(state.token.is_some(), None).into_response()
}

/// The login form's target: the token right sets the cookie and goes to the sessions list.
pub async fn login(
    State(state): State<SharedState>,
    Form(login): Form<Login>,
) -> Result<Response, ConsoleError> {
    let Some(token) = &state.token else {
        return Ok(Redirect::to("/").into_response());
    };
    if !token.matches(login.token.trim()) {
        return Ok((
            StatusCode::UNAUTHORIZED,
            pages::login(true, Some("That is not the token.")),
        )
            .into_response());
    }
    // HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it along.
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        token.cookie
    );
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::Internal(e.to_string()))?,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_required_and_compared_whole() {
        let token = Token::new("correct horse battery staple").unwrap();
        assert!(Token::new("short").is_none());
        assert!(token.admits(&headers(&[(
            header::AUTHORIZATION,
            "Bearer correct horse battery staple"
        )])));
        assert!(token.admits(&headers(&[(
            header::AUTHORIZATION,
            "bearer  correct horse battery staple "
        )])));
        for wrong in [
            "Bearer correct horse battery",
            "Bearer correct horse battery staplex",
            "Basic correct horse battery staple",
            "correct horse battery staple",
        ] {
            assert!(
                !token.admits(&headers(&[(header::AUTHORIZATION, wrong)])),
                "{wrong}"
            );
        }
        assert!(!token.admits(&HeaderMap::new()));
        let cookie = format!("other=1; {COOKIE}={}", token.cookie);
        assert!(token.admits(&headers(&[(header::COOKIE, &cookie)])));
        // The cookie is not the token, and the token is not a cookie.
        assert_ne!(token.cookie, "correct horse battery staple");
        assert!(!token.admits(&headers(&[(
            header::COOKIE,
            &format!("{COOKIE}=correct horse battery staple")
        )])));
    }

    #[test]
    fn an_open_address_needs_a_token() {
        let token = Token::new("0123456789abcdef").unwrap();
        let open: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let local6: SocketAddr = "[::1]:7878".parse().unwrap();
        let err = check_listen(open, None).unwrap_err().to_string();
        assert!(
            err.contains("token") && err.contains("0.0.0.0:7878"),
            "{err}"
        );
        assert!(check_listen(open, Some(&token)).is_ok());
        assert!(check_listen(local, None).is_ok());
        assert!(check_listen(local6, None).is_ok());
    }

    #[test]
    fn the_token_file_is_read_trimmed() {
        let dir = std::env::temp_dir().join(format!("apis-token-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        fs::write(&path, "  0123456789abcdef  \n").unwrap();
        assert!(Token::from_file(&path).unwrap().matches("0123456789abcdef"));
        fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Token::from_file(&path),
            Err(AuthError::TooShort(_))
        ));
        assert!(matches!(
            Token::from_file(&dir.join("missing")),
            Err(AuthError::Read { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}

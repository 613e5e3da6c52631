//! The router, the headers every response carries, and serving.

use std::{future::Future, net::SocketAddr};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::console::{ConsoleError, SharedState, Token, api, auth, metrics, pages};

/// No script but the console's own files, no inline script or style, no framing, no plugins;
/// forms post only to the console.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("assets/console.css");

/// Every route of the console. Without a token it answers anyone who can connect (a loopback
/// address, see [`auth::check_listen`]); with one, every route but the login page and the
/// stylesheet needs it.
pub fn router(state: SharedState) -> Router {
    let protected = Router::new()
        .route("/", get(pages::sessions))
        .route("/sessions/{id}", get(pages::session))
        .route("/sessions/{id}/export", get(pages::export))
        .route("/endpoints", get(pages::endpoints))
        .route("/status", get(pages::status))
        .route("/api/v1/sessions", get(api::sessions))
        .route("/api/v1/sessions/{id}", get(api::session))
        .route("/api/v1/exchanges", get(api::exchanges))
        .route("/api/v1/endpoints", get(api::endpoints))
        .route("/api/v1/stats", get(api::stats))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    with_common_layers(
        protected
            .route("/login", get(auth::login_page).post(auth::login))
            .route("/static/console.css", get(css)),
        state,
    )
}

/// `/metrics` alone (`run --metrics ADDR`), under the same token rule.
pub fn metrics_router(state: SharedState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    with_common_layers(routes, state)
}

fn with_common_layers(routes: Router<SharedState>, state: SharedState) -> Router {
    routes
        .fallback(|| async { ConsoleError::NotFound("no such page".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
}

/// At most [`super::MAX_IN_FLIGHT`] requests at a time; the rest are told to come back.
async fn limit(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    match state.in_flight.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy\n",
        )
            .into_response(),
    }
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Captured traffic is not for shared caches; the stylesheet may be kept.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Binds `addr`, refusing an address other than loopback without a token.
pub async fn bind(addr: SocketAddr, token: Option<&Token>) -> Result<TcpListener, ConsoleError> {
    auth::check_listen(addr, token)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| ConsoleError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ConsoleError::Serve)
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{Body, to_bytes},
        http::{HeaderMap, Request, StatusCode},
    };
    use tower::ServiceExt as _;

    use super::*;
    use crate::console::{ConsoleOptions, ConsoleState};

    /// (status, headers, body) of one request to a console over `dir`.
    async fn call(
        state: &SharedState,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router(state.clone())
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn data_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("apis-console-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let dir = data_dir("headers");
        let state = ConsoleState::new(&dir, ConsoleOptions::default());
        for (uri, status, holds) in [
            ("/", StatusCode::OK, "No sessions match."),
            ("/status", StatusCode::OK, "No statistics"),
            ("/api/v1/sessions", StatusCode::OK, "[]"),
            ("/endpoints", StatusCode::OK, "No endpoints match."),
            ("/api/v1/endpoints", StatusCode::OK, "[]"),
            (
                "/api/v1/endpoints?status=hidden",
                StatusCode::BAD_REQUEST,
                "filter status=",
            ),
            (
                "/?attack=%3Cscript%3E",
                StatusCode::BAD_REQUEST,
                "filter attack=\"<script>\"",
            ),
            ("/metrics", StatusCode::OK, "apisessions_daemon_running 0"),
            ("/nothing-here", StatusCode::NOT_FOUND, "no such page"),
            (
                "/api/v1/sessions?status=abc",
                StatusCode::BAD_REQUEST,
                "filter status=",
            ),
            // Quoted as it came, in plain text that no browser renders as HTML (nosniff).
            (
                "/sessions/%3Cscript%3E",
                StatusCode::BAD_REQUEST,
                "'<script>' is not a session id",
            ),
            ("/static/console.css", StatusCode::OK, "font"),
        ] {
            let (got, headers, body) = call(&state, "GET", uri, &[], "").await;
            assert_eq!(got, status, "{uri}: {body}");
            assert!(body.contains(holds), "{uri}: {body}");
            if !status.is_success() {
                assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
            }
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_token_guards_everything_but_the_login() {
        let dir = data_dir("token");
        let token = Token::new("0123456789abcdef-token").unwrap();
        let state = ConsoleState::new(
            &dir,
            ConsoleOptions {
                token: Some(token),
                ..ConsoleOptions::default()
            },
        );
        let (status, headers, _) = call(&state, "GET", "/", &[], "").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/login");
        for uri in ["/api/v1/sessions", "/metrics", "/api/v1/stats"] {
            assert_eq!(
                call(&state, "GET", uri, &[], "").await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
        }
        let bearer = [("authorization", "Bearer 0123456789abcdef-token")];
        assert_eq!(
            call(&state, "GET", "/api/v1/sessions", &bearer, "").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&state, "GET", "/login", &[], "").await.0,
            StatusCode::OK
        );
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let (status, headers, _) = call(&state, "POST", "/login", &form, "token=wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.get(header::SET_COOKIE).is_none());
        let (status, headers, _) = call(
            &state,
            "POST",
            "/login",
            &form,
            "token=0123456789abcdef-token",
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        let (status, _, body) = call(&state, "GET", "/", &[("cookie", pair)], "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The JSON API under `/api/v1/`: the objects of `sessions --json` and `show --json`
//! ([`SessionSummary::to_json`], [`StoredExchange::to_json`]), of `endpoints --json`
//! ([`EndpointRow`]) and of `stats --json`.

use std::time::SystemTime;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    analysis::inventory::EndpointRow,
    console::{
        ConsoleError, Listed, SharedState,
        filters::{API_DEFAULT_LIMIT, API_MAX_LIMIT, EndpointQuery, SessionQuery},
    },
    report,
    stats::StatsReport,
};

/// `GET /api/v1/sessions`: the list's filters as query parameters, `limit` (default 1000, at
/// most 10000) and `page`; an array, newest first.
pub async fn sessions(
    State(state): State<SharedState>,
    Query(query): Query<SessionQuery>,
) -> Result<Json<Vec<Value>>, ConsoleError> {
    let filters = query
        .parse(SystemTime::now(), API_DEFAULT_LIMIT)
        .map_err(ConsoleError::BadRequest)?;
    let (list, _) = state.sessions(filters).await?;
    Ok(Json(list.iter().map(Listed::to_json).collect()))
}

/// `GET /api/v1/sessions/{id}`: what `show --json` prints (`show --central --json` with
/// `ui --central`).
pub async fn session(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ConsoleError> {
    crate::store::id_bytes(&id)?;
    let (listed, exchanges, _) = state.session(id, usize::MAX, |_| true).await?;
    let mut object = listed.to_json();
    object["exchanges"] = exchanges
        .iter()
        .map(|e| e.to_json(&listed.summary().session_id))
        .collect();
    Ok(Json(object))
}

#[derive(Debug, Default, Deserialize)]
pub struct ExchangesQuery {
    session: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/exchanges`: NDJSON records (as `export`), of one `session` or of the sessions
/// active between `since` and `until`, at most `limit` (default 1000, at most 10000).
pub async fn exchanges(
    State(state): State<SharedState>,
    Query(query): Query<ExchangesQuery>,
) -> Result<Json<Vec<Value>>, ConsoleError> {
    let now = SystemTime::now();
    let time = |text: &Option<String>| {
        text.as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| report::parse_time(t.trim(), now).map_err(ConsoleError::BadRequest))
            .transpose()
    };
    let (since, until) = (
        time(&query.since)?.unwrap_or(0),
        time(&query.until)?.unwrap_or(u64::MAX),
    );
    let limit = query
        .limit
        .unwrap_or(API_DEFAULT_LIMIT)
        .clamp(1, API_MAX_LIMIT);
    if let Some(id) = &query.session {
        crate::store::id_bytes(id)?;
    }
    let records = state
        .exchanges(query.session, (since, until), limit)
        .await?;
    Ok(Json(records))
}

/// `GET /api/v1/endpoints`: what `endpoints --json` prints, with its filters (`host`, `status`,
/// `since`) and `method`, `endpoint`.
pub async fn endpoints(
    State(state): State<SharedState>,
    Query(query): Query<EndpointQuery>,
) -> Result<Json<Vec<EndpointRow>>, ConsoleError> {
    let filter = query
        .parse(SystemTime::now())
        .map_err(ConsoleError::BadRequest)?;
    Ok(Json(state.endpoints(filter).await?))
}

/// `GET /api/v1/stats`: what `stats --json` prints.
pub async fn stats(State(state): State<SharedState>) -> Result<Json<StatsReport>, ConsoleError> {
    Ok(Json(StatsReport::read(state.data_dir())?))
}

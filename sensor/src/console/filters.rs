//! The sessions list's filters as query parameters: parsed into a [`SessionFilter`] for the
//! store, and written back into links so that a filtered page can be shared and paged.

use std::time::SystemTime;

use serde::Deserialize;

use crate::{
    analysis::inventory::EndpointFilter,
    record::{SignalName, SpecStatus},
    report,
    store::SessionFilter,
};

/// Sessions per page of the list (the API's default `limit`).
pub const PAGE_SIZE: usize = 50;
/// Pages reachable at most: the store reads `page * PAGE_SIZE` summaries to show one page.
pub const MAX_PAGE: usize = 200;
/// Summaries one request reads at most (`page` × page size): deeper pages are refused.
pub const MAX_DEPTH: usize = 100_000;
/// Sessions the API returns without a `limit`, and at most.
pub const API_DEFAULT_LIMIT: usize = 1000;
pub const API_MAX_LIMIT: usize = 10_000;

/// The filters as they come in a URL; empty values (a form's blank fields) are absent.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SessionQuery {
    pub since: Option<String>,
    pub until: Option<String>,
    pub host: Option<String>,
    pub user: Option<String>,
    pub ip: Option<String>,
    pub status: Option<String>,
    pub method: Option<String>,
    pub endpoint: Option<String>,
    pub min_risk: Option<String>,
    pub signal: Option<String>,
    /// Any value but `0`: sessions with attack findings (`sessions --attacks`).
    pub attacks: Option<String>,
    /// Sessions with findings of this class (`sessions --attack CLASS`).
    pub attack: Option<String>,
    /// Any value but `0`: sessions with slow requests (`sessions --slow`).
    pub slow: Option<String>,
    pub session: Option<String>,
    pub page: Option<String>,
    pub limit: Option<String>,
}

/// What a [`SessionQuery`] asks the store for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub filter: SessionFilter,
    /// Only this session id.
    pub session: Option<String>,
    /// 1-based.
    pub page: usize,
    pub page_size: usize,
}

/// `path` with the query string of `pairs` with `changes` applied (`None` removes a field);
/// every value percent-encoded.
pub fn link(path: &str, pairs: &[(&str, &str)], changes: &[(&str, Option<&str>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if !changes.iter().any(|(n, _)| n == name) {
            query.append_pair(name, value);
        }
    }
    for (name, value) in changes {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// A query's fields by name, in URL order.
type Fields<'a, const N: usize> = [(&'static str, &'a Option<String>); N];

/// The fields present and not blank (trimmed), in order.
fn present<'a, const N: usize>(fields: Fields<'a, N>) -> Vec<(&'static str, &'a str)> {
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
        .collect()
}

/// The value of the field `name` among `pairs`.
pub fn value_of<'a>(pairs: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Whether some field is present but blank (a submitted form's empty fields).
fn any_blank<const N: usize>(fields: Fields<'_, N>) -> bool {
    fields
        .into_iter()
        .any(|(_, v)| v.as_deref().is_some_and(|v| v.trim().is_empty()))
}

fn bad(name: &str, value: &str, why: impl std::fmt::Display) -> String {
    format!("filter {name}={value:?}: {why}")
}

impl SessionQuery {
    fn fields(&self) -> Fields<'_, 16> {
        [
            ("since", &self.since),
            ("until", &self.until),
            ("host", &self.host),
            ("user", &self.user),
            ("ip", &self.ip),
            ("status", &self.status),
            ("method", &self.method),
            ("endpoint", &self.endpoint),
            ("min_risk", &self.min_risk),
            ("signal", &self.signal),
            ("attacks", &self.attacks),
            ("attack", &self.attack),
            ("slow", &self.slow),
            ("session", &self.session),
            ("page", &self.page),
            ("limit", &self.limit),
        ]
    }

    /// The filter fields in URL order, present and non-empty only.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        present(self.fields())
    }

    fn get(&self, name: &str) -> Option<&str> {
        value_of(&self.pairs(), name)
    }

    /// The query string of these filters with `changes` applied (`None` removes a field), e.g.
    /// the next page or one more filter; every value percent-encoded.
    pub fn link(&self, path: &str, changes: &[(&str, Option<&str>)]) -> String {
        link(path, &self.pairs(), changes)
    }

    /// Whether some field is present but blank (a submitted form's empty fields): the list then
    /// redirects to [`SessionQuery::link`]'s shorter URL, the one to share.
    pub fn has_blanks(&self) -> bool {
        any_blank(self.fields())
    }

    /// Whether any filter (besides paging) is set.
    pub fn any(&self) -> bool {
        self.pairs()
            .iter()
            .any(|(name, _)| !matches!(*name, "page" | "limit"))
    }

    /// The store filter, for a page of `page_size` sessions (`limit` overrides it, for the API).
    pub fn parse(&self, now: SystemTime, page_size: usize) -> Result<Filters, String> {
        let time = |name| {
            self.get(name)
                .map(|v| report::parse_time(v, now).map_err(|e| bad(name, v, e)))
                .transpose()
        };
        let number = |name, max: u64| {
            self.get(name)
                .map(|v| match v.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(bad(name, v, format!("not a number from 0 to {max}"))),
                })
                .transpose()
        };
        let text = |name| self.get(name).map(str::to_owned);
        let page = number("page", MAX_PAGE as u64)?.unwrap_or(1).max(1) as usize;
        let limit = match number("limit", API_MAX_LIMIT as u64)? {
            Some(0) | None => page_size,
            Some(n) => n as usize,
        };
        if page.saturating_mul(limit) > MAX_DEPTH {
            return Err(bad(
                "page",
                &page.to_string(),
                format!(
                    "{limit} sessions a page reach deeper than {MAX_DEPTH} sessions: narrow the \
                     filters (since, until) instead"
                ),
            ));
        }
        let session = match self.get("session") {
            Some(id) => {
                crate::store::id_bytes(id).map_err(|e| bad("session", id, e))?;
                Some(id.to_ascii_lowercase())
            }
            None => None,
        };
        Ok(Filters {
            filter: SessionFilter {
                since_ns: time("since")?,
                until_ns: time("until")?,
                ip: text("ip"),
                host: text("host"),
                // A concrete path finds its template's sessions too, as in the CLI.
                endpoint: self.get("endpoint").map(crate::endpoint::template),
                method: text("method"),
                status: number("status", 999)?.map(|s| s as u16),
                user: text("user"),
                min_risk: number("min_risk", 100)?.map(|r| r as u8),
                signal: self
                    .get("signal")
                    .map(|v| v.parse::<SignalName>().map_err(|e| bad("signal", v, e)))
                    .transpose()?,
                attacks: self.get("attacks").is_some_and(|v| v != "0"),
                slow: self.get("slow").is_some_and(|v| v != "0"),
                attack: self
                    .get("attack")
                    .map(|v| {
                        crate::record::AttackClass::from_name(v)
                            .ok_or_else(|| bad("attack", v, "not an attack class"))
                    })
                    .transpose()?,
                // One more than the page, to know whether a next page exists.
                limit: page.saturating_mul(limit).saturating_add(1),
            },
            session,
            page,
            page_size: limit,
        })
    }
}

/// The session page's filters on its own timeline (its statistics link to them), and the
/// "attacks only" toggle (`show --attacks-only`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TimelineQuery {
    pub method: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    pub ip: Option<String>,
    /// Requests with findings of this attack class.
    pub attack: Option<String>,
    /// Any value but `0`: only the requests with attack findings.
    pub attacks: Option<String>,
}

impl TimelineQuery {
    fn value(field: &Option<String>) -> Option<&str> {
        field.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    /// The fields in URL order, present and non-empty only.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        present([
            ("method", &self.method),
            ("status", &self.status),
            ("endpoint", &self.endpoint),
            ("ip", &self.ip),
            ("attack", &self.attack),
            ("attacks", &self.attacks),
        ])
    }

    pub fn any(&self) -> bool {
        !self.pairs().is_empty()
    }

    pub fn attacks_only(&self) -> bool {
        Self::value(&self.attacks).is_some_and(|v| v != "0")
    }

    /// The session page's URL with these filters and `changes` applied (`None` removes one);
    /// every value percent-encoded.
    pub fn link(&self, id: &str, changes: &[(&str, Option<&str>)]) -> String {
        link(&format!("/sessions/{id}"), &self.pairs(), changes)
    }

    pub fn matches(&self, e: &crate::record::StoredExchange) -> bool {
        Self::value(&self.method).is_none_or(|m| {
            e.method
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(m))
        }) && Self::value(&self.status).is_none_or(|s| e.status_code.unwrap_or(0).to_string() == s)
            && Self::value(&self.endpoint).is_none_or(|p| e.endpoint.as_deref() == Some(p))
            && Self::value(&self.ip).is_none_or(|ip| e.client_ip == ip)
            && Self::value(&self.attack)
                .is_none_or(|class| e.attacks.iter().any(|f| f.class.as_str() == class))
            && (!self.attacks_only() || !e.attacks.is_empty())
    }
}

/// The endpoints page's filters (those of `apisessions endpoints`, and the method and template
/// a request's link names).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct EndpointQuery {
    pub host: Option<String>,
    /// The spec status: `documented`, `shadow`, `zombie` or `orphan`.
    pub status: Option<String>,
    pub since: Option<String>,
    pub method: Option<String>,
    pub endpoint: Option<String>,
}

impl EndpointQuery {
    fn fields(&self) -> Fields<'_, 5> {
        [
            ("host", &self.host),
            ("status", &self.status),
            ("since", &self.since),
            ("method", &self.method),
            ("endpoint", &self.endpoint),
        ]
    }

    /// The fields in URL order, present and non-empty only.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        present(self.fields())
    }

    fn get(&self, name: &str) -> Option<&str> {
        value_of(&self.pairs(), name)
    }

    /// Whether some field is present but blank: the page then redirects to the shorter URL.
    pub fn has_blanks(&self) -> bool {
        any_blank(self.fields())
    }

    pub fn parse(&self, now: SystemTime) -> Result<EndpointFilter, String> {
        Ok(EndpointFilter {
            host: self.get("host").map(str::to_owned),
            status: self
                .get("status")
                .map(|v| {
                    SpecStatus::from_name(v).ok_or_else(|| {
                        bad("status", v, "not one of documented, shadow, zombie, orphan")
                    })
                })
                .transpose()?,
            since_ns: self
                .get("since")
                .map(|v| report::parse_time(v, now).map_err(|e| bad("since", v, e)))
                .transpose()?,
            method: self.get("method").map(str::to_owned),
            endpoint: self.get("endpoint").map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn query(pairs: &str) -> SessionQuery {
        serde_urlencoded::from_str(pairs).unwrap()
    }

    #[test]
    fn parses_every_filter() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let q = query(
            "since=1h&until=1970-01-01T02:00:00Z&host=api.test&user=alice&ip=10.0.0.1&status=404\
             &method=GET&endpoint=/users/42&min_risk=50&signal=errors&page=3",
        );
        let f = q.parse(now, 10).unwrap();
        assert_eq!(f.filter.since_ns, Some(6_400 * 1_000_000_000));
        assert_eq!(f.filter.until_ns, Some(7_200 * 1_000_000_000));
        assert_eq!(f.filter.host.as_deref(), Some("api.test"));
        assert_eq!(f.filter.user.as_deref(), Some("alice"));
        assert_eq!(f.filter.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.filter.status, Some(404));
        assert_eq!(f.filter.method.as_deref(), Some("GET"));
        assert_eq!(f.filter.endpoint.as_deref(), Some("/users/{id}"));
        assert_eq!(f.filter.min_risk, Some(50));
        assert_eq!(f.filter.signal, Some(SignalName::Errors));
        assert_eq!(f.page, 3);
        assert_eq!(f.filter.limit, 31);
    }

    #[test]
    fn blank_fields_are_absent_and_bad_values_named() {
        let f = query("host=&ip=+&page=")
            .parse(SystemTime::now(), 50)
            .unwrap();
        assert_eq!(
            f,
            Filters {
                filter: SessionFilter {
                    limit: 51,
                    ..SessionFilter::default()
                },
                session: None,
                page: 1,
                page_size: 50,
            }
        );
        for (q, name) in [
            ("status=abc", "status"),
            ("min_risk=101", "min_risk"),
            ("signal=nope", "signal"),
            ("since=yesterday-ish", "since"),
            ("session=<script>", "session"),
            ("page=100000", "page"),
            ("page=200&limit=10000", "page"),
        ] {
            let err = query(q).parse(SystemTime::now(), 50).unwrap_err();
            assert!(err.starts_with(&format!("filter {name}=")), "{q}: {err}");
        }
    }

    #[test]
    fn the_list_filters_by_attacks() {
        let f = query("attacks=1&attack=path_traversal&slow=1")
            .parse(SystemTime::now(), 50)
            .unwrap();
        assert!(f.filter.attacks && f.filter.slow);
        assert_eq!(
            f.filter.attack,
            Some(crate::record::AttackClass::PathTraversal)
        );
        let err = query("attack=nope")
            .parse(SystemTime::now(), 50)
            .unwrap_err();
        assert!(err.starts_with("filter attack="), "{err}");
        assert!(query("attack=").has_blanks());
        assert_eq!(
            query("attack=xss&page=2").link("/", &[("page", None)]),
            "/?attack=xss"
        );
    }

    #[test]
    fn endpoint_filters_parse_and_name_bad_values() {
        let f = EndpointQuery {
            host: Some("API.test".into()),
            status: Some("shadow".into()),
            method: Some("get".into()),
            endpoint: Some("/users/{id}".into()),
            since: Some(" ".into()),
        }
        .parse(SystemTime::now())
        .unwrap();
        assert_eq!(f.status, Some(SpecStatus::Shadow));
        assert_eq!(f.host.as_deref(), Some("API.test"));
        assert_eq!(f.since_ns, None);
        let bad = EndpointQuery {
            status: Some("hidden".into()),
            ..EndpointQuery::default()
        };
        assert!(
            bad.parse(SystemTime::now())
                .unwrap_err()
                .starts_with("filter status=")
        );
    }

    #[test]
    fn links_keep_the_filters_and_encode_them() {
        let q = query("host=a%26b&status=404&page=2");
        assert_eq!(
            q.link("/", &[("page", Some("3"))]),
            "/?host=a%26b&status=404&page=3"
        );
        assert_eq!(
            q.link("/", &[("page", None), ("status", None)]),
            "/?host=a%26b"
        );
        assert_eq!(
            SessionQuery::default().link("/", &[("ip", Some("\"><img src=x>"))]),
            "/?ip=%22%3E%3Cimg+src%3Dx%3E"
        );
        assert!(q.any());
        assert!(!query("page=2").any());
        assert!(query("host=&ip=1").has_blanks());
        assert!(!q.has_blanks());
    }
}

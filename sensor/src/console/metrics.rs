//! `/metrics`: every counter of `apisessions stats` in the Prometheus (OpenMetrics) text format,
//! through the prometheus-client crate.
//!
//! The figures come from the statistics file the daemon rewrites every second (the console may
//! run in another process), so a registry is filled from that snapshot at each scrape: one
//! metric per counter, named `apisessions_<stage>_<counter>` (a counter gets `_total`). The few
//! figures that are levels rather than totals (open flows, buffered bytes) are gauges.

use std::collections::HashSet;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use crate::{
    console::{ConsoleError, SharedState},
    stats::{StatsError, StatsReport},
};

/// The OpenMetrics text format's media type (Prometheus asks for it first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Statistics that are levels at the time of the snapshot, not totals since the start.
const LEVELS: &[&str] = &[
    "active",
    "buffered_bytes",
    "cached",
    "containers",
    "join_waiting",
    "sessions_tracked",
];

/// `name` with every character a metric name cannot hold replaced by `_`.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The registry of one snapshot (None: the daemon has not written statistics yet).
pub fn registry(report: Option<&StatsReport>) -> Registry {
    let mut registry = Registry::with_prefix("apisessions");
    let running = Gauge::<i64>::default();
    running.set(i64::from(report.is_some_and(StatsReport::writer_alive)));
    registry.register(
        "daemon_running",
        "Whether the daemon that writes these statistics runs (1) or last wrote them before \
         stopping (0)",
        running,
    );
    let Some(report) = report else {
        return registry;
    };
    let ports = Gauge::<i64>::default();
    ports.set(report.ports.len() as i64);
    registry.register(
        "watched_ports",
        "TCP ports the kernel watches or mutes",
        ports,
    );
    let mut names = HashSet::new();
    for (stage, counters) in &report.stages {
        for (name, &value) in counters {
            let metric = format!("{}_{}", metric_name(stage), metric_name(name));
            // Two statistics that read the same once made metric names would be one sample
            // twice; the first is kept.
            if !names.insert(metric.clone()) {
                log::warn!("metrics: {stage}.{name} has the name of another statistic");
                continue;
            }
            let help = format!("apisessions stats: [{stage}] {name}");
            if LEVELS.contains(&name.as_str()) {
                let gauge = Gauge::<i64>::default();
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
                registry.register(metric, help, gauge);
            } else {
                let counter = Counter::<u64>::default();
                counter.inc_by(value);
                registry.register(metric, help, counter);
            }
        }
    }
    registry
}

pub fn render(report: Option<&StatsReport>) -> Result<String, ConsoleError> {
    let mut text = String::new();
    encode(&mut text, &registry(report)).map_err(|e| ConsoleError::Internal(e.to_string()))?;
    Ok(text)
}

pub async fn metrics(State(state): State<SharedState>) -> Result<Response, ConsoleError> {
    let report = match StatsReport::read(state.data_dir()) {
        Ok(report) => Some(report),
        Err(StatsError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(report.as_ref())?,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_a_sample() {
        let mut report = StatsReport::default();
        report.set_stage("kernel", [("ring_full", 3), ("packets", 10)]);
        report.set_stage("flows", [("active", 4), ("created", 9)]);
        let text = render(Some(&report)).unwrap();
        for line in [
            "# TYPE apisessions_kernel_ring_full counter",
            "apisessions_kernel_ring_full_total 3",
            "apisessions_kernel_packets_total 10",
            "# TYPE apisessions_flows_active gauge",
            "apisessions_flows_active 4",
            "apisessions_flows_created_total 9",
            "apisessions_daemon_running 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            render(None)
                .unwrap()
                .contains("apisessions_daemon_running 0")
        );
        assert_eq!(metric_name("a.b-C"), "a_b_c");
    }
}

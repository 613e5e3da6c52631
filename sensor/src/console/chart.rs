//! The session page's chart, drawn on the server as SVG: requests per time slice (bars) and
//! their mean time to first byte (a line) over the session's time. No script, no library.

use maud::{Markup, html};

use crate::{record::StoredExchange, report};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
/// Room for the axis labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const SLICES: usize = 60;

/// Requests and mean TTFB per slice of the time the exchanges span.
struct Slices {
    start_ns: u64,
    width_ns: u64,
    counts: Vec<u64>,
    ttfb_ms: Vec<Option<f64>>,
}

fn slices(exchanges: &[StoredExchange]) -> Option<Slices> {
    let start_ns = exchanges.iter().map(|e| e.ts_ns).min()?;
    let end_ns = exchanges.iter().map(|e| e.ts_ns).max()?;
    let width_ns = (end_ns - start_ns) / SLICES as u64 + 1;
    let mut counts = vec![0u64; SLICES];
    let mut sums = vec![(0.0f64, 0u64); SLICES];
    for e in exchanges {
        let i = (((e.ts_ns - start_ns) / width_ns) as usize).min(SLICES - 1);
        counts[i] += 1;
        if let Some(us) = e.ttfb_us {
            sums[i].0 += us as f64 / 1000.0;
            sums[i].1 += 1;
        }
    }
    let ttfb_ms = sums
        .iter()
        .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
        .collect();
    Some(Slices {
        start_ns,
        width_ns,
        counts,
        ttfb_ms,
    })
}

/// The chart, or a line saying there is nothing to draw.
pub fn requests_and_latency(exchanges: &[StoredExchange]) -> Markup {
    let Some(s) = slices(exchanges) else {
        return html! { p.muted { "No requests to chart." } };
    };
    let max_count = s.counts.iter().copied().max().unwrap_or(1).max(1);
    let max_ms = s.ttfb_ms.iter().flatten().copied().fold(0.0, f64::max);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = plot_w / SLICES as f64;
    let y = |fraction: f64| TOP + plot_h * (1.0 - fraction);
    let line: Vec<String> = s
        .ttfb_ms
        .iter()
        .enumerate()
        .filter_map(|(i, ms)| {
            ms.map(|ms| {
                let fraction = if max_ms > 0.0 { ms / max_ms } else { 0.0 };
                format!("{:.1},{:.1}", LEFT + slot * (i as f64 + 0.5), y(fraction))
            })
        })
        .collect();
    let end_ns = s.start_ns + s.width_ns * SLICES as u64;
    // Seconds are enough for a long session; a short one needs the fractions to tell its ends.
    let label = |ns: u64| {
        if end_ns - s.start_ns < 60_000_000_000 {
            crate::exchange::rfc3339_ns(ns)
        } else {
            report::time_s(ns)
        }
    };
    html! {
        svg.chart viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-label="Requests and mean time to first byte over the session" {
            line.axis x1=(LEFT) y1=(y(0.0)) x2=(WIDTH) y2=(y(0.0)) {}
            @for (i, &count) in s.counts.iter().enumerate() {
                @if count > 0 {
                    @let h = plot_h * count as f64 / max_count as f64;
                    rect.bar x=(format!("{:.1}", LEFT + slot * i as f64 + 0.5))
                        y=(format!("{:.1}", y(0.0) - h)) width=(format!("{:.1}", (slot - 1.0).max(0.5)))
                        height=(format!("{:.1}", h)) {
                        title {
                            (report::time_s(s.start_ns + s.width_ns * i as u64)) ": " (count)
                            " requests"
                            @if let Some(ms) = s.ttfb_ms[i] { ", mean TTFB " (format!("{ms:.1}")) " ms" }
                        }
                    }
                }
            }
            @if line.len() > 1 {
                polyline.latency points=(line.join(" ")) {}
            }
            text.label x="2" y=(TOP + 10.0) { (max_count) " req" }
            text.label.latency-label x="2" y=(TOP + 24.0) { (format!("{max_ms:.1}")) " ms" }
            text.label x=(LEFT) y=(HEIGHT - 4.0) { (label(s.start_ns)) }
            text.label x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { (label(end_ns)) }
        }
    }
}

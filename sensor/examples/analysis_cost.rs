//! What the analysis stages cost per exchange on a capture, for `cargo xtask bench` (the
//! analysis phase, run on the bench's own generated traffic).
//!
//! `analysis_cost PCAP ROUNDS` decodes the capture once (no store), then times the attack
//! detector and the endpoint inventory over every decoded exchange, ROUNDS times, and prints one
//! JSON object: the exchanges, and per stage the mean CPU time per exchange of each round (ns,
//! the thread's own CPU clock, so time spent descheduled on a busy machine does not count) and
//! the median wall time of single calls over all rounds (ns). The stages are timed alone,
//! outside the pipeline, so that decoding, sessions and the store do not blur their figures.

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use apisessions::{
    analysis::{
        attacks::{AttacksConfig, Detector},
        inventory::Inventory,
    },
    config::inventory::InventoryConfig,
    flow::FlowConfig,
    pipeline::{Collect, Pipeline},
    proxy::ProxyConfig,
    source::PcapSource,
};
use nix::time::{ClockId, clock_gettime};

// The daemon's and import's allocator (see src/bin/apisessions/main.rs), so that the figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(pcap), Some(rounds)) = (args.next(), args.next()) else {
        bail!("usage: analysis_cost PCAP ROUNDS");
    };
    let pcap = PathBuf::from(pcap);
    let rounds: usize = rounds.parse().context("ROUNDS: a number")?;

    let collect = Collect::default();
    let mut pipeline = Pipeline::decoder(FlowConfig::default(), ProxyConfig::default())
        .with_sink(Box::new(collect.clone()));
    let mut source =
        PcapSource::open(&pcap).with_context(|| format!("opening {}", pcap.display()))?;
    while let Some(segment) = source.next_segment()? {
        pipeline.push(segment)?;
    }
    pipeline.finish()?;
    let exchanges = collect.take();
    if exchanges.is_empty() {
        bail!("{}: no exchange decoded", pcap.display());
    }

    let detector = Detector::new(&AttacksConfig::default())?;
    let hash = |value: &str| format!("h:{}", value.len());
    let mut findings = 0usize;
    let attacks = timed(rounds, exchanges.len(), |i| {
        if let Some(request) = &exchanges[i].request {
            findings += black_box(detector.inspect(black_box(request), &hash))
                .findings
                .len();
        }
    });

    // One inventory for every round: after the first, it holds what a running daemon holds
    // (templates learned, sketches filled), which is the state its cost matters in.
    let mut inventory = Inventory::new(InventoryConfig::default(), Vec::new());
    let inventory_cost = timed(rounds, exchanges.len(), |i| {
        black_box(inventory.observe(black_box(&exchanges[i]), "bench-session"));
    });

    let json = serde_json::json!({
        "exchanges": exchanges.len(),
        "rounds": rounds,
        // Findings on the bench's traffic are false positives: it holds no attack.
        "attack_findings": findings / rounds.max(1),
        "attacks": attacks.json(),
        "inventory": inventory_cost.json(),
    });
    println!("{json}");
    Ok(())
}

/// Per-round means and single-call times of one stage.
struct Cost {
    round_means_ns: Vec<f64>,
    calls_ns: Vec<u64>,
}

impl Cost {
    fn json(mut self) -> serde_json::Value {
        self.calls_ns.sort_unstable();
        let call_median = self.calls_ns.get(self.calls_ns.len() / 2).copied();
        serde_json::json!({
            "round_means_ns": self.round_means_ns,
            "call_median_ns": call_median,
        })
    }
}

/// This thread's CPU time so far (zero if the clock cannot be read, which Linux always can).
fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Calls `stage` on every exchange index, `rounds` times; each call also timed alone (the clock
/// reads, ~20 ns each, are inside the single-call figures, not the round means).
fn timed(rounds: usize, exchanges: usize, mut stage: impl FnMut(usize)) -> Cost {
    let mut cost = Cost {
        round_means_ns: Vec::with_capacity(rounds),
        calls_ns: Vec::with_capacity(rounds * exchanges),
    };
    for _ in 0..rounds {
        let round = thread_cpu();
        for i in 0..exchanges {
            stage(i);
        }
        let elapsed = thread_cpu().saturating_sub(round);
        cost.round_means_ns
            .push(elapsed.as_nanos() as f64 / exchanges as f64);
        for i in 0..exchanges.min(20_000) {
            let start = Instant::now();
            stage(i);
            cost.calls_ns.push(start.elapsed().as_nanos() as u64);
        }
    }
    cost
}

//! The analysis phase: what attack detection and the endpoint inventory cost per exchange on the
//! bench's own traffic (the offline phase's generated capture), and the detector's rates on the
//! payload and benign corpora of tests/data/attacks.
//!
//! The cost comes from `analysis_cost` (sensor/examples/), which times each stage alone over
//! every exchange of the capture; the rates from the detector's corpus tests
//! (`analysis::attacks::corpus_tests`), run from the release build, whose printed lines are the
//! figures (one source of truth for the test's floors and the bench's table).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{host::check_interrupt, offline, report::Spread};
use crate::workspace_root;

/// Exchanges of the generated capture the stages are timed on: the offline phase's traffic,
/// a size whose decoded exchanges fit in memory at once.
pub const EXCHANGES: u64 = 100_000;

/// The detector's goal per exchange on the bench's traffic (the attacks issue).
pub const ATTACKS_GOAL_NS: f64 = 1000.0;

pub struct AnalysisOutcome {
    /// The capture the stages were timed on.
    pub file: PathBuf,
    pub exchanges: u64,
    /// Findings on the bench's traffic (it holds no attack: every one is a false positive).
    pub attack_findings: u64,
    /// Mean ns per exchange of each run's rounds, over every run.
    pub attacks_ns: Spread,
    pub attacks_call_median_ns: f64,
    pub inventory_ns: Spread,
    pub inventory_call_median_ns: f64,
    /// Per payload corpus: file, class, detected, total.
    pub corpora: Vec<(String, String, u64, u64)>,
    /// Benign requests flagged, of all benign requests.
    pub benign: (u64, u64),
    /// Per class: benign requests flagged with it (its false positives).
    pub benign_by_class: Vec<(String, u64)>,
}

fn cost_binary() -> PathBuf {
    super::example_binary("analysis_cost")
}

pub fn build() -> Result<()> {
    super::build_example("analysis_cost")
}

/// `runs` runs of `analysis_cost` on the generated capture of `exchanges` exchanges (each run
/// times 3 rounds over it), then the corpus tests once.
pub fn run(out_dir: &Path, exchanges: u64, runs: u32) -> Result<AnalysisOutcome> {
    let (file, _) = offline::capture(out_dir, exchanges)?;
    let mut attacks = Vec::new();
    let mut inventory = Vec::new();
    let mut attacks_calls = Vec::new();
    let mut inventory_calls = Vec::new();
    let mut decoded = 0;
    let mut attack_findings = 0;
    for _ in 0..runs {
        check_interrupt()?;
        let out = Command::new(cost_binary())
            .arg(&file)
            .arg("3")
            .stderr(Stdio::inherit())
            .output()
            .context("starting analysis_cost")?;
        if !out.status.success() {
            bail!("analysis_cost failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value: Value = serde_json::from_str(text.trim())
            .with_context(|| format!("analysis_cost printed {text:?}"))?;
        decoded = value["exchanges"].as_u64().unwrap_or(0);
        attack_findings = attack_findings.max(value["attack_findings"].as_u64().unwrap_or(0));
        let means = |stage: &str| -> Vec<f64> {
            value[stage]["round_means_ns"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        attacks.extend(means("attacks"));
        inventory.extend(means("inventory"));
        attacks_calls.extend(value["attacks"]["call_median_ns"].as_f64());
        inventory_calls.extend(value["inventory"]["call_median_ns"].as_f64());
    }
    if decoded == 0 {
        bail!("analysis_cost decoded no exchange of {}", file.display());
    }
    let CorpusRates {
        corpora,
        benign,
        benign_by_class,
    } = corpus_rates()?;
    Ok(AnalysisOutcome {
        file,
        exchanges: decoded,
        attack_findings,
        attacks_ns: Spread::of(attacks),
        attacks_call_median_ns: Spread::of(attacks_calls).median,
        inventory_ns: Spread::of(inventory),
        inventory_call_median_ns: Spread::of(inventory_calls).median,
        corpora,
        benign,
        benign_by_class,
    })
}

/// What the corpus tests printed.
#[derive(Debug, Default, PartialEq)]
struct CorpusRates {
    /// File, class, detected, total.
    corpora: Vec<(String, String, u64, u64)>,
    /// Benign requests flagged, of all.
    benign: (u64, u64),
    /// Class, benign requests flagged with it.
    benign_by_class: Vec<(String, u64)>,
}

/// The detector's corpus tests, from the release build; their lines
/// `attacks corpus FILE CLASS DETECTED/TOTAL RATE %` and
/// `attacks benign total FLAGGED/TOTAL requests flagged = RATE %`.
fn corpus_rates() -> Result<CorpusRates> {
    println!("xtask: analysis: the detector's corpus tests (release build)");
    let out = Command::new("cargo")
        .args([
            "test",
            "--release",
            "--package",
            "apisessions",
            "--lib",
            "analysis::attacks::corpus",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running the corpus tests")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the detector's corpus tests failed:\n{text}");
    }
    Ok(parse_corpus_lines(&text))
}

fn parse_corpus_lines(text: &str) -> CorpusRates {
    let fraction = |field: &str| -> Option<(u64, u64)> {
        let (a, b) = field.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let mut rates = CorpusRates::default();
    for line in text.lines() {
        // libtest prints a test's name and its first output on one line.
        let Some(at) = line.find("attacks ") else {
            continue;
        };
        let words: Vec<&str> = line[at..].split_whitespace().collect();
        match words.as_slice() {
            ["attacks", "corpus", file, class, counts, ..] => {
                if let Some((detected, total)) = fraction(counts) {
                    let entry = ((*file).to_owned(), (*class).to_owned(), detected, total);
                    rates.corpora.push(entry);
                }
            }
            ["attacks", "benign", "class", class, counts, ..] => {
                if let Some((flagged, _)) = fraction(counts) {
                    rates.benign_by_class.push(((*class).to_owned(), flagged));
                }
            }
            ["attacks", "benign", "total", counts, ..] => {
                rates.benign = fraction(counts).unwrap_or(rates.benign);
            }
            _ => {}
        }
    }
    rates
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl AnalysisOutcome {
    pub fn attacks_met(&self) -> bool {
        self.attacks_ns.median <= ATTACKS_GOAL_NS
    }

    /// The report's section (its heading included).
    pub fn markdown(&self) -> Result<String> {
        let mut md = String::new();
        writeln!(md, "\n## 6. Analysis stages\n")?;
        writeln!(
            md,
            "`analysis_cost` (sensor/examples/) decodes `{}` ({} exchanges, the offline phase's \
             traffic) and times each stage alone over every exchange, 3 rounds per run; the \
             figure is the thread's CPU time per exchange of each round (median, min–max over \
             all rounds: time spent descheduled on a busy machine does not count), and the \
             median wall time of single calls.\n",
            self.file.display(),
            self.exchanges
        )?;
        writeln!(
            md,
            "| stage | CPU ns per exchange | single call median (wall ns) |"
        )?;
        writeln!(md, "|---|---|---|")?;
        writeln!(
            md,
            "| attack detection | {} | {:.0} |",
            self.attacks_ns.show(0),
            self.attacks_call_median_ns
        )?;
        writeln!(
            md,
            "| endpoint inventory | {} | {:.0} |",
            self.inventory_ns.show(0),
            self.inventory_call_median_ns
        )?;
        writeln!(
            md,
            "\nAttack findings on this traffic (it holds no attack): {}.\n",
            self.attack_findings
        )?;
        writeln!(
            md,
            "Detection per class (tests/data/attacks, sources in its README; the corpus tests' \
             own figures):\n"
        )?;
        let (flagged, total) = self.benign;
        writeln!(
            md,
            "| corpus | class | detected | rate | benign flagged with the class (of {total}) |"
        )?;
        writeln!(md, "|---|---|---|---|---|")?;
        for (file, class, detected, all) in &self.corpora {
            let false_positives = self
                .benign_by_class
                .iter()
                .find(|(c, _)| c == class)
                .map_or(0, |(_, n)| *n);
            writeln!(
                md,
                "| {file} | {class} | {detected}/{all} | {:.1} % | {false_positives} = {:.3} % |",
                percent(*detected, *all),
                percent(false_positives, total)
            )?;
        }
        writeln!(
            md,
            "\nBenign corpora: {flagged}/{total} requests flagged = {:.3} % (goal ≤ 0.1 %).",
            percent(flagged, total)
        )?;
        Ok(md)
    }

    pub fn json(&self) -> Value {
        json!({
            "exchanges": self.exchanges,
            "attack_findings": self.attack_findings,
            "attacks_ns_per_exchange": self.attacks_ns.json(),
            "attacks_call_median_ns": self.attacks_call_median_ns,
            "inventory_ns_per_exchange": self.inventory_ns.json(),
            "inventory_call_median_ns": self.inventory_call_median_ns,
            "corpora": self.corpora.iter().map(|(file, class, detected, total)| json!({
                "file": file, "class": class, "detected": detected, "total": total,
            })).collect::<Vec<_>>(),
            "benign_by_class": self.benign_by_class.iter().map(|(class, n)| json!({
                "class": class, "flagged": n,
            })).collect::<Vec<_>>(),
            "benign_flagged": self.benign.0,
            "benign_total": self.benign.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_lines_are_read() {
        let text = "running 2 tests\n\
            test analysis::attacks::corpus_tests::payload_corpora_are_detected ... attacks corpus sqli.txt                 sqli             327/329    99.4 %\n\
                missed: 1 AND 2\n\
            attacks benign benign_prose.txt         0 flagged\n\
            attacks benign class sqli            3/5704 = 0.053 %\n\
            attacks benign total 3/5704 requests flagged = 0.053 %\n";
        let rates = parse_corpus_lines(text);
        assert_eq!(
            rates.corpora,
            vec![("sqli.txt".to_owned(), "sqli".to_owned(), 327, 329)]
        );
        assert_eq!(rates.benign, (3, 5704));
        assert_eq!(rates.benign_by_class, vec![("sqli".to_owned(), 3)]);
    }
}

//! `cargo xtask compare-import --baseline BIN`: does this build's `apisessions import --ndjson`
//! print the same bytes as an earlier build's, on the bench's generated capture and on every
//! capture in tests/data? The check of a change that claims to leave behaviour as it was.
//!
//! Per capture, both imports run at once, each into a new data directory holding the same fixed
//! installation secret (session ids and hashed values are keyed by it), and their outputs are
//! read line by line in step: a million lines are never held in memory. The summaries they
//! print on stderr (counts, anomalies, what was stored) must agree too, but for the time taken
//! and the data directory's path.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{
        fs::{DirBuilderExt as _, OpenOptionsExt as _},
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{bench::offline, binary, workspace_root};

/// `cargo xtask compare-import` arguments.
#[derive(clap::Args)]
pub struct CompareImportArgs {
    /// The earlier `apisessions` binary (a release build of the commit to compare with).
    #[arg(long, value_name = "BIN")]
    baseline: PathBuf,
    /// Exchanges in the generated capture (the bench's offline capture, cached under
    /// target/bench/); 0 compares the fixtures only.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    exchanges: u64,
}

/// The installation secret of both data directories: any fixed 32 bytes.
const SECRET: &[u8; 32] = b"compare-import: one fixed secret";

/// Longest part of a differing line shown.
const SHOWN: usize = 2000;

/// How one capture's two imports compared.
enum Outcome {
    Identical {
        lines: u64,
    },
    /// The first line that differs (1-based), as each build printed it; None: its output had
    /// ended.
    LineDiffers {
        line: u64,
        current: Option<String>,
        baseline: Option<String>,
    },
    /// Same lines, different summaries on stderr (normalized).
    SummaryDiffers {
        lines: u64,
        current: String,
        baseline: String,
    },
}

pub fn run(args: &CompareImportArgs) -> Result<()> {
    let baseline = fs::canonicalize(&args.baseline)
        .ok()
        .filter(|p| p.is_file())
        .with_context(|| format!("--baseline {}: no such file", args.baseline.display()))?;
    println!("xtask: building the release binary");
    crate::build(true)?;
    let current = binary(true);
    let root = workspace_root();
    let mut captures = Vec::new();
    if args.exchanges > 0 {
        captures.push(offline::capture(&root.join("target").join("bench"), args.exchanges)?.0);
    }
    let fixtures = root.join("tests").join("data");
    let mut found: Vec<PathBuf> = fs::read_dir(&fixtures)
        .with_context(|| format!("reading {}", fixtures.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".pcap"))
        })
        .collect();
    found.sort();
    captures.extend(found);
    let work = root.join("target").join("compare-import");
    println!(
        "xtask: `import --ndjson` of {} capture(s), this build ({}) against {} ({})",
        captures.len(),
        crate::bench::version_of(&current),
        baseline.display(),
        crate::bench::version_of(&baseline)
    );
    let mut differing = 0;
    for capture in &captures {
        let outcome = compare(&current, &baseline, capture, &work)?;
        let name = capture.strip_prefix(&root).unwrap_or(capture).display();
        match outcome {
            Outcome::Identical { lines } => {
                println!("  {name}: identical, {lines} lines");
            }
            Outcome::LineDiffers {
                line,
                current,
                baseline,
            } => {
                differing += 1;
                let show = |text: Option<String>| text.unwrap_or_else(|| "(end of output)".into());
                println!(
                    "  {name}: DIFFERS at line {line}\n    current:  {}\n    baseline: {}",
                    show(current),
                    show(baseline)
                );
            }
            Outcome::SummaryDiffers {
                lines,
                current,
                baseline,
            } => {
                differing += 1;
                println!(
                    "  {name}: {lines} identical lines, but the summaries DIFFER\n    \
                     current:\n{current}\n    baseline:\n{baseline}"
                );
            }
        }
    }
    let _ = fs::remove_dir_all(&work);
    if differing > 0 {
        bail!(
            "`import --ndjson` differs on {differing} of {} capture(s)",
            captures.len()
        );
    }
    println!(
        "xtask: `import --ndjson` byte-identical on all {} capture(s)",
        captures.len()
    );
    Ok(())
}

/// Both imports of `capture`, their outputs compared as they come.
fn compare(current: &Path, baseline: &Path, capture: &Path, work: &Path) -> Result<Outcome> {
    let mut current = Import::start("current", current, capture, work)?;
    let mut baseline = Import::start("baseline", baseline, capture, work)?;
    let (Some(out_a), Some(out_b)) = (current.child.stdout.take(), baseline.child.stdout.take())
    else {
        bail!("no stdout of an import");
    };
    let mut a = BufReader::with_capacity(1 << 20, out_a);
    let mut b = BufReader::with_capacity(1 << 20, out_b);
    let (mut line_a, mut line_b) = (Vec::new(), Vec::new());
    let mut lines = 0u64;
    let differs = loop {
        line_a.clear();
        line_b.clear();
        let read_a = a
            .read_until(b'\n', &mut line_a)
            .context("reading an import")?;
        let read_b = b
            .read_until(b'\n', &mut line_b)
            .context("reading an import")?;
        if line_a != line_b {
            let shown = |read: usize, line: &[u8]| {
                (read > 0).then(|| {
                    let text = String::from_utf8_lossy(line);
                    text.trim_end_matches('\n').chars().take(SHOWN).collect()
                })
            };
            break Some(Outcome::LineDiffers {
                line: lines + 1,
                current: shown(read_a, &line_a),
                baseline: shown(read_b, &line_b),
            });
        }
        if read_a == 0 {
            break None;
        }
        lines += 1;
    };
    // Output that differs needs not be read to its end: stop both (a build that failed has
    // stopped already, and says why).
    if differs.is_some() {
        let _ = current.child.kill();
        let _ = baseline.child.kill();
    }
    drop((a, b));
    let summary_a = current.finish()?;
    let summary_b = baseline.finish()?;
    Ok(match differs {
        Some(outcome) => outcome,
        None if summary_a != summary_b => Outcome::SummaryDiffers {
            lines,
            current: summary_a,
            baseline: summary_b,
        },
        None => Outcome::Identical { lines },
    })
}

/// One running `apisessions import --ndjson`.
struct Import {
    child: Child,
    data_dir: PathBuf,
    stderr: PathBuf,
}

impl Import {
    fn start(name: &str, program: &Path, capture: &Path, work: &Path) -> Result<Self> {
        let data_dir = work.join(name);
        let _ = fs::remove_dir_all(&data_dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let secret = data_dir.join("secret");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret)
            .and_then(|mut f| f.write_all(SECRET))
            .with_context(|| format!("writing {}", secret.display()))?;
        let stderr = work.join(format!("{name}.err"));
        let child = Command::new(program)
            .arg("import")
            .arg(capture)
            .arg("--ndjson")
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).context("creating an import's log")?)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            child,
            data_dir,
            stderr,
        })
    }

    /// Waits for the import; its summary without the time taken and the data directory, or
    /// why it failed. An import stopped because its output differed returns an empty summary.
    fn finish(mut self) -> Result<String> {
        let status = self.child.wait().context("waiting for an import")?;
        let text = fs::read_to_string(&self.stderr).context("reading an import's log")?;
        let _ = fs::remove_dir_all(&self.data_dir);
        if status.signal() == Some(libc::SIGKILL) {
            return Ok(String::new());
        }
        if !status.success() {
            bail!("an import failed ({status}): {}", text.trim());
        }
        Ok(summary(&text, &self.data_dir.display().to_string()))
    }
}

/// An import's stderr without what differs from run to run: the time taken and the data
/// directory's path.
fn summary(stderr: &str, data_dir: &str) -> String {
    stderr
        .lines()
        .map(|line| {
            let line = line.replace(data_dir, "DATA_DIR");
            // "imported FILE (pcap) in 1.23 s: N packets, …"
            match line.split_once(" s: ") {
                Some((head, rest)) if line.starts_with("imported ") => {
                    let file = head.rsplit_once(" in ").map_or(head, |(file, _)| file);
                    format!("{file} in … s: {rest}")
                }
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_leaves_out_time_and_data_directory_only() {
        let a = "imported /c/x.pcap (pcap) in 1.23 s: 10 packets, 8 TCP segments, 2 flows, 3 \
                 exchanges\nanomalies: none\nstored 3 exchanges in 1 sessions in /w/current";
        let b = "imported /c/x.pcap (pcap) in 0.98 s: 10 packets, 8 TCP segments, 2 flows, 3 \
                 exchanges\nanomalies: none\nstored 3 exchanges in 1 sessions in /w/baseline";
        assert_eq!(summary(a, "/w/current"), summary(b, "/w/baseline"));
        assert_eq!(
            summary(a, "/w/current"),
            "imported /c/x.pcap (pcap) in … s: 10 packets, 8 TCP segments, 2 flows, 3 \
             exchanges\nanomalies: none\nstored 3 exchanges in 1 sessions in DATA_DIR"
        );
        let fewer = a.replace("3 exchanges\n", "2 exchanges\n");
        assert_ne!(summary(&fewer, "/w/current"), summary(b, "/w/baseline"));
    }
}

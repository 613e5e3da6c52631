//! Counters of every stage, as `apisessions stats` shows them.
//!
//! The daemon rewrites `stats.json` in the data directory every second (write to a temporary
//! file, then rename, so a reader never sees half a file). `apisessions stats` reads it: the live
//! figures while the daemon runs, the last ones after it stopped.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

pub const STATS_FILE: &str = "stats.json";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("no statistics in {0}: the daemon has not run with this data directory")]
    Missing(PathBuf),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid statistics file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One snapshot of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// RFC 3339 time of the snapshot.
    pub updated: String,
    pub pid: u32,
    /// False once the daemon wrote its final snapshot on a clean exit.
    pub running: bool,
    pub started: String,
    pub attach_mode: String,
    pub interfaces: Vec<String>,
    /// Counters by stage ("kernel", "reader", later "decode", "sessions", "store"), then by name.
    pub stages: BTreeMap<String, BTreeMap<String, u64>>,
    /// The ports the kernel watches or mutes, and why (`configured`, `listening`, `http`,
    /// `muted`); empty with `--all-ports`.
    #[serde(default)]
    pub ports: BTreeMap<u16, crate::capture::ports::PortReason>,
    /// The central shipper's last failure (cleared by a success); never holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_last_error: Option<String>,
}

impl StatsReport {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(STATS_FILE)
    }

    pub fn set_stage<'a>(
        &mut self,
        stage: &str,
        counters: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.stages.insert(
            stage.to_owned(),
            counters
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        );
    }

    pub fn get(&self, stage: &str, name: &str) -> u64 {
        self.stages
            .get(stage)
            .and_then(|c| c.get(name))
            .copied()
            .unwrap_or(0)
    }

    pub fn write(&self, data_dir: &Path) -> Result<(), StatsError> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!(".{STATS_FILE}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut file, self)?;
            file.write_all(b"\n")?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|source| StatsError::Write { path, source })
    }

    pub fn read(data_dir: &Path) -> Result<Self, StatsError> {
        let path = Self::path(data_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StatsError::Missing(path)),
            Err(source) => return Err(StatsError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| StatsError::Parse { path, source })
    }

    /// Whether the process that wrote the report still runs.
    pub fn writer_alive(&self) -> bool {
        self.running && Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// A readable multi-line rendering.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let state = if self.writer_alive() {
            format!("running (pid {}), updated {}", self.pid, self.updated)
        } else {
            format!(
                "not running; last written by pid {} at {}",
                self.pid, self.updated
            )
        };
        out.push_str(&format!("daemon:     {state}\n"));
        out.push_str(&format!("started:    {}\n", self.started));
        out.push_str(&format!(
            "capture:    {} on {}\n",
            self.attach_mode,
            self.interfaces.join(", ")
        ));
        if !self.ports.is_empty() {
            let list: Vec<String> = self
                .ports
                .iter()
                .map(|(port, why)| format!("{port} ({})", why.as_str()))
                .collect();
            out.push_str(&format!("ports:      {}\n", list.join(", ")));
        }
        if let Some(error) = &self.central_last_error {
            out.push_str(&format!("central:    last error: {error}\n"));
        }
        for (stage, counters) in &self.stages {
            out.push_str(&format!("\n[{stage}]\n"));
            let width = counters.keys().map(String::len).max().unwrap_or(0);
            for (name, value) in counters {
                out.push_str(&format!("  {name:<width$}  {value:>14}\n"));
            }
        }
        out
    }
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("apis-stats-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            StatsReport::read(&dir),
            Err(StatsError::Missing(_))
        ));
        let mut report = StatsReport {
            pid: std::process::id(),
            running: true,
            updated: rfc3339(SystemTime::now()),
            ..Default::default()
        };
        report.set_stage("kernel", [("ring_full", 3), ("packets", 10)]);
        report.write(&dir).unwrap();
        let back = StatsReport::read(&dir).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.get("kernel", "ring_full"), 3);
        assert!(back.writer_alive());
        assert!(back.render().contains("ring_full"));
        fs::write(StatsReport::path(&dir), "{").unwrap();
        assert!(matches!(
            StatsReport::read(&dir),
            Err(StatsError::Parse { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}

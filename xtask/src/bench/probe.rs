//! Readings: a process's CPU time and peak memory from /proc, the run time of the BPF programs
//! a process holds, the daemon's counters, and wrk's results.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::host::{Net, Proc, check_interrupt};

/// User and system CPU time of a whole process (all its threads), in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub user_ns: u64,
    pub sys_ns: u64,
}

impl CpuTime {
    pub fn of(pid: u32) -> Result<Self> {
        Ok(Self::read(&format!("/proc/{pid}/stat"))?.1)
    }

    /// Per thread name, the CPU time of a process's live threads together (a thread that
    /// ended is no longer listed: its time is only in [`Self::of`]).
    pub fn by_thread(pid: u32) -> Result<BTreeMap<String, Self>> {
        let dir = format!("/proc/{pid}/task");
        let mut threads: BTreeMap<String, Self> = BTreeMap::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let path = entry.with_context(|| format!("listing {dir}"))?.path();
            // A thread may end between the listing and the reading.
            let Ok((name, cpu)) = Self::read(&path.join("stat").to_string_lossy()) else {
                continue;
            };
            let sum = threads.entry(name).or_default();
            sum.user_ns += cpu.user_ns;
            sum.sys_ns += cpu.sys_ns;
        }
        Ok(threads)
    }

    /// The command (thread) name and CPU time of a `stat` file of /proc.
    fn read(path: &str) -> Result<(String, Self)> {
        let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) is in parentheses and may hold spaces: count fields from
        // the last ')'. Field 3 (state) is then index 0, utime (14) index 11, stime (15) index 12.
        let (head, rest) = text
            .rsplit_once(')')
            .with_context(|| format!("{path} has no command name"))?;
        let name = head.split_once('(').map_or("", |(_, name)| name).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |index: usize| -> Result<u64> {
            fields
                .get(index)
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("{path}: no CPU time at field {}", index + 3))
        };
        let per_tick = 1_000_000_000 / clock_ticks()?;
        Ok((
            name,
            Self {
                user_ns: ticks(11)? * per_tick,
                sys_ns: ticks(12)? * per_tick,
            },
        ))
    }

    pub fn since(self, earlier: Self) -> Self {
        Self {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
        }
    }
}

/// The whole machine's CPU time from /proc/stat, all CPUs together, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCpu {
    /// user + nice + system: time processes ran.
    pub busy_ns: u64,
    /// irq + softirq: network processing not charged to any process.
    pub irq_ns: u64,
    /// Time the hypervisor ran something else on our CPUs.
    pub steal_ns: u64,
}

impl SystemCpu {
    pub fn read() -> Result<Self> {
        let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let fields: Vec<u64> = text
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))
            .context("/proc/stat has no cpu line")?
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .collect();
        let per_tick = 1_000_000_000 / clock_ticks()?;
        let at = |i: usize| fields.get(i).copied().unwrap_or(0) * per_tick;
        // user nice system idle iowait irq softirq steal
        Ok(Self {
            busy_ns: at(0) + at(1) + at(2),
            irq_ns: at(5) + at(6),
            steal_ns: at(7),
        })
    }

    pub fn since(self, earlier: Self) -> Self {
        Self {
            busy_ns: self.busy_ns.saturating_sub(earlier.busy_ns),
            irq_ns: self.irq_ns.saturating_sub(earlier.irq_ns),
            steal_ns: self.steal_ns.saturating_sub(earlier.steal_ns),
        }
    }
}

fn clock_ticks() -> Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as u64)
}

/// The most resident memory the process ever had (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no VmHWM line"))
}

/// A BPF program held by a process, with the kernel's run-time statistics.
#[derive(Clone, Debug, Default)]
pub struct BpfProg {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The BPF programs a process holds open, read from its descriptors' fdinfo.
///
/// This names exactly the programs of that process, whoever else loads programs of the same name
/// meanwhile (bpftool 7.1 shows neither owners nor TCX attachments). run_time_ns and run_cnt
/// only grow while statistics are enabled ([`super::host::BpfStats`]).
pub fn bpf_programs(pid: u32) -> Result<BTreeMap<u64, BpfProg>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut programs = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        // A descriptor closed since the listing is simply gone.
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.lines().any(|line| line.starts_with("prog_type:")) {
            continue;
        }
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let Some(id) = field("prog_id:") else {
            continue;
        };
        programs.insert(
            id,
            BpfProg {
                id,
                name: String::new(),
                run_time_ns: field("run_time_ns:").unwrap_or(0),
                run_cnt: field("run_cnt:").unwrap_or(0),
            },
        );
    }
    for program in programs.values_mut() {
        program.name = program_name(program.id).unwrap_or_else(|_| format!("id {}", program.id));
    }
    Ok(programs)
}

/// The program's name, from bpftool (fdinfo has only the tag).
fn program_name(id: u64) -> Result<String> {
    let out =
        crate::output(Command::new("bpftool").args(["prog", "show", "id", &id.to_string(), "-j"]))?;
    let value: Value = serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("bpftool shows no name")
}

/// Per-program run time and count between two readings.
pub fn bpf_delta(before: &BTreeMap<u64, BpfProg>, after: &BTreeMap<u64, BpfProg>) -> Vec<BpfProg> {
    after
        .values()
        .map(|prog| {
            let earlier = before.get(&prog.id);
            BpfProg {
                run_time_ns: prog.run_time_ns
                    - earlier.map_or(0, |p| p.run_time_ns.min(prog.run_time_ns)),
                run_cnt: prog.run_cnt - earlier.map_or(0, |p| p.run_cnt.min(prog.run_cnt)),
                ..prog.clone()
            }
        })
        .collect()
}

/// The daemon's stats.json: counters by stage, then by name.
#[derive(Clone, Debug, Default)]
pub struct Counters(pub BTreeMap<String, BTreeMap<String, u64>>);

impl Counters {
    pub fn read(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("stats.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let stages = value
            .get("stages")
            .and_then(Value::as_object)
            .with_context(|| format!("{} has no stages", path.display()))?;
        let mut counters = BTreeMap::new();
        for (stage, values) in stages {
            let Some(values) = values.as_object() else {
                continue;
            };
            counters.insert(
                stage.clone(),
                values
                    .iter()
                    .filter_map(|(name, v)| Some((name.clone(), v.as_u64()?)))
                    .collect(),
            );
        }
        Ok(Self(counters))
    }

    pub fn get(&self, stage: &str, name: &str) -> u64 {
        self.0
            .get(stage)
            .and_then(|c| c.get(name))
            .copied()
            .unwrap_or(0)
    }

    /// The counters that mean data was lost, cut or not understood, where not zero.
    pub fn losses(&self) -> Vec<(String, u64)> {
        LOSS_COUNTERS
            .iter()
            .filter_map(|(stage, name)| {
                let value = self.get(stage, name);
                (value > 0).then(|| (format!("{stage}.{name}"), value))
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }
}

/// Every counter of the pipeline that records lost, cut or undecodable data (README, Counters).
pub const LOSS_COUNTERS: &[(&str, &str)] = &[
    ("kernel", "ring_full"),
    ("kernel", "segments_truncated"),
    ("kernel", "load_errors"),
    ("kernel", "ip_fragments"),
    ("kernel", "ipv6_ext_unsupported"),
    ("reader", "events_malformed"),
    ("flows", "evicted_capacity"),
    ("flows", "evicted_memory"),
    ("reassembly", "gaps"),
    ("reassembly", "gap_bytes"),
    ("reassembly", "buffer_overflows"),
    ("reassembly", "started_mid_stream"),
    ("reassembly", "conflicting_overlaps"),
    ("http", "requests_without_response"),
    ("http", "responses_without_request"),
    ("http", "parse_errors"),
    ("http", "resyncs"),
    ("http", "heads_too_large"),
    ("http", "headers_truncated"),
    ("http", "bodies_truncated"),
    ("http", "truncated_messages"),
    ("http", "pending_overflow"),
    ("http", "not_http_streams"),
];

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    /// wrk's own CPU time.
    pub cpu: CpuTime,
    /// The machine's CPU time while wrk ran.
    pub system: SystemCpu,
    pub requests: u64,
    pub seconds: f64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl WrkResult {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// wrk's `done` hook: one machine-readable line after wrk's own report.
const DONE_HOOK: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%.0f,\"duration_us\":%.0f,\"errors\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// The overhead load: one fixed GET, wrk's fast path (no per-request Lua).
pub fn overhead_script() -> String {
    DONE_HOOK.to_owned()
}

/// The completeness load: varied methods, URIs (unique per request, so that every logged line
/// can be matched to one decoded exchange) and statuses (200, 201, 204, 304, 404, 405), with an
/// optional pause before each request on a connection to hold a request rate.
///
/// No HEAD: wrk's parser does not know a response to HEAD has no body and stalls the
/// connection until its timeout.
pub fn completeness_script(tag: &str, delay_ms: u64) -> String {
    let delay = if delay_ms > 0 {
        format!("delay = function() return {delay_ms} end\n")
    } else {
        String::new()
    };
    format!(
        r#"
local n = 0
local body = '{{"name":"widget","size":3}}'
local json = {{ ["Content-Type"] = "application/json" }}
-- A date after the file's: nginx (if_modified_since before) answers 304.
local later = {{ ["If-Modified-Since"] = "Fri, 01 Jan 2100 00:00:00 GMT" }}
request = function()
  n = n + 1
  local k = n % 10
  local id = "{tag}-" .. n
  if k < 4 then return wrk.format("GET", "/api/items/" .. id)
  elseif k == 4 then return wrk.format("GET", "/static/small.txt?req=" .. id, later)
  elseif k == 5 then return wrk.format("POST", "/api/items?req=" .. id, json, body)
  elseif k == 6 then return wrk.format("DELETE", "/api/items/" .. id)
  elseif k == 7 then return wrk.format("PUT", "/static/small.txt?req=" .. id, json, body)
  elseif k == 8 then return wrk.format("GET", "/missing/" .. id)
  else return wrk.format("GET", "/static/page.html?req=" .. id) end
end
{delay}{DONE_HOOK}"#
    )
}

pub struct WrkLoad<'a> {
    pub url: &'a str,
    pub script: &'a Path,
    pub connections: u32,
    pub threads: u32,
    pub duration: Duration,
}

/// Runs wrk in the client namespace and returns what it measured.
pub fn run_wrk(net: &Net, load: &WrkLoad<'_>, log: &Path) -> Result<WrkResult> {
    let log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let system_before = SystemCpu::read()?;
    let mut proc = Proc::spawn(
        "wrk",
        net.client("wrk")
            .arg(format!("--threads={}", load.threads))
            .arg(format!("--connections={}", load.connections))
            .arg(format!("--duration={}s", load.duration.as_secs().max(1)))
            .arg("--timeout=5s")
            .arg("--script")
            .arg(load.script)
            .arg(load.url)
            .stdout(log_file)
            .stderr(Stdio::null()),
    )?;
    // wrk ends by itself; the wait wakes often to notice Ctrl-C (then the guard stops wrk).
    let budget = load.duration + Duration::from_secs(30);
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    let exit = loop {
        check_interrupt()?;
        match proc.wait(step) {
            Ok(exit) => break exit,
            Err(_) if waited < budget => waited += step,
            Err(e) => return Err(e),
        }
    };
    let system = SystemCpu::read()?.since(system_before);
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    if !exit.success() {
        bail!("wrk failed ({exit}): {}", text.trim());
    }
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("BENCH_JSON "))
        .with_context(|| format!("wrk printed no result line: {}", text.trim()))?;
    let value: Value = serde_json::from_str(line).context("parsing wrk's result line")?;
    let number = |name: &str| -> Result<f64> {
        value
            .get(name)
            .and_then(Value::as_f64)
            .with_context(|| format!("wrk's result has no {name}"))
    };
    Ok(WrkResult {
        cpu: proc.usage.unwrap_or_default(),
        system,
        requests: number("requests")? as u64,
        seconds: number("duration_us")? / 1e6,
        errors: number("errors")? as u64,
        p50_us: number("p50_us")?,
        p99_us: number("p99_us")?,
        max_us: number("max_us")?,
    })
}

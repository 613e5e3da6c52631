//! Offline throughput: `apisessions import` against tshark's HTTP dissection of the same file
//! (and against an earlier build's import, with `--baseline`).
//!
//! The capture is generated here (a file, no network involved): keep-alive connections, 64 of
//! them open at a time and interleaved packet by packet, each with a handshake, a run of
//! request/response exchanges of varied methods, URIs, statuses and body framings (one response
//! in ten chunked), and a close. Checksums are correct, so neither tool has reason to stumble.

use std::{
    fs,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    baseline_first,
    host::{Proc, check_interrupt},
};
use crate::binary;

/// Bumped whenever the generated traffic changes, so a cached file of an older kind is not reused.
const GENERATOR_VERSION: u32 = 1;
const EXCHANGES_PER_CONNECTION: u64 = 100;
const OPEN_CONNECTIONS: usize = 64;
const SERVER_PORT: u16 = 8080;

/// One import of the file on `cores` CPUs (`taskset`), with a decoding thread for every CPU
/// but the analysis' (`--decode-threads cores - 1`).
#[derive(Clone, Debug, Default)]
pub struct CoresRun {
    pub cores: usize,
    pub seconds: f64,
    pub exchanges: u64,
}

/// What one round measured.
#[derive(Clone, Debug, Default)]
pub struct OfflineRun {
    pub round: u32,
    pub import_s: f64,
    pub import_exchanges: u64,
    /// This build's import on 1, 2 and all CPUs.
    pub cores: Vec<CoresRun>,
    pub tshark_s: f64,
    /// The `--baseline` binary's import of the same file, in the same round.
    pub baseline: Option<(f64, u64)>,
    /// Responses tshark dissected (lines with a status code).
    pub tshark_responses: u64,
    pub tshark_requests: u64,
}

pub struct OfflineOutcome {
    pub file: PathBuf,
    pub file_bytes: u64,
    pub exchanges: u64,
    pub packets: u64,
    pub runs: Vec<OfflineRun>,
    pub tshark_version: String,
}

/// The generated capture of `exchanges` exchanges in `out_dir`, made on first use and reused
/// after: its path and its packets.
pub fn capture(out_dir: &Path, exchanges: u64) -> Result<(PathBuf, u64)> {
    let file = out_dir.join(format!("http-{exchanges}-v{GENERATOR_VERSION}.pcap"));
    if file.exists() {
        return Ok((file, packets_for(exchanges)));
    }
    println!(
        "xtask: generating a capture of {exchanges} exchanges ({})",
        file.display()
    );
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let partial = file.with_extension("partial");
    let packets = generate(&partial, exchanges)?;
    fs::rename(&partial, &file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok((file, packets))
}

/// Rounds of this build's import, the baseline's (if any; first in every other round) and
/// tshark's.
pub fn run(
    out_dir: &Path,
    work: &Path,
    exchanges: u64,
    rounds: u32,
    baseline: Option<&Path>,
) -> Result<OfflineOutcome> {
    let (file, packets) = capture(out_dir, exchanges)?;
    let file_bytes = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    // Read once so that both tools find it in the page cache.
    let _ = fs::read(&file);
    let tshark_version = crate::output(Command::new("tshark").arg("--version"))
        .ok()
        .and_then(|v| v.lines().next().map(|l| l.trim_end_matches('.').to_owned()))
        .unwrap_or_else(|| "tshark".to_owned());
    let mut runs = Vec::new();
    for round in 0..rounds {
        check_interrupt()?;
        let baseline_import = || -> Result<Option<(f64, u64)>> {
            check_interrupt()?;
            baseline
                .map(|program| import(program, &file, work, None))
                .transpose()
        };
        let early = if baseline_first(round) {
            baseline_import()?
        } else {
            None
        };
        check_interrupt()?;
        let (import_s, import_exchanges) = import(&binary(true), &file, work, None)?;
        let baseline = match early {
            Some(done) => Some(done),
            None => baseline_import()?,
        };
        let mut cores = Vec::new();
        for n in core_counts() {
            check_interrupt()?;
            let (seconds, exchanges) = import(&binary(true), &file, work, Some(n))?;
            println!(
                "  round {} import on {n} CPU(s), {} decoding thread(s) beside: {:>10.0} \
                 exchanges/s ({seconds:.2} s)",
                round + 1,
                n - 1,
                exchanges as f64 / seconds
            );
            cores.push(CoresRun {
                cores: n,
                seconds,
                exchanges,
            });
        }
        check_interrupt()?;
        let (tshark_s, tshark_requests, tshark_responses) = tshark(&file, work)?;
        let run = OfflineRun {
            round,
            import_s,
            import_exchanges,
            cores,
            tshark_s,
            baseline,
            tshark_responses,
            tshark_requests,
        };
        println!(
            "  round {} import {:>10.0} exchanges/s ({:.2} s, {} exchanges){}  tshark {:>9.0} \
             exchanges/s ({:.1} s, {} requests, {} responses)",
            round + 1,
            exchanges as f64 / import_s,
            import_s,
            import_exchanges,
            baseline.map_or(String::new(), |(seconds, found)| format!(
                "  baseline {:>10.0} exchanges/s ({seconds:.2} s, {found} exchanges)",
                exchanges as f64 / seconds
            )),
            exchanges as f64 / tshark_s,
            tshark_s,
            tshark_requests,
            tshark_responses
        );
        runs.push(run);
    }
    Ok(OfflineOutcome {
        file,
        file_bytes,
        exchanges,
        packets,
        runs,
        tshark_version,
    })
}

/// Waits for a process, noticing Ctrl-C (the guard then stops it).
fn wait(proc: &mut Proc, budget: Duration) -> Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        check_interrupt()?;
        match proc.wait(Duration::from_millis(100)) {
            Ok(exit) => return Ok(exit),
            Err(_) if started.elapsed() < budget => {}
            Err(e) => return Err(e),
        }
    }
}

/// 1, 2 and all of this machine's CPUs (each once).
fn core_counts() -> Vec<usize> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = vec![1, 2.min(all), all];
    counts.dedup();
    counts
}

/// `PROGRAM import FILE --port 8080` into a new data directory (an import also stores what it
/// decodes), with `cores`: on the first that many CPUs (`taskset`), decoding on a thread for
/// each but the analysis' (`--decode-threads`); wall time and the exchanges it reports.
fn import(program: &Path, file: &Path, work: &Path, cores: Option<usize>) -> Result<(f64, u64)> {
    let data_dir = work.join("import-data");
    let _ = fs::remove_dir_all(&data_dir);
    let log = work.join("import.err");
    let err = fs::File::create(&log).context("creating the import log")?;
    let mut command = match cores {
        Some(n) => {
            let mut taskset = Command::new("taskset");
            taskset
                .args(["-c", &format!("0-{}", n.saturating_sub(1))])
                .arg(program);
            taskset
        }
        None => Command::new(program),
    };
    command
        .arg("import")
        .arg(file)
        .args(["--port", &SERVER_PORT.to_string()]);
    if let Some(n) = cores {
        command.args(["--decode-threads", &n.saturating_sub(1).to_string()]);
    }
    let started = Instant::now();
    let mut proc = Proc::spawn(
        "apisessions import",
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(err),
    )?;
    let exit = wait(&mut proc, Duration::from_secs(600))?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&data_dir);
    let text = fs::read_to_string(&log).context("reading the import log")?;
    if !exit.success() {
        bail!("apisessions import failed ({exit}): {}", text.trim());
    }
    // "imported FILE (pcap) in 1.23 s: N packets, N TCP segments, N flows, N exchanges"
    let exchanges = text
        .lines()
        .find(|l| l.starts_with("imported "))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|l| l.strip_suffix(" exchanges"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| {
            format!(
                "apisessions import printed no exchange count: {}",
                text.trim()
            )
        })?;
    Ok((seconds, exchanges))
}

/// tshark's HTTP dissection of the file, printing method, URI and status per HTTP packet: wall
/// time, requests and responses it found. Port 8080 is among its default HTTP ports.
fn tshark(file: &Path, work: &Path) -> Result<(f64, u64, u64)> {
    let out = work.join("tshark.txt");
    let log = work.join("tshark.err");
    let started = Instant::now();
    let mut proc = Proc::spawn(
        "tshark",
        Command::new("tshark")
            .args(["-n", "-r"])
            .arg(file)
            .args(["-Y", "http", "-T", "fields"])
            .args(["-e", "http.request.method", "-e", "http.request.uri"])
            .args(["-e", "http.response.code"])
            .stdout(fs::File::create(&out).context("creating tshark's output")?)
            .stderr(fs::File::create(&log).context("creating tshark's log")?),
    )?;
    let exit = wait(&mut proc, Duration::from_secs(3600))?;
    let seconds = started.elapsed().as_secs_f64();
    if !exit.success() {
        bail!(
            "tshark failed ({exit}): {}",
            fs::read_to_string(&log).unwrap_or_default().trim()
        );
    }
    let text = fs::read_to_string(&out).context("reading tshark's output")?;
    let mut requests = 0;
    let mut responses = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.first().is_some_and(|m| !m.is_empty()) {
            requests += 1;
        }
        if fields.get(2).is_some_and(|s| !s.is_empty()) {
            responses += 1;
        }
    }
    let _ = fs::remove_file(&out);
    Ok((seconds, requests, responses))
}

fn packets_for(exchanges: u64) -> u64 {
    let connections = exchanges.div_ceil(EXCHANGES_PER_CONNECTION);
    // Handshake 3, close 3 (FIN, FIN, ACK), two packets per exchange.
    connections * 6 + exchanges * 2
}

/// One TCP connection being written.
struct Conn {
    client: [u8; 4],
    client_port: u16,
    client_seq: u32,
    server_seq: u32,
    done: u64,
    total: u64,
}

struct Writer {
    out: BufWriter<fs::File>,
    ts_us: u64,
    packets: u64,
    serial: u64,
}

const SERVER: [u8; 4] = [10, 215, 0, 1];

impl Writer {
    fn packet(&mut self, conn: &Conn, from_client: bool, flags: u8, payload: &[u8]) -> Result<()> {
        let (src, dst, sport, dport, seq, ack) = if from_client {
            (
                conn.client,
                SERVER,
                conn.client_port,
                SERVER_PORT,
                conn.client_seq,
                conn.server_seq,
            )
        } else {
            (
                SERVER,
                conn.client,
                SERVER_PORT,
                conn.client_port,
                conn.server_seq,
                conn.client_seq,
            )
        };
        let tcp_len = 20 + payload.len();
        let ip_len = 20 + tcp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        // Ethernet: locally administered MACs, IPv4.
        frame.extend_from_slice(&[2, 0, 0, 0, 0, if from_client { 1 } else { 2 }]);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, if from_client { 2 } else { 1 }]);
        frame.extend_from_slice(&[0x08, 0x00]);
        let ip_start = frame.len();
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&((self.packets & 0xffff) as u16).to_be_bytes());
        frame.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&dst);
        let ip_sum = checksum(&frame[ip_start..ip_start + 20], 0);
        frame[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_start = frame.len();
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&ack.to_be_bytes());
        frame.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        // The pseudo-header: addresses, protocol, TCP length.
        let mut pseudo = 0u32;
        for pair in src.chunks(2).chain(dst.chunks(2)) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        pseudo += 6 + tcp_len as u32;
        let tcp_sum = checksum(&frame[tcp_start..], pseudo);
        frame[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_sum.to_be_bytes());

        let ts = self.ts_us;
        self.ts_us += 7;
        self.packets += 1;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        record[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(&frame)?;
        Ok(())
    }
}

/// The Internet checksum over `data`, starting from a partial sum.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The n-th request and its response, in the spirit of the live completeness mix.
fn exchange(serial: u64) -> (Vec<u8>, Vec<u8>) {
    let host = "Host: api.example.test\r\nUser-Agent: bench-client/1.0\r\nAccept: */*\r\n";
    let json = "{\"id\":7,\"name\":\"widget\",\"tags\":[\"a\",\"b\"],\"price\":12.5}";
    let (request, status, reason, body, chunked) = match serial % 10 {
        0..=3 => (
            format!("GET /api/items/{serial} HTTP/1.1\r\n{host}\r\n"),
            200,
            "OK",
            json.to_owned(),
            false,
        ),
        4 => (
            format!("GET /api/search?q=w{serial}&page=2 HTTP/1.1\r\n{host}\r\n"),
            200,
            "OK",
            format!("[{json},{json}]"),
            true,
        ),
        5 => {
            let body = "{\"name\":\"widget\",\"size\":3}";
            (
                format!(
                    "POST /api/items HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
                201,
                "Created",
                "{\"created\":true}".to_owned(),
                false,
            )
        }
        6 => (
            format!("DELETE /api/items/{serial} HTTP/1.1\r\n{host}\r\n"),
            204,
            "No Content",
            String::new(),
            false,
        ),
        7 => (
            format!(
                "GET /static/app.js?v={serial} HTTP/1.1\r\n{host}If-None-Match: \"abc\"\r\n\r\n"
            ),
            304,
            "Not Modified",
            String::new(),
            false,
        ),
        8 => (
            format!("GET /missing/{serial} HTTP/1.1\r\n{host}\r\n"),
            404,
            "Not Found",
            "<html><body>not found</body></html>".to_owned(),
            false,
        ),
        _ => (
            format!("PUT /api/items/{serial} HTTP/1.1\r\n{host}Content-Length: 2\r\n\r\n{{}}"),
            405,
            "Not Allowed",
            "<html><body>405</body></html>".to_owned(),
            false,
        ),
    };
    let common = "Server: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 16:00:00 GMT\r\n\
                  Content-Type: application/json\r\nConnection: keep-alive\r\n";
    let response = if chunked {
        format!(
            "HTTP/1.1 {status} {reason}\r\n{common}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    } else if status == 204 || status == 304 {
        format!("HTTP/1.1 {status} {reason}\r\n{common}\r\n")
    } else {
        format!(
            "HTTP/1.1 {status} {reason}\r\n{common}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    (request.into_bytes(), response.into_bytes())
}

/// Writes a pcap (microsecond timestamps, Ethernet) of `exchanges` exchanges; returns packets.
pub fn generate(path: &Path, exchanges: u64) -> Result<u64> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        ts_us: 1_795_000_000 * 1_000_000,
        packets: 0,
        serial: 0,
    };
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, LINKTYPE_ETHERNET.
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    w.out.write_all(&header)?;

    let mut opened = 0u64;
    let mut left = exchanges;
    let mut open: Vec<Conn> = Vec::new();
    let mut next = 0usize;
    loop {
        while open.len() < OPEN_CONNECTIONS && left > 0 {
            let total = left.min(EXCHANGES_PER_CONNECTION);
            left -= total;
            let mut conn = Conn {
                client: [10, 216, (opened >> 8) as u8, opened as u8],
                client_port: 20000 + (opened % 40000) as u16,
                client_seq: (opened as u32).wrapping_mul(2_654_435_761),
                server_seq: (opened as u32).wrapping_mul(40_503).wrapping_add(7),
                done: 0,
                total,
            };
            opened += 1;
            w.packet(&conn, true, SYN, &[])?;
            conn.client_seq = conn.client_seq.wrapping_add(1);
            w.packet(&conn, false, SYN | ACK, &[])?;
            conn.server_seq = conn.server_seq.wrapping_add(1);
            w.packet(&conn, true, ACK, &[])?;
            open.push(conn);
        }
        if open.is_empty() {
            break;
        }
        next %= open.len();
        let serial = w.serial;
        w.serial += 1;
        let (request, response) = exchange(serial);
        let conn = &mut open[next];
        w.packet(conn, true, PSH | ACK, &request)?;
        conn.client_seq = conn.client_seq.wrapping_add(request.len() as u32);
        w.packet(conn, false, PSH | ACK, &response)?;
        conn.server_seq = conn.server_seq.wrapping_add(response.len() as u32);
        conn.done += 1;
        if conn.done == conn.total {
            let mut conn = open.swap_remove(next);
            w.packet(&conn, true, FIN | ACK, &[])?;
            conn.client_seq = conn.client_seq.wrapping_add(1);
            w.packet(&conn, false, FIN | ACK, &[])?;
            conn.server_seq = conn.server_seq.wrapping_add(1);
            w.packet(&conn, true, ACK, &[])?;
        } else {
            next += 1;
        }
    }
    w.out
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(w.packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        // The example of RFC 1071's errata-free worked header (checksum field zeroed).
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header, 0), 0xb861);
    }

    #[test]
    fn packet_count_matches_the_formula() {
        let dir = std::env::temp_dir().join(format!("apis-gen-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let packets = generate(&path, 250).unwrap();
        assert_eq!(packets, packets_for(250));
        fs::remove_dir_all(&dir).unwrap();
    }
}

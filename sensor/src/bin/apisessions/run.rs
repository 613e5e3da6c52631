//! `apisessions run`: the daemon's arguments over the configuration file; the daemon itself is
//! the library's [`apisessions::live`].

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Result;
use apisessions::{
    capture::AttachMode,
    config::{CaptureOverrides, Config},
    live::{self, LiveOptions, ServerOptions},
};
use clap::Args;

use crate::args::{ConfigArg, DataDirArg, create_data_dir};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Check the configuration file and exit.
    #[arg(long, requires = "config")]
    check: bool,
    /// Interface to capture on (repeatable). Default: every interface that is up.
    #[arg(long = "iface", value_name = "IF")]
    interfaces: Vec<String>,
    /// TCP port to capture, either end of the connection (repeatable).
    /// Default: 80, 8000, 8080, 3000, 5000.
    #[arg(long = "port", value_name = "P")]
    ports: Vec<u16>,
    /// Capture every TCP port.
    #[arg(long, conflicts_with = "ports")]
    all_ports: bool,
    /// TLS port (repeatable): its servers' plaintext is read through uprobes on their OpenSSL
    /// library, and the port's ciphertext is only counted. Default: 443, 8443.
    #[arg(long = "tls-port", value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    tls_ports: Vec<u16>,
    /// Print one line per HTTP exchange to stdout: time, client, method, uri, status, time to
    /// first byte, duration, body sizes and flags.
    #[arg(long)]
    dump: bool,
    /// Print one line per captured TCP segment to stdout (for debugging the capture).
    #[arg(long, conflicts_with = "dump")]
    dump_segments: bool,
    /// How to hook into the network stack: auto (tcx on Linux >= 6.6, else clsact), tcx,
    /// clsact, or socket (AF_PACKET socket filter, the fallback). Default: auto.
    #[arg(long, value_name = "MODE")]
    attach: Option<AttachMode>,
    /// Payload bytes captured per TCP segment at most; the rest is counted as truncated.
    /// Default: 65536.
    #[arg(long, value_name = "BYTES")]
    snaplen: Option<u32>,
    /// Kernel ring-buffer size in bytes (a power of two). Default: 16 MiB.
    #[arg(long, value_name = "BYTES")]
    ring_size: Option<u32>,
    /// Body bytes kept per HTTP message. Default: 16384.
    #[arg(long, value_name = "BYTES")]
    body_cap: Option<usize>,
    /// Threads that decode connections (TCP reassembly and HTTP), each a share of them by a
    /// hash of the connection, beside the analysis' thread: for a host where one core does not
    /// keep up. Default: 0 (decoding on the analysis' thread).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=64))]
    decode_threads: Option<u16>,
    /// Started as root, continue as this user with only the capabilities capture needs.
    /// Default: `apisessions` when that user exists; `root` stays root.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Seconds between summary log lines (events/s, bytes/s, drops); 0 turns them off.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    summary_interval: u64,
    /// Serve the web console on this address too (as `apisessions ui`).
    #[arg(long, value_name = "ADDR")]
    ui: Option<SocketAddr>,
    /// Serve /metrics (Prometheus text) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The token for --ui and --metrics (see `apisessions ui --help`); needed for any address
    /// but loopback.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    data: DataDirArg,
}

impl RunArgs {
    /// The capture flags given, which win over the configuration file (at reloads too).
    fn overrides(&self) -> CaptureOverrides {
        CaptureOverrides {
            interfaces: self.interfaces.clone(),
            ports: self.ports.clone(),
            all_ports: self.all_ports,
            attach: self.attach,
            snaplen: self.snaplen,
            ring_size: self.ring_size,
            body_cap: self.body_cap,
            decode_threads: self.decode_threads.map(usize::from),
            tls_ports: self.tls_ports.clone(),
        }
    }

    /// The configuration file with this command line's flags laid over it.
    fn settings(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        self.overrides().apply(&mut config);
        Ok(config)
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let config = args.settings()?;
    if args.check {
        if let Some(path) = &args.config.config {
            println!("{}: ok", path.display());
        }
        return Ok(());
    }
    let listen: Vec<SocketAddr> = args.ui.iter().chain(&args.metrics).copied().collect();
    let token = crate::ui::token(args.token_file.as_ref(), &listen)?;
    let data_dir = args.data.resolve(&config);
    create_data_dir(&data_dir)?;
    let server = |listen, metrics_only| ServerOptions {
        listen,
        token: token.clone(),
        metrics_only,
    };
    let options = LiveOptions {
        dump: args.dump,
        dump_segments: args.dump_segments,
        summary_interval: args.summary_interval,
        user: args.user.clone(),
        servers: args
            .ui
            .map(|a| server(a, false))
            .into_iter()
            .chain(args.metrics.map(|a| server(a, true)))
            .collect(),
        config_file: args.config.config.clone(),
        overrides: args.overrides(),
    };
    Ok(live::run(config, data_dir, options)?)
}

//! The daemon (`apisessions run`): attaches the capture, feeds the kernel's segments through
//! the [`pipeline`](crate::pipeline), keeps the watched ports and interfaces in step with the
//! host, and writes the statistics every second. The live counterpart of [`crate::import`].

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    analysis::{
        attacks::{AttacksConfig, AttacksError, Detector},
        inventory,
    },
    capture::{
        CaptureError, CaptureOptions, Clock, Interface, LoadedCapture, Segment, Sensor,
        ServerPorts,
        ports::{PortPolicy, listening_ports},
        tls::Plaintext,
    },
    config::{CaptureOverrides, Config, Ports, reload::Reload},
    console::{self, ConsoleError, ConsoleOptions, ConsoleState, InventorySetup, Token},
    container::ContainerIndex,
    dump,
    exchange::now_ns,
    flow::{FlowConfig, Flows, shards::ShardError},
    http::HttpConfig,
    nat::{Conntrack, NatConfig, NatTable},
    pipeline::{self, Analysis, DumpLines, Pipeline, PipelineError, StoreWriter, WriterMode},
    privilege::{self, PrivilegeError},
    proxy::{self, ProxyConfig, ProxyStage},
    record::Redaction,
    segment::TcpSegment,
    sessions::SessionConfig,
    ship::{CentralError, Shipper, ShipperHandle, ShipperSettings},
    stats::{StatsError, StatsReport, rfc3339},
    store::{DEFAULT_MAP_SIZE, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error("reading the listening TCP sockets")]
    Listeners(#[source] io::Error),
    #[error("starting the async runtime")]
    Runtime(#[source] io::Error),
    #[error("installing the signal handlers")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error("the central store")]
    Central(#[from] CentralError),
    #[error(transparent)]
    Attacks(#[from] AttacksError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Shards(#[from] ShardError),
}

/// What `apisessions run` prints besides the statistics.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    /// One line per exchange on stdout.
    pub dump: bool,
    /// One line per captured segment on stdout.
    pub dump_segments: bool,
    /// Seconds between summary log lines; 0 turns them off.
    pub summary_interval: u64,
    /// The user to continue as when started as root (see [`crate::privilege::target_user`]).
    pub user: Option<String>,
    /// The configuration file, which `[[api.specs]]` files are relative to and SIGHUP reads
    /// again.
    pub config_file: Option<PathBuf>,
    /// The command line's capture flags, laid over the file at every reload too.
    pub overrides: CaptureOverrides,
    /// Web servers next to the capture: the console (`--ui`), `/metrics` alone (`--metrics`).
    pub servers: Vec<ServerOptions>,
}

/// A web server the daemon runs on its runtime, over its own store handle.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: std::net::SocketAddr,
    pub token: Option<Token>,
    /// Only `/metrics` (`--metrics`), else the whole console (`--ui`).
    pub metrics_only: bool,
}

/// Runs the daemon with `config` until SIGTERM or SIGINT, with its store and statistics in
/// `data_dir` (which must exist).
pub fn run(config: Config, data_dir: PathBuf, live: LiveOptions) -> Result<(), LiveError> {
    let capture = &config.capture;
    // With `ports = "auto"` the host's listeners are watched from the start; the daemon keeps
    // the set in step as servers come and go (`PortPolicy`).
    let mut ports = PortPolicy::new(
        capture.ports.listed(),
        &capture.exclude_ports,
        capture.ports == Ports::Auto && !capture.all_ports,
    )
    .with_tls(tls_ports(&config));
    if capture.ports == Ports::Auto {
        let (listening, past) = listening_ports().map_err(LiveError::Listeners)?;
        ports.listeners(&listening, past);
    }
    let options = CaptureOptions {
        ports: ports
            .changes()
            .into_iter()
            .filter(|(_, slot)| *slot == sensor_ebpf::port::WATCHED)
            .map(|(port, _)| port)
            .collect(),
        all_ports: capture.all_ports,
        snaplen: capture.snaplen,
        ring_bytes: capture.ring_size,
        tls: !tls_ports(&config).is_empty(),
        ..CaptureOptions::default()
    };
    let interfaces = if capture.interfaces.is_empty() {
        Interface::all_up()?
    } else {
        capture
            .interfaces
            .iter()
            .map(|name| Interface::by_name(name))
            .collect::<Result<_, _>>()?
    };
    // While still root: the kernel attaches uprobes (TLS) only with CAP_SYS_ADMIN, given up
    // below. With no interface named, the sensor follows every interface, the containers'
    // too, so their TLS servers (in their own network namespaces) are followed as well; with
    // interfaces named, only the servers of this namespace, whose traffic those carry.
    let mut loaded = LoadedCapture::load(&options)?;
    if !tls_ports(&config).is_empty() {
        loaded.attach_tls(
            tls_ports(&config).to_vec(),
            config.capture.interfaces.is_empty(),
        );
    }
    // Before any thread starts: capabilities belong to threads, and every thread started from
    // here on inherits the reduced set.
    if let Some(user) = privilege::target_user(live.user.as_deref())? {
        privilege::drop_to(&user, &data_dir)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // The ring's reader runs on these (decoding on this thread, storing on the writer's):
        // named so that their CPU time shows apart.
        .thread_name("capture-io")
        .enable_all()
        .build()
        .map_err(LiveError::Runtime)?;
    runtime.block_on(daemon(
        live, config, data_dir, options, ports, interfaces, loaded,
    ))
}

/// The TLS ports whose servers are read through uprobes (none with `capture.tls = false`).
fn tls_ports(config: &Config) -> &[u16] {
    match config.capture.tls {
        true => &config.capture.tls_ports,
        false => &[],
    }
}

/// The next TLS plaintext pieces, or never without TLS capture.
async fn next_plaintext(
    rx: &mut Option<mpsc::Receiver<Plaintext>>,
    buf: &mut Vec<Plaintext>,
) -> usize {
    match rx {
        Some(rx) => rx.recv_many(buf, SEGMENTS_PER_WAKEUP).await,
        None => std::future::pending().await,
    }
}

/// Segments the daemon takes off the capture channel per wakeup at most.
const SEGMENTS_PER_WAKEUP: usize = 1024;

/// How often the daemon deletes sessions older than the retention period.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Records handed to the store writer per batch at most (also handed over every second).
const BATCH: usize = 1024;

/// Seconds between readings of the host's own addresses.
const HOST_REFRESH_SECS: u64 = 10;

/// The live pipeline: NAT renaming, the flows, the proxy stage, sessions continued from the
/// store, container identity, the store writer (pruning included) and, with `--dump`, the
/// exchange lines. `server_ports` is the port policy's set: the flows and NAT go by the ports
/// the kernel watches now, after reloads and as listeners come and go.
fn live_pipeline(
    live: &LiveOptions,
    config: &Config,
    data_dir: &Path,
    options: &CaptureOptions,
    server_ports: ServerPorts,
) -> Result<(Pipeline, Arc<Store>, Option<ShipperHandle>), LiveError> {
    // Sessions that were active when the daemon last stopped go on (a restart, an upgrade, a
    // crash): what is still within the inactivity timeout is loaded back.
    let mut store = Store::open(data_dir, DEFAULT_MAP_SIZE)?;
    // The shipper reads what the writer commits from the store's outbox, on its own thread:
    // capture never waits for the central store.
    let shipper = match &config.central {
        Some(central) => {
            store.enable_outbox();
            let settings = ShipperSettings::from_config(central, config.storage.retention);
            Some(Shipper::spawn(store.share(), central, settings)?)
        }
        None => None,
    };
    // One handle for the writer and the console's readers (LMDB maps a store once a process).
    let store = Arc::new(store);
    let since = now_ns().saturating_sub(config.sessions.inactivity_timeout.as_nanos() as u64);
    let sessionizer =
        pipeline::restored_sessionizer(SessionConfig::from(config), data_dir, &store, since)?;
    let analysis = Analysis::new(
        sessionizer,
        Redaction::new(config.secrets.store_raw, &config.secrets.names),
    )
    .with_abuse(&config.abuse)
    .with_inventory(pipeline::restored_inventory(
        config,
        live.config_file.as_deref(),
        &store,
    )?)
    .with_containers(ContainerIndex::new());
    let analysis = match config.attacks.enabled {
        true => analysis.with_attacks(Detector::new(&AttacksConfig::from_config(config))?),
        false => analysis,
    };
    let conntrack = match Conntrack::open() {
        Ok(conntrack) => Some(conntrack),
        Err(e) => {
            log::warn!("{e}: connections through NAT will be seen before and after translation");
            None
        }
    };
    let flow_config = FlowConfig {
        server_ports: server_ports.clone(),
        // The kernel already keeps to the watched ports; with --all-ports every port counts.
        only_server_ports: false,
        http: HttpConfig {
            body_cap: config.capture.body_cap,
            ..HttpConfig::default()
        },
        skip_hints: true,
        ..FlowConfig::default()
    };
    let flows = Flows::new(flow_config, config.capture.decode_threads)?;
    let nat = NatTable::new(
        conntrack,
        NatConfig {
            server_ports,
            all_ports: options.all_ports,
            ..NatConfig::default()
        },
    );
    let writer = StoreWriter::start(
        Arc::clone(&store),
        WriterMode::Daemon {
            retention: config.storage.retention,
            prune_every: PRUNE_EVERY,
        },
    )
    .map_err(PipelineError::Writer)?;
    let mut pipeline = Pipeline::new(
        pipeline::Clock::Wall,
        flows,
        ProxyStage::new(ProxyConfig::from(config)),
        analysis,
    )
    .with_nat(nat)
    .with_store(writer, BATCH);
    if live.dump {
        pipeline = pipeline.with_sink(Box::new(DumpLines::new(io::BufWriter::new(
            io::stdout().lock(),
        ))));
    }
    Ok((pipeline, store, shipper))
}

/// Starts the `--ui` and `--metrics` servers on the daemon's runtime; they end with it. Bound
/// here, before the capture starts, so that an address in use stops the daemon at once.
async fn start_servers(
    live: &LiveOptions,
    config: &Config,
    data_dir: &Path,
    store: &Arc<Store>,
) -> Result<(), LiveError> {
    if live.servers.is_empty() {
        return Ok(());
    }
    let setup = InventorySetup {
        config: config.inventory.clone(),
        specs: inventory::load_configured_specs(config, live.config_file.as_deref())
            .map_err(PipelineError::Spec)?,
    };
    for server in &live.servers {
        let listener = console::bind(server.listen, server.token.as_ref()).await?;
        let options = ConsoleOptions {
            token: server.token.clone(),
            inventory: setup.clone(),
            central: None,
        };
        let state = ConsoleState::shared(data_dir, Arc::clone(store), options);
        let router = if server.metrics_only {
            console::metrics_router(state)
        } else {
            console::router(state)
        };
        let what = if server.metrics_only {
            "metrics"
        } else {
            "console"
        };
        log::info!("{what}: http://{}/", server.listen);
        tokio::spawn(async move {
            if let Err(e) = console::serve(listener, router, std::future::pending()).await {
                log::error!("{what}: {e}");
            }
        });
    }
    Ok(())
}

/// The capture side of the daemon: kernel segments into the pipeline, with `--dump-segments`
/// lines, and the host's addresses read again now and then.
struct Feed {
    clock: Clock,
    pipeline: Pipeline,
    /// Shipping to the central store, when configured.
    shipper: Option<ShipperHandle>,
    /// `--dump-segments`: one line per captured segment.
    segment_lines: Option<io::BufWriter<io::Stdout>>,
    host_refresh_in: u64,
}

impl Feed {
    fn segment(&mut self, segment: Segment) {
        if let Some(out) = &mut self.segment_lines
            && writeln!(out, "{}", dump::segment_line(&segment, &self.clock)).is_err()
        {
            // The reader went away (e.g. `| head`): not the daemon's error.
            self.segment_lines = None;
        }
        let segment = TcpSegment::from_capture(segment, &self.clock);
        if let Err(e) = self.pipeline.push(segment) {
            log::error!("{e:#}");
        }
    }

    /// A piece of TLS plaintext: the same pipeline as the wire's segments.
    fn plaintext(&mut self, piece: Plaintext) {
        let segment = TcpSegment::from_tls(piece, &self.clock);
        if let Err(e) = self.pipeline.push(segment) {
            log::error!("{e:#}");
        }
    }

    /// The `n` pieces [`next_plaintext`] brought; none means the TLS reader ended.
    fn plaintexts(
        &mut self,
        n: usize,
        rx: &mut Option<mpsc::Receiver<Plaintext>>,
        arrived: &mut Vec<Plaintext>,
    ) {
        if n == 0 {
            *rx = None;
        }
        for piece in arrived.drain(..) {
            self.plaintext(piece);
        }
    }

    /// Once a second: idle connections end by the wall clock, records go to the store.
    fn tick(&mut self) {
        self.refresh_host_addresses();
        if let Err(e) = self.pipeline.tick(now_ns()) {
            log::error!("{e:#}");
        }
        if let Some(out) = &mut self.segment_lines
            && out.flush().is_err()
        {
            self.segment_lines = None;
        }
    }

    /// Reads the host's addresses again now and then: interfaces and addresses come and go.
    fn refresh_host_addresses(&mut self) {
        if self.host_refresh_in > 0 {
            self.host_refresh_in -= 1;
            return;
        }
        self.host_refresh_in = HOST_REFRESH_SECS;
        match proxy::host_addresses() {
            Ok(addresses) => self.pipeline.set_host_addresses(addresses),
            Err(e) => log::warn!("reading this host's addresses (trusted as proxies): {e}"),
        }
    }

    fn report(&self, report: &mut StatsReport) {
        for (stage, counters) in self.pipeline.snapshot() {
            report.set_stage(stage, counters);
        }
        if let Some(shipper) = &self.shipper {
            report.set_stage("central", shipper.counters.snapshot());
            report.central_last_error = shipper.counters.last_error();
        }
    }
}

async fn daemon(
    live: LiveOptions,
    mut config: Config,
    data_dir: PathBuf,
    options: CaptureOptions,
    mut ports: PortPolicy,
    interfaces: Vec<Interface>,
    loaded: LoadedCapture,
) -> Result<(), LiveError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(LiveError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(LiveError::Signals)?;
    // Installed before anything slow: SIGHUP's default action would end the daemon.
    let mut sighup = signal(SignalKind::hangup()).map_err(LiveError::Signals)?;
    let mut reloads = ReloadCounters::default();
    let mut stats_file = StatsFile::default();
    let (pipeline, store, shipper) =
        live_pipeline(&live, &config, &data_dir, &options, ports.server_ports())?;
    start_servers(&live, &config, &data_dir, &store).await?;
    // With no interface named, the sensor follows the interfaces that come and go (containers).
    let follow_interfaces = config.capture.interfaces.is_empty();
    let (mut sensor, mut segments) =
        Sensor::start_loaded(loaded, interfaces, config.capture.attach, Some(&data_dir))?;
    // The policy already counts the TLS ports as applied; the kernel learns them here, before
    // the TLS programs start deciding by them.
    for port in tls_ports(&config) {
        sensor.set_port(*port, sensor_ebpf::port::TLS)?;
    }
    // TLS capture that cannot start (no uprobes, a locked-down kernel) leaves the rest running.
    let mut plaintext = match sensor.start_tls() {
        Ok(rx) => rx,
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            log::error!("TLS capture did not start, TLS ports stay unread: {e}{cause}");
            None
        }
    };
    let mut arrived_plaintext = Vec::with_capacity(SEGMENTS_PER_WAKEUP);
    let mut feed = Feed {
        clock: Clock::new(),
        pipeline,
        shipper,
        segment_lines: live.dump_segments.then(|| io::BufWriter::new(io::stdout())),
        host_refresh_in: 0,
    };
    feed.refresh_host_addresses();
    let mut report = StatsReport {
        pid: std::process::id(),
        running: true,
        started: rfc3339(SystemTime::now()),
        attach_mode: sensor.mode.as_str().to_owned(),
        interfaces: sensor.interfaces.iter().map(|i| i.name.clone()).collect(),
        ..StatsReport::default()
    };
    refresh_report(&mut report, &sensor)?;
    // The ports watched from the start are in the first report already.
    report.ports = ports.status();
    report.set_stage("config", reloads.snapshot());
    report.write(&data_dir)?;
    log::info!(
        "capturing {} on {}; statistics in {}",
        if options.all_ports {
            "all TCP ports".to_owned()
        } else {
            format!("ports {:?}", options.ports)
        },
        report.interfaces.join(", "),
        StatsReport::path(&data_dir).display()
    );

    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let summary_every = Duration::from_secs(live.summary_interval.max(1));
    let mut summary_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    let mut summary = Summary::default();
    // Segments are taken off the channel in runs: one wakeup of this task serves all that waited
    // (at high rates hundreds), instead of a park and a cross-thread wakeup per segment.
    let mut arrived = Vec::with_capacity(SEGMENTS_PER_WAKEUP);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            n = segments.recv_many(&mut arrived, SEGMENTS_PER_WAKEUP) => {
                if n == 0 {
                    break;
                }
                for segment in arrived.drain(..) {
                    feed.segment(segment);
                }
                // At once: the rest of a long body is on its way.
                pass_skip_hints(&mut feed.pipeline, &mut sensor);
            }
            n = next_plaintext(&mut plaintext, &mut arrived_plaintext) => {
                feed.plaintexts(n, &mut plaintext, &mut arrived_plaintext);
            }
            _ = stats_tick.tick() => {
                if follow_interfaces {
                    if let Err(e) = sensor.rescan() {
                        log::warn!("following interfaces: {e}");
                    }
                    report.interfaces = sensor.interfaces.iter().map(|i| i.name.clone()).collect();
                }
                feed.tick();
                // Withdrawals of the connections the tick ended.
                pass_skip_hints(&mut feed.pipeline, &mut sensor);
                ticks += 1;
                // Servers on the TLS ports that started since (and their libraries).
                if ticks.is_multiple_of(2) {
                    sensor.rescan_tls();
                }
                let auto = config.capture.ports == Ports::Auto;
                follow_ports(&mut ports, &mut sensor, &mut feed.pipeline, auto && ticks.is_multiple_of(2));
                refresh_report(&mut report, &sensor)?;
                feed.report(&mut report);
                report.ports = ports.status();
                report.set_stage("ports", ports.counters.snapshot());
                stats_file.write(&mut report, &data_dir);
            }
            _ = summary_tick.tick(), if live.summary_interval > 0 => {
                refresh_report(&mut report, &sensor)?;
                feed.report(&mut report);
                summary.log(&report, summary_every);
            }
            _ = sighup.recv() => {
                let pipeline = &mut feed.pipeline;
                if let Some(reloaded) = reload(&live, &config, pipeline, &mut ports, &mut reloads) {
                    config = reloaded;
                    // The kernel watches the new ports from now, not from the next tick.
                    let auto = config.capture.ports == Ports::Auto;
                    follow_ports(&mut ports, &mut sensor, pipeline, auto);
                    report.ports = ports.status();
                }
                report.set_stage("config", reloads.snapshot());
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    log::info!("stopping: detaching and draining the ring");
    // Keep reading while the sensor drains, so the reader never waits on a full channel.
    {
        let shutdown = sensor_shutdown(sensor, &mut report);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                result = &mut shutdown => { result?; break; }
                Some(segment) = segments.recv() => feed.segment(segment),
                n = next_plaintext(&mut plaintext, &mut arrived_plaintext) => {
                    feed.plaintexts(n, &mut plaintext, &mut arrived_plaintext);
                }
            }
        }
    }
    while let Some(segment) = segments.recv().await {
        feed.segment(segment);
    }
    if let Some(rx) = &mut plaintext {
        while let Some(piece) = rx.recv().await {
            feed.plaintext(piece);
        }
    }
    // Everything decoded is committed before the final report says the daemon stopped.
    if let Err(e) = feed.pipeline.finish() {
        log::error!("{e:#}");
    }
    // What the shipper has not sent stays in the outbox for the next start.
    if let Some(shipper) = feed.shipper.take() {
        feed.report(&mut report);
        shipper.stop();
    }
    feed.report(&mut report);
    report.running = false;
    report.updated = rfc3339(SystemTime::now());
    stats_file.write(&mut report, &data_dir);
    log::info!("stopped");
    Ok(())
}

/// The statistics file, rewritten every second. Once the daemon runs, a failed write (a full
/// disk) must not stop capture: it is logged when it starts and ends, and counted.
#[derive(Debug, Default)]
struct StatsFile {
    /// Writes that failed since the last one that succeeded.
    failing: u64,
    /// Writes that failed in all (`stats.write_errors`).
    write_errors: u64,
}

impl StatsFile {
    fn write(&mut self, report: &mut StatsReport, data_dir: &Path) {
        report.set_stage("stats", [("write_errors", self.write_errors)]);
        match report.write(data_dir) {
            Ok(()) if self.failing > 0 => {
                log::info!(
                    "statistics written again after {} failed writes",
                    self.failing
                );
                self.failing = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if self.failing == 0 {
                    let cause = std::error::Error::source(&e)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default();
                    log::error!("{e}{cause}; capture goes on, the statistics wait");
                }
                self.failing += 1;
                self.write_errors += 1;
            }
        }
    }
}

/// Configuration reloads (SIGHUP), for `stats`.
#[derive(Debug, Default)]
struct ReloadCounters {
    /// Files read again and applied (what applies live; see [`crate::config::reload`]).
    applied: u64,
    /// Files that could not be read or were invalid: the running configuration stayed.
    rejected: u64,
}

impl ReloadCounters {
    fn snapshot(&self) -> [(&'static str, u64); 2] {
        [
            ("reloads", self.applied),
            ("reloads_rejected", self.rejected),
        ]
    }
}

/// SIGHUP: reads the configuration file again and applies what can change live (see
/// [`crate::config::reload`]); returns the configuration now in force. An unreadable or invalid
/// file changes nothing: logged with its file, line, column and reason, and counted.
fn reload(
    live: &LiveOptions,
    running: &Config,
    pipeline: &mut Pipeline,
    ports: &mut PortPolicy,
    counters: &mut ReloadCounters,
) -> Option<Config> {
    let Some(path) = &live.config_file else {
        log::warn!("SIGHUP: started without --config, there is no file to read again");
        counters.rejected += 1;
        return None;
    };
    let reject = |counters: &mut ReloadCounters, e: &dyn std::error::Error| {
        counters.rejected += 1;
        let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
        log::error!("reload rejected, the running configuration stays in force: {e}{cause}");
    };
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            reject(counters, &e);
            return None;
        }
    };
    let reload = Reload::new(running, new, &live.overrides);
    if let Err(e) = pipeline.reconfigure(&reload.config) {
        reject(counters, &e);
        return None;
    }
    let capture = &reload.config.capture;
    ports.reconfigure(
        capture.ports.listed(),
        &capture.exclude_ports,
        capture.ports == Ports::Auto && !capture.all_ports,
    );
    counters.applied += 1;
    log::info!(
        "reloaded {}: {}",
        path.display(),
        match reload.applied.is_empty() {
            true => "nothing that applies live changed".to_owned(),
            false => format!("{} in force", reload.applied.join(", ")),
        }
    );
    if !reload.at_restart.is_empty() {
        log::warn!(
            "{} changed in {}: in force after a restart",
            reload.at_restart.join(", "),
            path.display()
        );
    }
    Some(reload.config)
}

/// Hands the decoder's skip hints (and withdrawals) to the kernel (see [`crate::flow::SkipHint`]).
fn pass_skip_hints(pipeline: &mut Pipeline, sensor: &mut Sensor) {
    for hint in pipeline.take_skip_hints() {
        sensor.skip(hint.src, hint.dst, hint.from_seq, hint.until_seq);
    }
}

/// Keeps the watched ports in step: the decoder's verdicts on the ports' connections, the
/// host's listeners (when `refresh_listeners`), muted ports due for another look.
fn follow_ports(
    ports: &mut PortPolicy,
    sensor: &mut Sensor,
    pipeline: &mut Pipeline,
    refresh_listeners: bool,
) {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for (port, http) in pipeline.take_port_verdicts() {
        ports.verdict(port, http, now);
    }
    ports.recheck(now);
    if refresh_listeners {
        match listening_ports() {
            Ok((listening, past)) => ports.listeners(&listening, past),
            Err(e) => {
                ports.counters.refresh_errors += 1;
                log::warn!("reading the listening TCP sockets: {e}");
            }
        }
    }
    for (port, slot) in ports.changes() {
        let what = match slot {
            sensor_ebpf::port::WATCHED => "watching",
            sensor_ebpf::port::MUTED => "muting (not HTTP)",
            _ => "no longer watching",
        };
        log::info!("{what} port {port}");
        if let Err(e) = sensor.set_port(port, slot) {
            log::error!("could not update port {port} in the kernel: {e}");
        }
    }
}

/// Takes the sensor down, keeping a last copy of the kernel counters in the report.
async fn sensor_shutdown(sensor: Sensor, report: &mut StatsReport) -> Result<(), LiveError> {
    refresh_report(report, &sensor)?;
    let counters = Arc::clone(&sensor.counters);
    sensor.shutdown().await?;
    report.set_stage("reader", counters.snapshot());
    Ok(())
}

fn refresh_report(report: &mut StatsReport, sensor: &Sensor) -> Result<(), LiveError> {
    let kernel = sensor.kernel_counters()?;
    report.set_stage("kernel", kernel.iter().map(|(name, value)| (*name, *value)));
    report.set_stage("reader", sensor.counters.snapshot());
    if let Some(tls) = sensor.tls_counters() {
        report.set_stage("tls", tls);
    }
    report.set_stage(
        "interfaces",
        [
            ("captured", sensor.interfaces.len() as u64),
            ("attached_later", sensor.interfaces_attached),
            ("detached", sensor.interfaces_detached),
        ],
    );
    report.updated = rfc3339(SystemTime::now());
    Ok(())
}

/// The periodic summary log line: rates since the last one, and any loss.
#[derive(Default)]
struct Summary {
    events: u64,
    bytes: u64,
    exchanges: u64,
}

impl Summary {
    fn log(&mut self, report: &StatsReport, every: Duration) {
        let events = report.get("reader", "events_read");
        let bytes = report.get("reader", "bytes_read");
        let exchanges = report.get("http", "exchanges");
        let seconds = every.as_secs_f64();
        log::info!(
            "capture: {:.0} events/s, {:.0} bytes/s, {:.0} exchanges/s, {} flows; drops: \
             ring_full={} truncated_segments={} load_errors={} malformed={} gaps={}",
            (events - self.events) as f64 / seconds,
            (bytes - self.bytes) as f64 / seconds,
            (exchanges - self.exchanges) as f64 / seconds,
            report.get("flows", "active"),
            report.get("kernel", "ring_full"),
            report.get("kernel", "segments_truncated"),
            report.get("kernel", "load_errors"),
            report.get("reader", "events_malformed"),
            report.get("reassembly", "gaps"),
        );
        self.events = events;
        self.bytes = bytes;
        self.exchanges = exchanges;
    }
}

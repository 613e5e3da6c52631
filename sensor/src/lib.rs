//! apisessions: an API session sensor for Linux hosts.
//!
//! # Layout
//!
//! The crate follows the pipeline, one module per stage, and [`pipeline`] wires them: it takes
//! segments from any source and runs them through the stages into the sinks, for the daemon
//! (`apisessions run`) and for capture files (`apisessions import`, see [`import`]) alike.
//! Dependencies point from later stages to earlier ones or to shared types below both.
//!
//! ```text
//! capture | source -> segment -> nat -> flow (reassembly + http) -> exchange -> proxy
//!   -> analysis (sessions, endpoint, container) -> record -> sinks (store, dump, NDJSON)
//! ```
//!
//! - Sources: [`capture`] (eBPF programs on TC or a socket filter emit one event per TCP segment
//!   of a watched port into a ring buffer; a tokio task drains it into a bounded channel; loss
//!   is counted in the kernel and in user space) and [`source`] (pcap and pcapng files), both
//!   into [`segment::TcpSegment`]s.
//! - [`nat`]: segments of connections through NAT (published container ports, Kubernetes
//!   Services) renamed to the tuple the client sent; conntrack over netlink (live only).
//! - [`flow`]: the connection table, where [`reassembly`] (each direction put back in sequence
//!   order, gaps explicit) meets [`http`] (the HTTP/1.x decoder pairing requests with responses
//!   into [`exchange::Exchange`]s); neither of the two knows the other.
//! - [`proxy`]: reverse proxies on the host: the real client from a trusted proxy's forwarding
//!   headers, and a proxy's upstream exchange joined into its client's (one per request).
//! - Analysis ([`pipeline::analysis`]): [`analysis::attacks`] (attack payloads in a request's
//!   inputs: class, key path, excerpt, rule), [`sessions`] (grouping keys, response-to-request
//!   linking, inactivity and day parts, keyed ids), [`endpoint`] templates (`/users/{id}`),
//!   [`container`] identity (live only).
//! - [`record`]: what the analysis hands the sinks (the stored exchange without raw secrets, its
//!   session assignment, session summaries, the sessionizer's persisted state, the installation
//!   secret), below both sessions and the store.
//! - Sinks: [`store`] (LMDB via heed, time and secondary indexes, pruning), written by the
//!   pipeline's writer thread ([`pipeline::writer`]); the `--dump` and `--ndjson` lines
//!   ([`pipeline::sinks`], rendered by [`dump`]).
//! - Readers: [`report`] (the `sessions` table, the `show` page, NDJSON/CSV/HAR export),
//!   [`ship`] (the central ClickHouse store: a shipper reading the store's outbox, and the
//!   query commands over the fleet) and [`console`] (the web console, its JSON API with the CLI's objects, `/metrics`), served by
//!   `apisessions ui` or by the daemon (`run --ui`).
//!
//! Around the pipeline: [`config`] (the TOML file) and [`stats`] (every stage's counters, shown
//! by `apisessions stats`). The binary (`src/bin/apisessions/`) parses arguments and has one
//! small module per command.

pub mod analysis;
pub mod capture;
pub mod config;
pub mod console;
pub mod container;
pub mod doctor;
pub mod dump;
pub mod endpoint;
pub mod exchange;
pub mod flow;
pub mod http;
pub mod import;
pub mod live;
pub mod nat;
pub mod pipeline;
pub mod privilege;
pub mod proxy;
pub mod reassembly;
pub mod record;
pub mod report;
pub mod segment;
pub mod sessions;
pub mod ship;
pub mod source;
pub mod stats;
pub mod store;
#[cfg(test)]
mod test_rng;

//! apisessions: an API session sensor for Linux hosts.
//!
//! # Layout
//!
//! The crate follows the pipeline, one module per stage:
//!
//! - [`capture`]: eBPF programs in the kernel (TC classifier or socket filter) emit one event
//!   per TCP segment of a watched port into a ring buffer; a tokio task drains it into a bounded
//!   channel of [`capture::Segment`]s. Loss is counted in the kernel (`ring_full`, truncation)
//!   and in user space (malformed events).
//! - [`source`]: capture files (pcap and pcapng, see [`source::PcapSource`]) read into the
//!   same [`segment::TcpSegment`]s as the live path, with every skipped packet counted.
//! - [`nat`]: segments of connections through NAT (published container ports, Kubernetes
//!   Services) renamed to the tuple the client sent, with the translated destination kept as
//!   the exchange's upstream; conntrack asked over netlink, answers cached (live capture only).
//! - [`reassembly`]: the flow table and, per connection, both directions put back in sequence
//!   order with gaps made explicit ([`segment::TcpSegment`] in, stream events out).
//! - [`http`]: the HTTP/1.x decoder (httparse heads, body framing, pipelining, 1xx, upgrades,
//!   resynchronisation) pairing requests with responses into [`exchange::Exchange`]s.
//! - [`proxy`]: reverse proxies on the host: the real client from a trusted proxy's forwarding
//!   headers, and a proxy's upstream exchange joined into its client's (one per request).
//! - [`analysis`]: what an exchange reveals beyond its fields: [`analysis::attacks`] finds
//!   attack payloads in a request's inputs (class, key path, excerpt, rule).
//! - [`sessions`]: grouping keys, response-to-request linking, inactivity and day parts, keyed
//!   session ids; [`endpoint`] templates paths (`/users/{id}`).
//! - [`store`]: LMDB (heed) with time and secondary indexes, the daemon's writer thread and the
//!   pruning sweep; records hold no raw secrets.
//! - Readers: [`report`] (the `sessions` table, the `show` page, NDJSON/CSV/HAR export).
//!
//! Around the pipeline: [`container`] (which container's network namespace and cgroup served an
//! exchange, from /proc; live only), [`config`] (the TOML file), [`import`] (capture files through the same
//! stages), [`stats`] (every stage's counters, shown by `apisessions stats`) and [`dump`] (the
//! one-line renderings of `apisessions run --dump`).

pub mod analysis;
pub mod capture;
pub mod config;
pub mod container;
pub mod dump;
pub mod endpoint;
pub mod exchange;
pub mod http;
pub mod import;
pub mod nat;
pub mod proxy;
pub mod reassembly;
pub mod report;
pub mod segment;
pub mod sessions;
pub mod source;
pub mod stats;
pub mod store;
#[cfg(test)]
mod test_rng;

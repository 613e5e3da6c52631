//! Stage between decoding and sessions: reverse proxies on the captured host.
//!
//! Two things, for every exchange in the order exchanges complete:
//! - **The real client.** When the connection's peer is a trusted proxy (configured ranges,
//!   by default loopback, plus the host's own addresses), the client is the one its forwarding
//!   header names ([`forwarded`]); the peer stays on the record as `peer_ip`/`peer_port`.
//!   A forwarding header from any other peer is client input and is ignored (counted).
//! - **One exchange per client request.** A trusted proxy's exchange with a forwarding header
//!   is the upstream hop of a client's request; when the client's own exchange with the proxy
//!   is captured too, the two are joined into the client's ([`join`]).
//!
//! Both the daemon and `import` feed their exchanges through [`ProxyStage`].

pub mod forwarded;
pub mod join;

use std::{io, net::IpAddr};

use ipnet::IpNet;

use crate::{
    config::Config,
    exchange::Exchange,
    proxy::{
        forwarded::{Node, Resolution},
        join::{JoinConfig, Joiner},
    },
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub trusted: Vec<IpNet>,
    pub trust_host_addresses: bool,
    /// Forwarding headers, lower-case, in the order they are tried.
    pub headers: Vec<String>,
    /// None: no joining.
    pub join: Option<JoinConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for ProxyConfig {
    fn from(config: &Config) -> Self {
        let proxy = &config.proxy;
        Self {
            trusted: proxy.trusted.clone(),
            trust_host_addresses: proxy.trust_host_addresses,
            headers: proxy.headers.clone(),
            join: proxy.join.then(|| JoinConfig {
                window_ns: proxy.join_window.as_nanos().min(u128::from(u64::MAX)) as u64,
                ..JoinConfig::default()
            }),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Clients taken from a trusted peer's forwarding header.
    pub forwarded_clients: u64,
    /// Forwarding headers from peers that are not trusted proxies, ignored.
    pub forwarded_untrusted: u64,
    /// Forwarding headers of trusted peers that named no usable client (an unknown or
    /// obfuscated hop, garbage, or a list cut to its last entries): the peer stays the client.
    pub forwarded_unusable: u64,
    /// Forwarding headers longer than the entries kept (the left ones were not read).
    pub forwarded_lists_cut: u64,
}

/// The proxy stage: resolves real clients, joins hops (see the module documentation).
pub struct ProxyStage {
    config: ProxyConfig,
    /// This host's own addresses, if they are trusted (refreshed by the daemon).
    host_addresses: Vec<IpAddr>,
    joiner: Option<Joiner>,
    pub counters: ProxyCounters,
}

impl ProxyStage {
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            joiner: config.join.clone().map(Joiner::new),
            config,
            host_addresses: Vec::new(),
            counters: ProxyCounters::default(),
        }
    }

    /// Takes a reloaded configuration's trusted peers and forwarding headers. Joining keeps the
    /// start's settings (it holds exchanges in flight): `join` changes apply at the next start.
    pub fn set_config(&mut self, config: ProxyConfig) {
        self.config = ProxyConfig {
            join: self.config.join.clone(),
            ..config
        };
    }

    /// Sets the host's own addresses (see [`host_addresses`]); used only if they are trusted.
    pub fn set_host_addresses(&mut self, mut addresses: Vec<IpAddr>) {
        addresses.sort_unstable();
        addresses.dedup();
        self.host_addresses = addresses;
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.config.trusted.iter().any(|net| net.contains(&ip))
            || (self.config.trust_host_addresses && self.host_addresses.binary_search(&ip).is_ok())
    }

    /// Takes one decoded exchange; what is ready to go on (this one, held ones it released or
    /// nothing while it waits for its client's exchange) is appended to `ready`.
    pub fn push(&mut self, mut exchange: Exchange, ready: &mut Vec<Exchange>) {
        let forwarded_for = self.resolve_client(&mut exchange);
        let Some(joiner) = self.joiner.as_mut() else {
            ready.push(exchange);
            return;
        };
        joiner.expire(exchange.end_ns(), ready);
        let joined = joiner.join_into(&mut exchange);
        if !forwarded_for.is_empty() {
            // A trusted proxy's upstream hop: joined into its client's exchange if that one,
            // read from TLS, came first; else it waits for it.
            if !joiner.join_late(&exchange, &forwarded_for, ready) {
                joiner.hold(exchange, forwarded_for, ready);
            }
        } else if exchange.tls && !joined {
            // Read from TLS: its upstream hop, if it has one, may still come through TC.
            joiner.hold_tls(exchange, ready);
        } else {
            ready.push(exchange);
        }
    }

    /// Passes on held exchanges whose wait ended before `now_ns` (capture time).
    pub fn expire(&mut self, now_ns: u64, ready: &mut Vec<Exchange>) {
        if let Some(joiner) = self.joiner.as_mut() {
            joiner.expire(now_ns, ready);
        }
    }

    /// The input ended: passes on everything held.
    pub fn finish(&mut self, ready: &mut Vec<Exchange>) {
        if let Some(joiner) = self.joiner.as_mut() {
            joiner.finish(ready);
        }
    }

    /// Sets the exchange's client from a trusted peer's forwarding header (the first of the
    /// configured ones present). Returns whom the peer forwarded the request for: that client,
    /// and the hop the peer appended to each configured header (the right-most entry), which
    /// is its own client even where the header the client is taken from was set by someone else;
    /// empty if the peer is no trusted proxy or names nobody.
    fn resolve_client(&mut self, exchange: &mut Exchange) -> Vec<IpAddr> {
        let mut forwarded_for = Vec::new();
        let Some(request) = exchange.request.as_ref() else {
            return forwarded_for;
        };
        let trusted = self.is_trusted(exchange.client.ip());
        let mut decided = false;
        for name in &self.config.headers {
            let Some(nodes) = forwarded::nodes(&request.meta, name) else {
                continue;
            };
            if !trusted {
                self.counters.forwarded_untrusted += 1;
                return forwarded_for;
            }
            if !decided {
                decided = true;
                if nodes.cut {
                    self.counters.forwarded_lists_cut += 1;
                }
                match forwarded::resolve(&nodes, |ip| self.is_trusted(ip)) {
                    Resolution::Client(client) => {
                        self.counters.forwarded_clients += 1;
                        exchange.forwarding.client = Some(client);
                        forwarded_for.push(client.ip());
                    }
                    Resolution::Unusable => self.counters.forwarded_unusable += 1,
                }
            }
            if let Some(Node::Addr(nearest)) = nodes.list.back()
                && !forwarded_for.contains(&nearest.ip())
            {
                forwarded_for.push(nearest.ip());
            }
        }
        forwarded_for
    }

    /// Counters by name, for `apisessions stats`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let mut list = vec![
            ("forwarded_clients", c.forwarded_clients),
            ("forwarded_untrusted", c.forwarded_untrusted),
            ("forwarded_unusable", c.forwarded_unusable),
            ("forwarded_lists_cut", c.forwarded_lists_cut),
        ];
        let join = self
            .joiner
            .as_ref()
            .map(|j| j.counters.clone())
            .unwrap_or_default();
        list.extend([
            ("join_held", join.held),
            ("joined", join.joined),
            ("join_waiting", join.waiting),
            ("unjoined_timeout", join.unjoined_timeout),
            ("unjoined_capacity", join.unjoined_capacity),
            ("join_tls_held", join.tls_held),
            ("join_tls_joined_late", join.tls_joined_late),
            ("join_passed_unpaired", join.passed_unpaired),
        ]);
        list
    }
}

/// The addresses of this network namespace's interfaces: where a proxy on this host connects
/// from. (The sensor captures the interfaces of the namespace it runs in.)
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addresses
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .map(|ip| ip.to_canonical())
        .collect())
}

#[cfg(test)]
mod tests;

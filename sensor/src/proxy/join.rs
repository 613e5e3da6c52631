//! Joining a proxy's upstream exchange to the client's exchange it serves.
//!
//! With both hops of a reverse proxy captured, each client request shows twice: client ->
//! proxy (the outer exchange) and proxy -> application (the inner one). The inner one completes
//! first (the proxy relays the application's last byte before it sends its own), so it is held
//! here until an outer exchange arrives that it fits: same method and target, the outer's
//! client is one the proxy forwarded it for, the same request body length, and its timing inside
//! the outer's. The outer one goes on carrying the inner's duration (`upstream_ns`); the inner one is
//! dropped. An inner exchange whose outer does not come within the window (the proxy's client
//! side is not captured, e.g. TLS in a library the sensor does not read, or the outer took
//! longer) goes on unchanged and is counted.
//!
//! A client's exchange read from TLS plaintext (uprobes in the proxy's TLS library) comes
//! through another ring than its proxy's hop to the application (TC), so it may arrive first: it
//! is held for `reorder_ns` after its end, and an upstream exchange that arrives meanwhile is
//! joined into it the same way.
//!
//! Bounds: at most `max_held` exchanges and `max_held_bytes` of them are held; past either the
//! oldest goes on unjoined (counted). Upstreams none of whose last exchanges could be joined
//! (their client side is not captured) are not held for a while, so a host where the proxy
//! terminates TLS does not delay every record by the window.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    net::{IpAddr, SocketAddr},
};

use lru::LruCache;

use crate::exchange::Exchange;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinConfig {
    /// How long an inner exchange waits for its outer one, after its own end.
    pub window_ns: u64,
    pub max_held: usize,
    pub max_held_bytes: usize,
    /// Timing slack for containment (capture timestamps of two interfaces).
    pub slack_ns: u64,
    /// Held exchanges of one upstream that time out in a row before it is passed over.
    pub unpaired_after: u32,
    /// How long an unpaired upstream's exchanges pass without waiting before it is tried again.
    pub unpaired_for_ns: u64,
    /// How long a client's exchange read from TLS waits, after its end, for its upstream hop
    /// from the other ring (both rings are drained every 10 ms).
    pub reorder_ns: u64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            window_ns: 3_000_000_000,
            max_held: 4096,
            max_held_bytes: 32 << 20,
            slack_ns: 1_000_000,
            unpaired_after: 16,
            unpaired_for_ns: 60_000_000_000,
            reorder_ns: 200_000_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinCounters {
    /// Upstream exchanges held to wait for their client's exchange.
    pub held: u64,
    /// Held exchanges joined into their client's exchange.
    pub joined: u64,
    /// Held exchanges whose client's exchange did not come in the window: passed on unjoined.
    pub unjoined_timeout: u64,
    /// Held exchanges passed on unjoined to stay within the bounds.
    pub unjoined_capacity: u64,
    /// Upstream exchanges not held because their upstream's recent ones found no partner.
    pub passed_unpaired: u64,
    /// Exchanges held right now (a gauge).
    pub waiting: u64,
    /// Clients' exchanges read from TLS, held while their upstream hop may still come through
    /// the other ring.
    pub tls_held: u64,
    /// Of those, joined with an upstream exchange that came after them.
    pub tls_joined_late: u64,
}

struct HeldTls {
    deadline: u64,
    exchange: Exchange,
    bytes: usize,
}

struct Held {
    seq: u64,
    exchange: Exchange,
    /// The addresses the proxy forwarded it for (see [`Joiner::hold`]).
    clients: Vec<IpAddr>,
    bytes: usize,
}

/// How the exchanges of one upstream fared lately.
#[derive(Clone, Copy, Debug, Default)]
struct Pairing {
    timeouts_in_a_row: u32,
    /// Exchanges to this upstream pass without waiting until then.
    skip_until_ns: u64,
}

pub struct Joiner {
    config: JoinConfig,
    hasher: RandomState,
    /// Held exchanges by hash of (method, target).
    waiting: HashMap<u64, Vec<Held>>,
    /// (deadline, seq, key) in arrival order, for expiry and eviction. Entries of exchanges
    /// already joined stay until they are reached or compacted away.
    order: VecDeque<(u64, u64, u64)>,
    held: usize,
    held_bytes: usize,
    seq: u64,
    upstreams: LruCache<SocketAddr, Pairing>,
    /// Clients' exchanges read from TLS, held until their deadline (arrival order), with their
    /// size (see [`size_of`]); bounded like the upstream exchanges, on their own.
    tls_outers: VecDeque<HeldTls>,
    tls_bytes: usize,
    pub counters: JoinCounters,
}

/// Upstreams whose pairing is remembered.
const MAX_UPSTREAMS: usize = 1024;

impl Joiner {
    pub fn new(config: JoinConfig) -> Self {
        Self {
            config,
            hasher: RandomState::new(),
            waiting: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            held_bytes: 0,
            seq: 0,
            upstreams: LruCache::new(
                std::num::NonZeroUsize::new(MAX_UPSTREAMS).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            tls_outers: VecDeque::new(),
            tls_bytes: 0,
            counters: JoinCounters::default(),
        }
    }

    fn key(&self, exchange: &Exchange) -> Option<u64> {
        let request = exchange.request.as_ref()?;
        Some(
            self.hasher
                .hash_one((request.method.as_str(), request.uri.as_str())),
        )
    }

    /// Joins a held upstream exchange into `outer` if one fits; true if it did.
    pub fn join_into(&mut self, outer: &mut Exchange) -> bool {
        if self.held == 0 {
            return false;
        }
        let Some(key) = self.key(outer) else {
            return false;
        };
        let Some(list) = self.waiting.get_mut(&key) else {
            return false;
        };
        let slack = self.config.slack_ns;
        let best = list
            .iter()
            .enumerate()
            .filter(|(_, held)| fits(&held.exchange, &held.clients, outer, slack))
            .max_by_key(|(_, held)| preference(&held.exchange, outer, &held.exchange))
            .map(|(i, _)| i);
        let Some(i) = best else {
            return false;
        };
        let inner = list.swap_remove(i);
        if list.is_empty() {
            self.waiting.remove(&key);
        }
        self.held -= 1;
        self.held_bytes -= inner.bytes;
        self.counters.waiting = self.held as u64;
        self.absorb(outer, &inner.exchange);
        true
    }

    /// `inner` is the hop `outer` made to its upstream: the outer one says so and keeps the
    /// upstream's time.
    fn absorb(&mut self, outer: &mut Exchange, inner: &Exchange) {
        self.counters.joined += 1;
        self.upstreams.put(inner.server, Pairing::default());
        outer.forwarding.joined = true;
        // Across a chain of proxies the innermost hop's time is kept: the application's.
        outer.forwarding.upstream_ns = inner.forwarding.upstream_ns.or_else(|| inner.duration_ns());
    }

    /// Holds `outer`, a client's exchange read from TLS that no held upstream exchange fits
    /// yet, for its upstream hop to come through the other ring.
    pub fn hold_tls(&mut self, outer: Exchange, out: &mut Vec<Exchange>) {
        let bytes = size_of(&outer);
        while self.tls_outers.len() >= self.config.max_held.max(1)
            || (!self.tls_outers.is_empty() && self.tls_bytes + bytes > self.config.max_held_bytes)
        {
            let Some(oldest) = self.pop_tls(0) else {
                break;
            };
            self.counters.unjoined_capacity += 1;
            out.push(oldest);
        }
        self.counters.tls_held += 1;
        self.tls_bytes += bytes;
        self.tls_outers.push_back(HeldTls {
            deadline: outer.end_ns().saturating_add(self.config.reorder_ns),
            exchange: outer,
            bytes,
        });
    }

    /// Takes the held TLS exchange at `i` out of the queue.
    fn pop_tls(&mut self, i: usize) -> Option<Exchange> {
        let held = self.tls_outers.remove(i)?;
        self.tls_bytes -= held.bytes;
        Some(held.exchange)
    }

    /// Joins `inner`, a trusted proxy's upstream exchange forwarded for `clients`, into a held
    /// client's exchange read from TLS that it fits, and passes that one on; false if none fits.
    pub fn join_late(
        &mut self,
        inner: &Exchange,
        clients: &[IpAddr],
        out: &mut Vec<Exchange>,
    ) -> bool {
        let slack = self.config.slack_ns;
        let best = self
            .tls_outers
            .iter()
            .enumerate()
            .filter(|(_, held)| fits(inner, clients, &held.exchange, slack))
            .max_by_key(|(_, held)| preference(inner, &held.exchange, &held.exchange))
            .map(|(i, _)| i);
        let Some(mut outer) = best.and_then(|i| self.pop_tls(i)) else {
            return false;
        };
        self.absorb(&mut outer, inner);
        self.counters.tls_joined_late += 1;
        out.push(outer);
        true
    }

    /// Holds `inner`, a trusted proxy's exchange forwarded for `clients` (the client its header
    /// names, and the hop the proxy itself appended to each forwarding header), until its outer
    /// exchange arrives or the window passes; hands it on at once if it is not to be held.
    pub fn hold(&mut self, inner: Exchange, clients: Vec<IpAddr>, out: &mut Vec<Exchange>) {
        let now = inner.end_ns();
        let Some(key) = self.key(&inner) else {
            out.push(inner);
            return;
        };
        if self
            .upstreams
            .get(&inner.server)
            .is_some_and(|p| p.skip_until_ns > now)
        {
            self.counters.passed_unpaired += 1;
            out.push(inner);
            return;
        }
        let bytes = size_of(&inner);
        while self.held > 0
            && (self.held >= self.config.max_held
                || self.held_bytes + bytes > self.config.max_held_bytes)
        {
            if !self.release_oldest(out) {
                break;
            }
            self.counters.unjoined_capacity += 1;
        }
        self.seq += 1;
        self.order
            .push_back((now.saturating_add(self.config.window_ns), self.seq, key));
        self.waiting.entry(key).or_default().push(Held {
            seq: self.seq,
            exchange: inner,
            clients,
            bytes,
        });
        self.held += 1;
        self.held_bytes += bytes;
        self.counters.held += 1;
        self.counters.waiting = self.held as u64;
        if self.order.len() > 2 * self.config.max_held.max(1) {
            self.compact_order();
        }
    }

    /// Passes on, unjoined, every held exchange whose window ended before `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        while self
            .tls_outers
            .front()
            .is_some_and(|held| held.deadline < now_ns)
        {
            if let Some(outer) = self.pop_tls(0) {
                out.push(outer);
            }
        }
        while let Some(&(deadline, _, _)) = self.order.front() {
            if deadline >= now_ns {
                break;
            }
            if let Some(server) = self.release_front(out) {
                self.counters.unjoined_timeout += 1;
                let config = &self.config;
                let pairing = self.upstreams.get_or_insert_mut(server, Pairing::default);
                pairing.timeouts_in_a_row += 1;
                if pairing.timeouts_in_a_row >= config.unpaired_after {
                    pairing.timeouts_in_a_row = 0;
                    pairing.skip_until_ns = now_ns.saturating_add(config.unpaired_for_ns);
                }
            }
        }
    }

    /// Passes on everything held (at the end of the input), counted as timed out.
    pub fn finish(&mut self, out: &mut Vec<Exchange>) {
        out.extend(self.tls_outers.drain(..).map(|held| held.exchange));
        self.tls_bytes = 0;
        while !self.order.is_empty() {
            if self.release_front(out).is_some() {
                self.counters.unjoined_timeout += 1;
            }
        }
    }

    /// Releases the oldest held exchange; false if none is held.
    fn release_oldest(&mut self, out: &mut Vec<Exchange>) -> bool {
        while !self.order.is_empty() {
            if self.release_front(out).is_some() {
                return true;
            }
        }
        false
    }

    /// Pops the front of `order` and passes its exchange on if it is still held; the
    /// exchange's upstream if it was.
    fn release_front(&mut self, out: &mut Vec<Exchange>) -> Option<SocketAddr> {
        let (_, seq, key) = self.order.pop_front()?;
        let list = self.waiting.get_mut(&key)?;
        let i = list.iter().position(|h| h.seq == seq)?;
        let held = list.swap_remove(i);
        if list.is_empty() {
            self.waiting.remove(&key);
        }
        self.held -= 1;
        self.held_bytes -= held.bytes;
        self.counters.waiting = self.held as u64;
        let server = held.exchange.server;
        out.push(held.exchange);
        Some(server)
    }

    /// Drops the `order` entries of exchanges that were joined.
    fn compact_order(&mut self) {
        let waiting = &self.waiting;
        self.order.retain(|(_, seq, key)| {
            waiting
                .get(key)
                .is_some_and(|list| list.iter().any(|h| h.seq == *seq))
        });
    }
}

/// Whether `inner`, forwarded for `clients`, can be the upstream exchange made for `outer`:
/// the outer's client is one of them, same method and target (the key), same request body
/// length, and its time inside the outer's.
fn fits(inner: &Exchange, clients: &[IpAddr], outer: &Exchange, slack: u64) -> bool {
    if !clients.contains(&outer.client_addr().ip()) {
        return false;
    }
    let (Some(inner_request), Some(outer_request)) = (&inner.request, &outer.request) else {
        return false;
    };
    if inner_request.method != outer_request.method
        || inner_request.uri != outer_request.uri
        || inner_request.meta.body_len != outer_request.meta.body_len
        || inner.client == outer.client
    {
        return false;
    }
    let starts_inside = outer_request.meta.start_ns <= inner_request.meta.start_ns + slack;
    let outer_end = outer.response.as_ref().map_or(0, |r| r.meta.end_ns);
    let inner_end = inner.response.as_ref().map_or(0, |r| r.meta.end_ns);
    // An outer response still open (cut by the end of capture) cannot say when it ended.
    let ends_inside = outer_end == 0 || inner_end <= outer_end + slack;
    starts_inside && ends_inside
}

/// How well a pair that fits matches, greatest best: the same status, then the same response
/// body length, then the latest start of `held` (the side that waited).
fn preference(inner: &Exchange, outer: &Exchange, held: &Exchange) -> (bool, bool, u64) {
    let status = |e: &Exchange| e.response.as_ref().map(|r| r.status);
    let length = |e: &Exchange| e.response.as_ref().map(|r| r.meta.body_len);
    (
        status(inner) == status(outer),
        length(inner) == length(outer),
        held.start_ns(),
    )
}

/// About what holding `exchange` costs in memory.
fn size_of(exchange: &Exchange) -> usize {
    let meta_bytes = |meta: &crate::exchange::MessageMeta| {
        meta.body.len()
            + meta
                .all_headers()
                .map(|(n, v)| n.len() + v.len() + 16)
                .sum::<usize>()
    };
    std::mem::size_of::<Exchange>()
        + exchange
            .request
            .as_ref()
            .map_or(0, |r| r.uri.len() + r.method.len() + meta_bytes(&r.meta))
        + exchange
            .response
            .as_ref()
            .map_or(0, |r| r.reason.len() + meta_bytes(&r.meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{MessageMeta, Request, Response};

    const MS: u64 = 1_000_000;

    /// `client -> server` GET `uri`, request at `start` ms, response ending at `end` ms.
    fn exchange(client: &str, server: &str, uri: &str, start: u64, end: u64) -> Exchange {
        Exchange {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            request: Some(Request {
                method: "GET".into(),
                uri: uri.into(),
                meta: MessageMeta {
                    start_ns: start * MS,
                    end_ns: start * MS,
                    ..MessageMeta::default()
                },
            }),
            response: Some(Response {
                status: Some(200),
                meta: MessageMeta {
                    start_ns: end * MS,
                    end_ns: end * MS,
                    body_len: 10,
                    ..MessageMeta::default()
                },
                ..Response::default()
            }),
            forwarding: Default::default(),
            tls: false,
            upstream: None,
            stream_id: None,
        }
    }

    const CLIENT: &str = "10.200.0.2";

    fn inner(uri: &str, start: u64, end: u64) -> Exchange {
        exchange("127.0.0.1:40000", "127.0.0.1:5000", uri, start, end)
    }

    fn outer(uri: &str, start: u64, end: u64) -> Exchange {
        exchange("10.200.0.2:50000", "10.200.0.1:80", uri, start, end)
    }

    fn joiner() -> Joiner {
        Joiner::new(JoinConfig::default())
    }

    #[test]
    fn an_outer_exchange_takes_in_its_inner_one() {
        let mut j = joiner();
        let mut out = Vec::new();
        j.hold(
            inner("/a", 1000, 1004),
            vec![CLIENT.parse().unwrap()],
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(j.counters.waiting, 1);
        let mut o = outer("/a", 999, 1005);
        assert!(j.join_into(&mut o));
        assert!(o.forwarding.joined);
        assert_eq!(o.forwarding.upstream_ns, Some(4 * MS));
        assert_eq!(o.client.to_string(), "10.200.0.2:50000");
        assert_eq!((j.counters.joined, j.counters.waiting), (1, 0));
        j.finish(&mut out);
        assert!(out.is_empty(), "the joined inner exchange is gone");
    }

    #[test]
    fn what_does_not_fit_is_not_joined() {
        let client: IpAddr = CLIENT.parse().unwrap();
        let mut j = joiner();
        let mut out = Vec::new();
        j.hold(inner("/a", 1000, 1004), vec![client], &mut out);
        let mut misses = vec![
            outer("/b", 999, 1005),                                     // another target
            outer("/a", 1002, 1005), // starts after (by more than the slack)
            outer("/a", 999, 1002),  // ends before
            exchange("10.200.0.3:1", "10.200.0.1:80", "/a", 999, 1005), // another client
            exchange("127.0.0.1:40000", "127.0.0.1:5000", "/a", 999, 1005), // the same peer
        ];
        let mut post = outer("/a", 999, 1005);
        if let Some(r) = post.request.as_mut() {
            r.method = "POST".into();
        }
        misses.push(post);
        let mut longer = outer("/a", 999, 1005);
        if let Some(r) = longer.request.as_mut() {
            r.meta.body_len = 5;
        }
        misses.push(longer);
        for mut miss in misses {
            assert!(!j.join_into(&mut miss), "{miss:?}");
            assert!(!miss.forwarding.joined);
        }
        assert_eq!(j.counters.joined, 0);
        // Of two that fit, the one with the same status.
        let mut failed = inner("/a", 1001, 1003);
        if let Some(r) = failed.response.as_mut() {
            r.status = Some(502);
        }
        j.hold(failed, vec![client], &mut out);
        let mut o = outer("/a", 999, 1005);
        assert!(j.join_into(&mut o));
        assert_eq!(o.forwarding.upstream_ns, Some(4 * MS));
    }

    #[test]
    fn an_inner_exchange_without_its_outer_goes_on_after_the_window() {
        let mut j = joiner();
        let mut out = Vec::new();
        j.hold(
            inner("/a", 1000, 1004),
            vec![CLIENT.parse().unwrap()],
            &mut out,
        );
        j.expire(1004 * MS + 3000 * MS, &mut out);
        assert!(out.is_empty(), "not before the window ends");
        j.expire(1004 * MS + 3000 * MS + 1, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].forwarding.joined);
        assert_eq!((j.counters.unjoined_timeout, j.counters.waiting), (1, 0));
        // Its outer one, late, passes as it is.
        let mut o = outer("/a", 999, 5000);
        assert!(!j.join_into(&mut o));
    }

    #[test]
    fn holding_is_bounded_in_count_and_bytes() {
        let config = JoinConfig {
            max_held: 3,
            max_held_bytes: 1 << 20,
            ..JoinConfig::default()
        };
        let mut j = Joiner::new(config.clone());
        let mut out = Vec::new();
        let client: IpAddr = CLIENT.parse().unwrap();
        for i in 0..10 {
            j.hold(
                inner(&format!("/{i}"), 1000 + i, 1004 + i),
                vec![client],
                &mut out,
            );
            assert!(j.counters.waiting <= 3);
        }
        assert_eq!(out.len(), 7);
        assert_eq!(j.counters.unjoined_capacity, 7);
        let uris: Vec<_> = out
            .iter()
            .map(|e| e.request.as_ref().unwrap().uri.clone())
            .collect();
        assert_eq!(
            uris,
            ["/0", "/1", "/2", "/3", "/4", "/5", "/6"],
            "oldest first"
        );
        // The newest are still joinable.
        let mut o = outer("/9", 1000, 1020);
        assert!(j.join_into(&mut o));
        // Bytes: a large exchange pushes the others out.
        let mut j = Joiner::new(config);
        let mut out = Vec::new();
        j.hold(inner("/small", 1000, 1004), vec![client], &mut out);
        let mut big = inner("/big", 1000, 1004);
        if let Some(r) = big.response.as_mut() {
            r.meta.body = vec![b'x'; 1 << 19];
        }
        j.hold(big.clone(), vec![client], &mut out);
        j.hold(big, vec![client], &mut out);
        assert_eq!(out.len(), 2, "the small one and the first big one");
        assert_eq!(j.counters.unjoined_capacity, 2);
        assert_eq!(j.counters.waiting, 1);
    }

    #[test]
    fn joined_entries_do_not_grow_the_expiry_queue_without_bound() {
        let mut j = Joiner::new(JoinConfig {
            max_held: 4,
            ..JoinConfig::default()
        });
        let mut out = Vec::new();
        for i in 0..1000 {
            j.hold(
                inner("/a", 1000 + i, 1004 + i),
                vec![CLIENT.parse().unwrap()],
                &mut out,
            );
            let mut o = outer("/a", 999 + i, 1005 + i);
            assert!(j.join_into(&mut o));
            assert!(j.order.len() <= 9);
        }
        assert!(out.is_empty());
    }

    #[test]
    fn an_upstream_whose_exchanges_never_pair_is_passed_over_for_a_while() {
        let config = JoinConfig::default();
        let mut j = Joiner::new(config.clone());
        let mut out = Vec::new();
        let client: IpAddr = CLIENT.parse().unwrap();
        let mut t = 1000;
        for _ in 0..config.unpaired_after {
            j.hold(inner("/a", t, t + 1), vec![client], &mut out);
            t += 4000;
            j.expire(t * MS, &mut out);
        }
        assert_eq!(
            j.counters.unjoined_timeout,
            u64::from(config.unpaired_after)
        );
        out.clear();
        j.hold(inner("/a", t, t + 1), vec![client], &mut out);
        assert_eq!(out.len(), 1, "passed on at once");
        assert_eq!(j.counters.passed_unpaired, 1);
        // After the pause it is tried again, and a join makes it normal again.
        t += config.unpaired_for_ns / MS + 1;
        out.clear();
        j.hold(inner("/a", t, t + 1), vec![client], &mut out);
        assert!(out.is_empty());
        let mut o = outer("/a", t - 1, t + 2);
        assert!(j.join_into(&mut o));
    }

    #[test]
    fn across_a_chain_the_innermost_time_is_kept() {
        let client: IpAddr = CLIENT.parse().unwrap();
        let mut j = joiner();
        let mut out = Vec::new();
        // app hop (2 ms) -> second proxy's hop (6 ms) -> client's (10 ms)
        j.hold(inner("/a", 1002, 1004), vec![client], &mut out);
        let mut middle = exchange("127.0.0.1:40001", "127.0.0.1:8080", "/a", 1001, 1007);
        // The proxy stage has named its client from the header.
        middle.forwarding.client = Some(SocketAddr::new(client, 0));
        assert!(j.join_into(&mut middle));
        j.hold(middle, vec![client], &mut out);
        let mut o = outer("/a", 1000, 1010);
        assert!(j.join_into(&mut o));
        assert_eq!(o.forwarding.upstream_ns, Some(2 * MS));
        assert_eq!(j.counters.joined, 2);
        j.finish(&mut out);
        assert!(out.is_empty());
    }
}

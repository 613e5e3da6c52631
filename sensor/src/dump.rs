//! One-line renderings for `apisessions run --dump`.

use std::fmt::Write as _;

use sensor_ebpf::Direction;

use crate::{
    capture::Segment,
    exchange::{Exchange, rfc3339_ns},
    stats::rfc3339,
};

/// Payload bytes shown per line.
pub const DUMP_PREVIEW: usize = 80;

/// `time iface-direction src > dst [flags] seq=… len=… "escaped payload…"`
pub fn segment_line(segment: &Segment, clock: &crate::capture::Clock) -> String {
    let direction = match segment.direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    let mut line = format!(
        "{} if{} {direction:<3} {} > {} [{}] seq={} ack={} len={}",
        rfc3339(clock.wall(segment.mono_ns)),
        segment.ifindex,
        segment.src,
        segment.dst,
        segment.flags_text(),
        segment.seq,
        segment.ack,
        segment.payload.len(),
    );
    if segment.chunk_offset > 0 || segment.more_chunks {
        let _ = write!(
            line,
            " chunk@{}/{}",
            segment.chunk_offset, segment.segment_len
        );
    }
    if segment.truncated {
        let _ = write!(line, " truncated({})", segment.segment_len);
    }
    if segment.skipped {
        let _ = write!(line, " skipped({})", segment.segment_len);
    }
    if !segment.payload.is_empty() {
        let shown = &segment.payload[..segment.payload.len().min(DUMP_PREVIEW)];
        let _ = write!(line, " \"{}\"", shown.escape_ascii());
        if shown.len() < segment.payload.len() {
            line.push('…');
        }
    }
    line
}

/// `time client [via peer] method uri -> status ttfb dur [upstream] req=… resp=… [flags]`
pub fn exchange_line(exchange: &Exchange) -> String {
    let request = exchange.request.as_ref();
    let response = exchange.response.as_ref();
    let mut line = format!(
        "{} {}",
        rfc3339_ns(exchange.start_ns()),
        exchange.client_addr()
    );
    if exchange.forwarding.client.is_some() {
        // Named by a proxy's forwarding header: say which connection brought it.
        let _ = write!(line, " via {}", exchange.client);
    }
    let _ = write!(
        line,
        " {} {}",
        request.map_or("-", |r| r.method.as_str()),
        request.map_or("-", |r| r.uri.as_str()).escape_debug(),
    );
    match response {
        Some(response) => {
            let status = response.status.map_or("raw".to_owned(), |s| s.to_string());
            let _ = write!(line, " -> {status}");
        }
        None => line.push_str(" -> (no response)"),
    }
    if let Some(ttfb) = exchange.ttfb_ms() {
        let _ = write!(line, " ttfb={ttfb:.3}ms");
    }
    if let Some(duration) = exchange.duration_ms() {
        let _ = write!(line, " dur={duration:.3}ms");
    }
    if let Some(upstream) = exchange.forwarding.upstream_ns {
        let _ = write!(line, " upstream={:.3}ms", upstream as f64 / 1e6);
    }
    let _ = write!(
        line,
        " req={} resp={}",
        request.map_or(0, |r| r.meta.body_len),
        response.map_or(0, |r| r.meta.body_len)
    );
    let flags: Vec<&str> = [
        (request.is_none(), "no-request"),
        (
            request.is_some_and(|r| r.meta.truncated),
            "request-truncated",
        ),
        (
            response.is_some_and(|r| r.meta.truncated),
            "response-truncated",
        ),
        (exchange.gap(), "gap"),
        (exchange.forwarding.joined, "joined"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if !flags.is_empty() {
        let _ = write!(line, " [{}]", flags.join(","));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_payload_and_marks_chunks() {
        let segment = Segment {
            mono_ns: 0,
            src: "127.0.0.1:5000".parse().unwrap(),
            dst: "127.0.0.1:8080".parse().unwrap(),
            direction: Direction::Ingress,
            ifindex: 1,
            seq: 1,
            ack: 2,
            tcp_flags: sensor_ebpf::tcp_flags::PSH | sensor_ebpf::tcp_flags::ACK,
            segment_len: 40000,
            chunk_offset: 16384,
            truncated: false,
            more_chunks: true,
            skipped: false,
            payload: b"GET / HTTP/1.1\r\n\x00".to_vec(),
        };
        let line = segment_line(&segment, &crate::capture::Clock::new());
        assert!(
            line.contains("127.0.0.1:5000 > 127.0.0.1:8080 [P.]"),
            "{line}"
        );
        assert!(line.contains(r#""GET / HTTP/1.1\r\n\x00""#), "{line}");
        assert!(line.contains("chunk@16384/40000"), "{line}");
    }
}

//! The flow table and stream reassembly on arbitrary segments: any sequence numbers, flags,
//! overlaps and orders must never panic, and the buffered-bytes bound must hold.
#![no_main]

use apisessions::{
    flow::{FlowConfig, FlowTable},
    reassembly::StreamLimits,
    segment::TcpSegment,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = FlowConfig {
        max_flows: 4,
        max_buffered_bytes: 4096,
        stream: StreamLimits { max_buffered_bytes: 2048, max_buffered_segments: 16, max_jump: 1 << 16 },
        ..FlowConfig::default()
    };
    let mut table = FlowTable::new(config);
    let mut out = Vec::new();
    // Segments of 12 header bytes (flow, direction, seq, flags, length, ack) and their payload.
    // Acknowledgements near the other direction's bytes are what declares capture loss.
    let mut rest = data;
    let mut ts = 0u64;
    while rest.len() >= 12 {
        let (header, tail) = rest.split_at(12);
        ts += u64::from(header[0] & 0x0f) * 1_000_000_000;
        let client_port = 40000 + u16::from(header[0] >> 6);
        let (client, server) = (format!("10.0.0.2:{client_port}"), "10.0.0.1:80".to_owned());
        let (src, dst) = if header[1] & 1 == 0 { (client, server) } else { (server, client) };
        let seq = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let len = usize::from(header[7]).min(tail.len());
        table.push(
            TcpSegment {
                ts_ns: ts,
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq,
                ack: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
                flags: header[6],
                payload: tail[..len].to_vec(),
                missing: u32::from(header[1] >> 4),
                skipped: header[1] & 4 != 0,
                upstream: None,
                tls: header[1] & 2 != 0,
            },
            &mut out,
        );
        assert!(table.active_flows() <= 4);
        rest = &tail[len..];
    }
    table.expire(ts + 1, &mut out);
    table.finish(&mut out);
    assert_eq!(table.active_flows(), 0);
});

//! How the decoder targets read their input as a conversation: records of a control byte (bit 0:
//! the side; bits 1-2: data, a gap or the end; bits 3-7: the length) followed by that many bytes.

use apisessions::{
    http::Side,
    reassembly::{EndReason, StreamEvent},
};

/// The events `data` holds, timed 1, 2, … in order.
pub fn events(data: &[u8]) -> Vec<(Side, StreamEvent)> {
    let mut events = Vec::new();
    let mut rest = data;
    let mut ts = 0;
    while let Some((&control, tail)) = rest.split_first() {
        ts += 1;
        let side = if control & 1 == 0 { Side::Client } else { Side::Server };
        let len = usize::from(control >> 3).min(tail.len());
        let event = match (control >> 1) & 3 {
            0 | 1 => StreamEvent::Data { ts_ns: ts, bytes: tail[..len].to_vec() },
            2 => StreamEvent::Gap { ts_ns: ts, len: (len > 0).then_some(len as u64) },
            _ => StreamEvent::End { ts_ns: ts, reason: EndReason::Fin },
        };
        events.push((side, event));
        rest = &tail[len..];
    }
    events
}

//! Stage 2, reassembly: one direction of a TCP connection put back in order.
//!
//! Segments arrive in capture order, which is not always sequence order: they can come reordered,
//! repeated, overlapping, or never (capture loss, a capture started mid-stream, snaplen cuts).
//! The stream delivers [`StreamEvent`]s in sequence order: data, explicit gaps for bytes that
//! were never seen, and the end. Positions are kept as 64-bit offsets from the stream's start,
//! so 32-bit sequence wrap-around is handled in one place (`Stream::offset_of`).
//!
//! Out-of-order data waits in a bounded buffer; when the bound is hit, the oldest hole is given up
//! as a gap so the stream keeps moving (smoltcp's assembler makes the same trade).

use std::collections::BTreeMap;

/// What a stream hands to the protocol decoder, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Data {
        ts_ns: u64,
        bytes: Vec<u8>,
    },
    /// Bytes that were never seen. `len: None` when the amount is unknown (the capture started
    /// in the middle of the stream): the decoder must resynchronise either way.
    Gap {
        ts_ns: u64,
        len: Option<u64>,
    },
    /// Bytes that were on the wire but not captured because the decoder asked the capture to
    /// leave them out (the rest of a long body it would only count): known, not lost.
    Skipped {
        ts_ns: u64,
        len: u64,
    },
    End {
        ts_ns: u64,
        reason: EndReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Fin,
    Reset,
    /// No segment for longer than the idle timeout.
    Idle,
    /// Closed to stay within the flow or memory bounds.
    Evicted,
    /// The capture (file) ended.
    CaptureEnd,
}

/// Per-stream bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Out-of-order bytes held per stream.
    pub max_buffered_bytes: usize,
    /// Out-of-order segments held per stream.
    pub max_buffered_segments: usize,
    /// A segment further ahead than this is not buffered: everything before it becomes a gap.
    pub max_jump: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 256 * 1024,
            max_buffered_segments: 256,
            max_jump: 8 << 20,
        }
    }
}

/// Counters of the reassembly stage (summed over all streams).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub segments: u64,
    pub bytes_delivered: u64,
    /// Segments whose bytes had all been delivered already (retransmissions).
    pub duplicate_segments: u64,
    /// Bytes cut from the front of segments that overlapped delivered data.
    pub overlap_bytes: u64,
    /// Overlapping copies that disagreed; the first one seen was kept.
    pub conflicting_overlaps: u64,
    /// Segments that arrived ahead of a hole and waited.
    pub out_of_order_segments: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Bytes delivered as [`StreamEvent::Skipped`].
    pub skipped_bytes: u64,
    /// Holes given up because the out-of-order buffer was full.
    pub buffer_overflows: u64,
    /// Holes given up because the receiver acknowledged bytes past them: it had them, so they
    /// were lost on the capture path (a full ring buffer, a dropping tap) and never come again.
    pub holes_acknowledged: u64,
    /// Streams first seen without their SYN.
    pub started_mid_stream: u64,
    /// Segments after the stream ended.
    pub late_segments: u64,
}

impl StreamCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("segments", self.segments),
            ("bytes_delivered", self.bytes_delivered),
            ("duplicate_segments", self.duplicate_segments),
            ("overlap_bytes", self.overlap_bytes),
            ("conflicting_overlaps", self.conflicting_overlaps),
            ("out_of_order_segments", self.out_of_order_segments),
            ("gaps", self.gaps),
            ("gap_bytes", self.gap_bytes),
            ("skipped_bytes", self.skipped_bytes),
            ("buffer_overflows", self.buffer_overflows),
            ("holes_acknowledged", self.holes_acknowledged),
            ("started_mid_stream", self.started_mid_stream),
            ("late_segments", self.late_segments),
        ]
    }
}

/// A segment's contribution to one direction, as the flow table hands it over.
#[derive(Debug)]
pub struct Piece {
    pub ts_ns: u64,
    /// Sequence number of the segment (of the SYN itself when `syn`).
    pub seq: u32,
    pub payload: Vec<u8>,
    /// Uncaptured payload bytes after `payload`.
    pub missing: u32,
    /// The `missing` bytes were left out on the decoder's request, not lost.
    pub skipped: bool,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

#[derive(Debug)]
struct Pending {
    ts_ns: u64,
    payload: Vec<u8>,
    missing: u64,
    /// `missing` was skipped on request (see [`Piece::skipped`]).
    skipped: bool,
}

impl Pending {
    fn len(&self) -> u64 {
        self.payload.len() as u64 + self.missing
    }
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the next byte to deliver, once known.
    next_seq: Option<u32>,
    /// Offset of the next byte to deliver, counted from the first byte.
    next_offset: u64,
    fin_offset: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    buffered: usize,
    ended: bool,
}

impl Stream {
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Sequence number of the next byte to deliver, once known.
    pub fn next_seq(&self) -> Option<u32> {
        self.next_seq
    }

    /// Out-of-order bytes held now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Offset of the byte with sequence number `seq` in this stream (an acknowledgement's
    /// byte, say), once the stream's start is known and if `seq` is not before it.
    pub fn offset_of_seq(&self, seq: u32) -> Option<u64> {
        let next_seq = self.next_seq?;
        u64::try_from(self.offset_of(next_seq, seq)).ok()
    }

    /// Offset of `seq` relative to the next byte to deliver, allowing for wrap-around: TCP
    /// windows are far below 2^31, so the signed difference is the right one.
    fn offset_of(&self, next_seq: u32, seq: u32) -> i64 {
        self.next_offset as i64 + i64::from(seq.wrapping_sub(next_seq) as i32)
    }

    pub fn push(
        &mut self,
        piece: Piece,
        limits: &StreamLimits,
        counters: &mut StreamCounters,
        out: &mut Vec<StreamEvent>,
    ) {
        counters.segments += 1;
        if self.ended {
            counters.late_segments += 1;
            return;
        }
        let data_seq = if piece.syn {
            piece.seq.wrapping_add(1)
        } else {
            piece.seq
        };
        let next_seq = match self.next_seq {
            Some(seq) => seq,
            None if !piece.syn && piece.payload.is_empty() && piece.missing == 0 => {
                // A direction that only ever says RST or FIN (a refused connection, the tail of
                // one seen late) carries no data: nothing was missed, so no gap.
                if piece.rst || piece.fin {
                    self.ended = true;
                    let reason = if piece.rst {
                        EndReason::Reset
                    } else {
                        EndReason::Fin
                    };
                    out.push(StreamEvent::End {
                        ts_ns: piece.ts_ns,
                        reason,
                    });
                }
                return;
            }
            None => {
                if !piece.syn {
                    counters.started_mid_stream += 1;
                    counters.gaps += 1;
                    out.push(StreamEvent::Gap {
                        ts_ns: piece.ts_ns,
                        len: None,
                    });
                }
                self.next_seq = Some(data_seq);
                data_seq
            }
        };
        let mut start = self.offset_of(next_seq, data_seq);
        let mut payload = piece.payload;
        let mut missing = u64::from(piece.missing);
        let len = payload.len() as u64 + missing;
        if piece.fin {
            self.fin_offset
                .get_or_insert((start.max(0) as u64).saturating_add(len));
        }
        let next = self.next_offset as i64;
        if start + len as i64 <= next {
            if len > 0 {
                counters.duplicate_segments += 1;
            }
        } else {
            if start < next {
                // Retransmitted bytes already delivered: first data wins.
                let cut = (next - start) as u64;
                counters.overlap_bytes += cut;
                let from_payload = cut.min(payload.len() as u64) as usize;
                payload.drain(..from_payload);
                missing -= cut - from_payload as u64;
                start = next;
            }
            let start = start as u64;
            let pending = Pending {
                ts_ns: piece.ts_ns,
                payload,
                missing,
                skipped: piece.skipped,
            };
            if pending.len() == 0 {
                // Flags only (FIN, RST): nothing to place in the stream.
            } else if start == self.next_offset {
                self.deliver(pending, counters, out);
            } else if start - self.next_offset > limits.max_jump {
                // Too far ahead to wait for: treat everything before it as lost.
                self.give_up_until(start, piece.ts_ns, counters, out);
                self.deliver(pending, counters, out);
            } else {
                counters.out_of_order_segments += 1;
                self.hold(start, pending, counters);
                while self.buffered > limits.max_buffered_bytes
                    || self.pending.len() > limits.max_buffered_segments
                {
                    counters.buffer_overflows += 1;
                    let Some(&first) = self.pending.keys().next() else {
                        break;
                    };
                    self.give_up_until(first, piece.ts_ns, counters, out);
                }
            }
            self.drain(counters, out);
        }
        if piece.rst {
            self.finish(piece.ts_ns, EndReason::Reset, counters, out);
        } else {
            self.end_after_fin(piece.ts_ns, out);
        }
    }

    /// The receiver acknowledged every byte before sequence number `ack` (a segment of the other
    /// direction said so). TCP acknowledges cumulatively, so a hole below `ack` was delivered to
    /// the receiver: it was lost on the capture path (a full ring buffer, a dropping tap) and no
    /// retransmission will fill it. It becomes a gap now, instead of holding the stream until a
    /// buffer bound or the connection's end; bytes not seen at all before `ack` (a lost tail)
    /// too. Without loss an acknowledgement never passes the next byte to deliver, because the
    /// capture sees data before the receiver can acknowledge it.
    pub fn acknowledged(
        &mut self,
        ack: u32,
        ts_ns: u64,
        limits: &StreamLimits,
        counters: &mut StreamCounters,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(next_seq) = self.next_seq else {
            return;
        };
        if self.ended {
            return;
        }
        let mut acked = self.offset_of(next_seq, ack);
        // The FIN takes a sequence number of its own, and no byte follows it.
        if let Some(fin) = self.fin_offset {
            acked = acked.min(fin as i64);
        }
        let ahead = acked - self.next_offset as i64;
        // Any segment can carry a forged acknowledgement: one further ahead than a stream may
        // jump is not believed.
        if ahead <= 0 || ahead as u64 > limits.max_jump {
            return;
        }
        counters.holes_acknowledged += 1;
        self.give_up_until(acked as u64, ts_ns, counters, out);
        self.end_after_fin(ts_ns, out);
    }

    /// Ends the stream once every byte before its FIN was delivered.
    fn end_after_fin(&mut self, ts_ns: u64, out: &mut Vec<StreamEvent>) {
        if !self.ended && self.fin_offset.is_some_and(|fin| fin <= self.next_offset) {
            self.ended = true;
            out.push(StreamEvent::End {
                ts_ns,
                reason: EndReason::Fin,
            });
        }
    }

    /// Keeps an out-of-order piece; where it overlaps one already held, the first copy wins.
    fn hold(&mut self, start: u64, pending: Pending, counters: &mut StreamCounters) {
        if let Some(existing) = self.pending.get(&start) {
            let shared = existing.payload.len().min(pending.payload.len());
            if existing.payload[..shared] != pending.payload[..shared] {
                counters.conflicting_overlaps += 1;
            }
            if existing.len() >= pending.len() {
                counters.duplicate_segments += 1;
                return;
            }
        }
        self.buffered += pending.payload.len();
        if let Some(old) = self.pending.insert(start, pending) {
            self.buffered -= old.payload.len();
        }
    }

    /// Delivers held pieces that have become contiguous.
    fn drain(&mut self, counters: &mut StreamCounters, out: &mut Vec<StreamEvent>) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.next_offset {
                break;
            }
            let mut pending = entry.remove();
            self.buffered -= pending.payload.len();
            let end = start + pending.len();
            if end <= self.next_offset {
                counters.duplicate_segments += 1;
                continue;
            }
            let cut = self.next_offset - start;
            if cut > 0 {
                counters.overlap_bytes += cut;
                let from_payload = cut.min(pending.payload.len() as u64) as usize;
                pending.payload.drain(..from_payload);
                pending.missing -= cut - from_payload as u64;
            }
            self.deliver(pending, counters, out);
        }
    }

    fn deliver(
        &mut self,
        pending: Pending,
        counters: &mut StreamCounters,
        out: &mut Vec<StreamEvent>,
    ) {
        let len = pending.len();
        if !pending.payload.is_empty() {
            counters.bytes_delivered += pending.payload.len() as u64;
            out.push(StreamEvent::Data {
                ts_ns: pending.ts_ns,
                bytes: pending.payload,
            });
        }
        if pending.missing > 0 && pending.skipped {
            counters.skipped_bytes += pending.missing;
            out.push(StreamEvent::Skipped {
                ts_ns: pending.ts_ns,
                len: pending.missing,
            });
        } else if pending.missing > 0 {
            counters.gaps += 1;
            counters.gap_bytes += pending.missing;
            out.push(StreamEvent::Gap {
                ts_ns: pending.ts_ns,
                len: Some(pending.missing),
            });
        }
        self.next_offset += len;
        if let Some(seq) = self.next_seq.as_mut() {
            *seq = seq.wrapping_add(len as u32);
        }
    }

    /// Moves the stream to `offset`: held pieces before it are delivered, and every hole up to
    /// it is declared lost.
    fn give_up_until(
        &mut self,
        offset: u64,
        ts_ns: u64,
        counters: &mut StreamCounters,
        out: &mut Vec<StreamEvent>,
    ) {
        loop {
            let hole_end = match self.pending.keys().next() {
                Some(&first) if first < offset => first,
                _ => offset,
            };
            if hole_end > self.next_offset {
                let len = hole_end - self.next_offset;
                counters.gaps += 1;
                counters.gap_bytes += len;
                out.push(StreamEvent::Gap {
                    ts_ns,
                    len: Some(len),
                });
                self.next_offset = hole_end;
                if let Some(seq) = self.next_seq.as_mut() {
                    *seq = seq.wrapping_add(len as u32);
                }
            }
            self.drain(counters, out);
            if self.next_offset >= offset || hole_end == offset {
                return;
            }
        }
    }

    /// Ends the stream now: whatever is held is delivered with gaps in between.
    pub fn finish(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        counters: &mut StreamCounters,
        out: &mut Vec<StreamEvent>,
    ) {
        if self.ended {
            return;
        }
        // Up to the last byte held, or to the FIN if one was seen past it: the bytes before a
        // FIN were sent, so the ones never seen are a gap too.
        let last = self
            .pending
            .last_key_value()
            .map(|(start, p)| start + p.len())
            .max(self.fin_offset);
        if let Some(last) = last {
            self.give_up_until(last, ts_ns, counters, out);
        }
        self.ended = true;
        out.push(StreamEvent::End { ts_ns, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(seq: u32, payload: &[u8]) -> Piece {
        Piece {
            ts_ns: 1,
            seq,
            payload: payload.to_vec(),
            missing: 0,
            skipped: false,
            syn: false,
            fin: false,
            rst: false,
        }
    }

    fn syn(seq: u32) -> Piece {
        Piece {
            syn: true,
            ..piece(seq, b"")
        }
    }

    /// Renders events as text: data as is, gaps as `<n>`, the end as `|reason`.
    fn render(events: &[StreamEvent]) -> String {
        events
            .iter()
            .map(|event| match event {
                StreamEvent::Data { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
                StreamEvent::Gap { len: Some(len), .. } => format!("<{len}>"),
                StreamEvent::Gap { len: None, .. } => "<?>".into(),
                StreamEvent::Skipped { len, .. } => format!("[{len}]"),
                StreamEvent::End { reason, .. } => format!("|{reason:?}"),
            })
            .collect()
    }

    fn run(pieces: Vec<Piece>) -> (String, StreamCounters) {
        let mut stream = Stream::default();
        let mut counters = StreamCounters::default();
        let mut out = Vec::new();
        for p in pieces {
            stream.push(p, &StreamLimits::default(), &mut counters, &mut out);
        }
        stream.finish(9, EndReason::CaptureEnd, &mut counters, &mut out);
        (render(&out), counters)
    }

    #[test]
    fn in_order_reordered_and_duplicated_give_the_same_stream() {
        let isn = 100;
        let orders: [&[usize]; 4] = [&[0, 1, 2], &[2, 1, 0], &[1, 0, 0, 2, 1], &[2, 0, 2, 1]];
        let parts = [(101, "hello "), (107, "big "), (111, "world")];
        for order in orders {
            let mut pieces = vec![syn(isn)];
            pieces.extend(
                order
                    .iter()
                    .map(|&i| piece(parts[i].0, parts[i].1.as_bytes())),
            );
            let (text, _) = run(pieces);
            assert_eq!(text, "hello big world|CaptureEnd", "order {order:?}");
        }
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let isn = u32::MAX - 3;
        let (text, _) = run(vec![
            syn(isn),
            piece(isn.wrapping_add(5), b"DEF"),
            piece(isn.wrapping_add(1), b"ABCD"),
        ]);
        assert_eq!(text, "ABCDDEF|CaptureEnd");
    }

    #[test]
    fn overlaps_keep_the_first_copy_and_conflicts_are_counted() {
        let (text, counters) = run(vec![
            syn(0),
            piece(1, b"abcdef"),
            piece(4, b"XYZghi"),
            piece(20, b"late"),
            piece(20, b"LATE"),
        ]);
        assert_eq!(text, "abcdefghi<10>late|CaptureEnd");
        assert_eq!(counters.overlap_bytes, 3);
        assert_eq!(counters.conflicting_overlaps, 1);
    }

    #[test]
    fn missing_bytes_and_mid_stream_starts_are_gaps() {
        let mut truncated = piece(1, b"head");
        truncated.missing = 6;
        let (text, counters) = run(vec![syn(0), truncated, piece(11, b"tail")]);
        assert_eq!(text, "head<6>tail|CaptureEnd");
        assert_eq!(counters.gap_bytes, 6);
        let (text, counters) = run(vec![piece(5000, b"middle"), piece(5006, b" on")]);
        assert_eq!(text, "<?>middle on|CaptureEnd");
        assert_eq!(counters.started_mid_stream, 1);
    }

    fn skipped(seq: u32, len: u32) -> Piece {
        Piece {
            missing: len,
            skipped: true,
            ..piece(seq, b"")
        }
    }

    #[test]
    fn skipped_bytes_are_known_in_order_or_not_and_first_copy_wins() {
        let (text, counters) = run(vec![
            syn(0),
            piece(1, b"head"),
            skipped(5, 100),
            piece(105, b"next"),
        ]);
        assert_eq!(text, "head[100]next|CaptureEnd");
        assert_eq!(
            (counters.skipped_bytes, counters.gaps, counters.gap_bytes),
            (100, 0, 0)
        );
        // Reordered: the marker waits for the hole before it like data does.
        let (text, _) = run(vec![
            syn(0),
            skipped(5, 100),
            piece(105, b"next"),
            piece(1, b"head"),
        ]);
        assert_eq!(text, "head[100]next|CaptureEnd");
        // The same bytes captured whole (another interface's copy) after the marker: duplicates.
        let (text, counters) = run(vec![
            syn(0),
            piece(1, b"head"),
            skipped(5, 4),
            piece(5, b"body"),
            piece(9, b"!"),
        ]);
        assert_eq!(text, "head[4]!|CaptureEnd");
        assert_eq!(counters.duplicate_segments, 1);
        // A marker overlapping delivered data keeps only its new part.
        let (text, _) = run(vec![syn(0), piece(1, b"head"), skipped(3, 10)]);
        assert_eq!(text, "head[8]|CaptureEnd");
    }

    #[test]
    fn an_acknowledged_hole_is_a_gap_at_once() {
        let limits = StreamLimits::default();
        let mut stream = Stream::default();
        let mut counters = StreamCounters::default();
        let mut out = Vec::new();
        // Bytes 6..10 never reach the capture; the ones after them wait for them.
        for p in [syn(0), piece(1, b"hello"), piece(11, b"world")] {
            stream.push(p, &limits, &mut counters, &mut out);
        }
        assert_eq!(render(&out), "hello");
        // The receiver acknowledges only what it has: up to the hole, nothing changes.
        stream.acknowledged(6, 2, &limits, &mut counters, &mut out);
        assert_eq!(
            (render(&out).as_str(), counters.holes_acknowledged),
            ("hello", 0)
        );
        // Past the hole: the receiver had those bytes, so the capture lost them.
        stream.acknowledged(16, 2, &limits, &mut counters, &mut out);
        assert_eq!(render(&out), "hello<5>world");
        assert_eq!((counters.holes_acknowledged, counters.gap_bytes), (1, 5));
        // A lost tail: bytes acknowledged that the capture never saw at all.
        stream.acknowledged(20, 3, &limits, &mut counters, &mut out);
        assert_eq!(render(&out), "hello<5>world<4>");
        // Old and forged acknowledgements change nothing.
        for ack in [3, 20, 20 + (8 << 20) + 1, 0x8000_0000] {
            stream.acknowledged(ack, 4, &limits, &mut counters, &mut out);
        }
        assert_eq!(render(&out), "hello<5>world<4>");
        assert_eq!(counters.holes_acknowledged, 2);
    }

    #[test]
    fn bytes_missing_before_a_fin_are_a_gap_at_the_end() {
        let mut fin = piece(9, b"");
        fin.fin = true;
        let (text, counters) = run(vec![syn(0), piece(1, b"abc"), fin]);
        assert_eq!(text, "abc<5>|CaptureEnd");
        assert_eq!(counters.gap_bytes, 5);
    }

    #[test]
    fn an_acknowledged_fin_ends_a_stream_with_a_hole() {
        let limits = StreamLimits::default();
        let mut stream = Stream::default();
        let mut counters = StreamCounters::default();
        let mut out = Vec::new();
        let mut fin = piece(8, b"end");
        fin.fin = true;
        for p in [syn(0), piece(1, b"abc"), fin] {
            stream.push(p, &limits, &mut counters, &mut out);
        }
        // The acknowledgement of the FIN counts one past the last byte.
        stream.acknowledged(12, 5, &limits, &mut counters, &mut out);
        assert_eq!(render(&out), "abc<4>end|Fin");
        assert!(stream.ended());
    }

    #[test]
    fn fin_ends_once_all_bytes_before_it_arrived() {
        let mut fin = piece(6, b"!");
        fin.fin = true;
        let mut stream = Stream::default();
        let mut counters = StreamCounters::default();
        let mut out = Vec::new();
        for p in [syn(0), fin, piece(1, b"hello")] {
            stream.push(p, &StreamLimits::default(), &mut counters, &mut out);
        }
        assert_eq!(render(&out), "hello!|Fin");
        assert!(stream.ended());
        stream.push(
            piece(7, b"x"),
            &StreamLimits::default(),
            &mut counters,
            &mut out,
        );
        assert_eq!(counters.late_segments, 1);
    }

    #[test]
    fn a_refused_connection_is_no_gap() {
        let mut rst = piece(0, b"");
        rst.rst = true;
        let (text, counters) = run(vec![rst]);
        assert_eq!(text, "|Reset");
        assert_eq!((counters.gaps, counters.started_mid_stream), (0, 0));
    }

    #[test]
    fn rst_ends_the_stream_with_held_data_and_gaps() {
        let mut rst = piece(20, b"");
        rst.rst = true;
        let (text, _) = run(vec![syn(0), piece(1, b"ab"), piece(10, b"cd"), rst]);
        assert_eq!(text, "ab<7>cd|Reset");
    }

    #[test]
    fn a_full_buffer_gives_up_the_oldest_hole() {
        let limits = StreamLimits {
            max_buffered_bytes: 8,
            max_buffered_segments: 100,
            max_jump: 1000,
        };
        let mut stream = Stream::default();
        let mut counters = StreamCounters::default();
        let mut out = Vec::new();
        for p in [
            syn(0),
            piece(3, b"cdef"),
            piece(9, b"ijkl"),
            piece(15, b"op"),
        ] {
            stream.push(p, &limits, &mut counters, &mut out);
        }
        assert_eq!(render(&out), "<2>cdef");
        assert_eq!(counters.buffer_overflows, 1);
        assert!(stream.buffered() <= 8);
        // A jump past max_jump is not buffered: what is held is delivered, the rest is a gap.
        stream.push(piece(5000, b"far"), &limits, &mut counters, &mut out);
        assert_eq!(render(&out), "<2>cdef<2>ijkl<2>op<4983>far");
        assert_eq!(stream.buffered(), 0);
    }

    /// A tiny deterministic PRNG (xorshift) so the randomised test needs no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Against an obviously correct model: a byte map of which offsets were covered. With
    /// buffers large enough never to overflow, the stream must deliver exactly the covered bytes
    /// and report every uncovered run as a gap of the right length.
    #[test]
    fn randomised_against_a_byte_map_model() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        for round in 0..500 {
            let total = 1 + rng.below(3000) as usize;
            let data: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
            let isn = rng.next() as u32; // often near a wrap
            let mut covered = vec![false; total];
            let mut pieces = vec![syn(isn)];
            for _ in 0..rng.below(40) + 1 {
                let start = rng.below(total as u64) as usize;
                let len = 1 + rng.below(200) as usize;
                let end = (start + len).min(total);
                if rng.below(10) == 0 {
                    continue; // this one is "lost"
                }
                covered[start..end].iter_mut().for_each(|c| *c = true);
                pieces.push(piece(
                    isn.wrapping_add(1).wrapping_add(start as u32),
                    &data[start..end],
                ));
            }
            // Shuffle all but the SYN, then repeat a few.
            for i in (2..pieces.len()).rev() {
                let j = 1 + rng.below(i as u64) as usize;
                pieces.swap(i, j);
            }
            let covered_end = covered.iter().rposition(|c| *c).map_or(0, |i| i + 1);
            let mut expected = String::new();
            let mut i = 0;
            while i < covered_end {
                if covered[i] {
                    expected.push(data[i] as char);
                    i += 1;
                } else {
                    let run = covered[i..].iter().take_while(|c| !**c).count();
                    expected.push_str(&format!("<{run}>"));
                    i += run;
                }
            }
            let (text, counters) = run(pieces);
            // Adjacent data events concatenate; the model has no event boundaries.
            assert_eq!(text, format!("{expected}|CaptureEnd"), "round {round}");
            assert_eq!(counters.buffer_overflows, 0);
        }
    }
}

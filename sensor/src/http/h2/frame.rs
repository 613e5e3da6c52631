//! The HTTP/2 frame layer (RFC 9113 4.1) of one direction: splits the byte stream into frames
//! however reads and writes cut it.
//!
//! Frames other than DATA are buffered whole up to a bound and handed over at once; longer ones
//! are skipped by their length (the stream stays in step). DATA is passed on as it comes,
//! without its padding, so a large body never sits in memory here.

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;

/// Frame types (RFC 9113 6).
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Without the reserved bit.
    pub stream_id: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole frame other than DATA, its payload as sent (padding included).
    Frame(FrameHeader, &'a [u8]),
    /// A frame other than DATA longer than the bound: skipped by its length.
    TooLarge(FrameHeader),
    /// Bytes of a DATA frame's data, padding left out; a frame's data may come in pieces.
    Data(FrameHeader, &'a [u8]),
    /// The end of a DATA frame.
    DataEnd(FrameHeader),
    /// A DATA frame whose padding is longer than the frame (a protocol error); skipped.
    BadPadding(FrameHeader),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    /// Buffering a frame's payload; bytes still to come.
    Payload(u32),
    /// Skipping bytes of a frame.
    Skip(u32),
    /// A padded DATA frame's first byte (its padding length).
    PadLength,
    /// DATA: data bytes, then padding bytes still to come.
    Data {
        data: u32,
        padding: u32,
    },
}

/// What a gap took from inside a frame (see [`FrameReader::gap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost {
    pub frame: FrameHeader,
    /// DATA bytes lost (padding not counted).
    pub data: u64,
    /// The gap took the rest of a DATA frame: its end is now.
    pub frame_ended: bool,
}

/// The frame reader of one direction.
#[derive(Debug)]
pub struct FrameReader {
    head: [u8; HEADER_LEN],
    head_len: usize,
    frame: FrameHeader,
    state: State,
    payload: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            head: [0; HEADER_LEN],
            head_len: 0,
            frame: FrameHeader::default(),
            state: State::Header,
            payload: Vec::new(),
        }
    }
}

impl FrameReader {
    /// Reads `input`, handing each event to `on`. Frames other than DATA longer than
    /// `max_frame_bytes` are skipped.
    pub fn feed(&mut self, mut input: &[u8], max_frame_bytes: usize, mut on: impl FnMut(Event)) {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let take = (HEADER_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
                    self.head_len += take;
                    input = &input[take..];
                    if self.head_len == HEADER_LEN {
                        self.head_len = 0;
                        self.begin(max_frame_bytes, &mut on);
                    }
                }
                State::Payload(left) => {
                    let take = (left as usize).min(input.len());
                    self.payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = State::Payload(left - take as u32);
                    if take as u32 == left {
                        self.state = State::Header;
                        on(Event::Frame(self.frame, &self.payload));
                    }
                }
                State::Skip(left) => {
                    let take = (left as usize).min(input.len());
                    input = &input[take..];
                    self.state = if take as u32 == left {
                        State::Header
                    } else {
                        State::Skip(left - take as u32)
                    };
                }
                State::PadLength => {
                    let padding = u32::from(input[0]);
                    input = &input[1..];
                    let rest = self.frame.len - 1;
                    if padding > rest {
                        on(Event::BadPadding(self.frame));
                        self.state = State::Skip(rest);
                        if rest == 0 {
                            self.state = State::Header;
                        }
                    } else {
                        self.data_state(rest - padding, padding, &mut on);
                    }
                }
                State::Data { data, padding } => {
                    let take = (data as usize).min(input.len());
                    if take > 0 {
                        on(Event::Data(self.frame, &input[..take]));
                        input = &input[take..];
                    }
                    let skip = (padding as usize).min(input.len());
                    input = &input[skip..];
                    self.data_state(data - take as u32, padding - skip as u32, &mut on);
                }
            }
        }
    }

    /// Bytes of the stream were lost (`None`: an unknown amount). Within a DATA frame (or a
    /// frame being skipped) the frame layer stays in step and says what was lost; anywhere else
    /// the framing is lost: `None`.
    pub fn gap(&mut self, len: Option<u64>) -> Option<Lost> {
        let len = len?;
        match self.state {
            State::Data { data, padding } if len <= u64::from(data) + u64::from(padding) => {
                let lost_data = len.min(u64::from(data));
                let lost_padding = (len - lost_data) as u32;
                let data = data - lost_data as u32;
                let padding = padding - lost_padding;
                let frame_ended = data == 0 && padding == 0;
                self.state = if frame_ended {
                    State::Header
                } else {
                    State::Data { data, padding }
                };
                Some(Lost {
                    frame: self.frame,
                    data: lost_data,
                    frame_ended,
                })
            }
            State::Skip(left) if len <= u64::from(left) => {
                let left = left - len as u32;
                self.state = if left == 0 {
                    State::Header
                } else {
                    State::Skip(left)
                };
                Some(Lost {
                    frame: self.frame,
                    data: 0,
                    frame_ended: false,
                })
            }
            _ => None,
        }
    }

    fn begin(&mut self, max_frame_bytes: usize, on: &mut impl FnMut(Event)) {
        self.frame = FrameHeader::parse(&self.head);
        let len = self.frame.len;
        if self.frame.kind == kind::DATA {
            if self.frame.has(flag::PADDED) {
                if len == 0 {
                    on(Event::BadPadding(self.frame));
                    self.state = State::Header;
                } else {
                    self.state = State::PadLength;
                }
            } else {
                self.data_state(len, 0, on);
            }
        } else if len as usize > max_frame_bytes {
            on(Event::TooLarge(self.frame));
            self.state = if len == 0 {
                State::Header
            } else {
                State::Skip(len)
            };
        } else {
            self.payload.clear();
            self.state = State::Payload(len);
            if len == 0 {
                self.state = State::Header;
                on(Event::Frame(self.frame, &[]));
            }
        }
    }

    fn data_state(&mut self, data: u32, padding: u32, on: &mut impl FnMut(Event)) {
        if data == 0 && padding == 0 {
            self.state = State::Header;
            on(Event::DataEnd(self.frame));
        } else {
            self.state = State::Data { data, padding };
        }
    }
}

/// Whether `bytes` read as a run of frame headers that chain by their lengths: how a
/// connection joined mid-way is recognised as HTTP/2 (its HPACK state unknown, it is skipped
/// rather than misread as HTTP/1). Needs two whole frame headers, or one frame ending exactly
/// at the end of `bytes`.
pub fn looks_like_frames(bytes: &[u8]) -> bool {
    let mut at = 0;
    let mut frames = 0;
    while let Some(head) = bytes.get(at..at + HEADER_LEN) {
        let Ok(head) = <&[u8; HEADER_LEN]>::try_from(head) else {
            return false;
        };
        let frame = FrameHeader::parse(head);
        if frame.kind > kind::CONTINUATION || head[5] & 0x80 != 0 || frame.len > 1 << 14 {
            return false;
        }
        // Frames that belong to the connection have stream 0, and only those.
        let connection_frame = matches!(frame.kind, kind::SETTINGS | kind::PING | kind::GOAWAY);
        if connection_frame != (frame.stream_id == 0) && frame.kind != kind::WINDOW_UPDATE {
            return false;
        }
        frames += 1;
        at += HEADER_LEN + frame.len as usize;
        if at == bytes.len() {
            return true;
        }
    }
    frames >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream_id.to_be_bytes());
        out.extend(payload);
        out
    }

    /// Events as owned values, for comparing.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Frame(u8, u32, Vec<u8>),
        TooLarge(u8),
        Data(u32, Vec<u8>),
        DataEnd(u32, bool),
        BadPadding,
    }

    fn read(bytes: &[u8], piece: usize, max: usize) -> Vec<Seen> {
        let mut reader = FrameReader::default();
        let mut seen: Vec<Seen> = Vec::new();
        for chunk in bytes.chunks(piece) {
            reader.feed(chunk, max, |event| {
                let owned = match event {
                    Event::Frame(h, p) => Seen::Frame(h.kind, h.stream_id, p.to_vec()),
                    Event::TooLarge(h) => Seen::TooLarge(h.kind),
                    Event::Data(h, d) => Seen::Data(h.stream_id, d.to_vec()),
                    Event::DataEnd(h) => Seen::DataEnd(h.stream_id, h.has(flag::END_STREAM)),
                    Event::BadPadding(_) => Seen::BadPadding,
                };
                // Join data pieces so that every cut compares equal.
                if let (Some(Seen::Data(s, d)), Seen::Data(s2, d2)) = (seen.last_mut(), &owned)
                    && s == s2
                {
                    d.extend(d2);
                    return;
                }
                seen.push(owned);
            });
        }
        seen
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let mut stream = frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        stream.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, b"\x82\x84"));
        // Padded DATA: pad length 3, data "hello", three bytes of padding.
        stream.extend(frame(
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            1,
            b"\x03hello\0\0\0",
        ));
        stream.extend(frame(kind::DATA, flag::END_STREAM, 3, b""));
        stream.extend(frame(kind::PING, 0, 0, &[7; 8]));
        stream.extend(frame(kind::HEADERS, 0, 5, &[1; 40]));
        let want = vec![
            Seen::Frame(kind::SETTINGS, 0, vec![0, 3, 0, 0, 0, 100]),
            Seen::Frame(kind::HEADERS, 1, b"\x82\x84".to_vec()),
            Seen::Data(1, b"hello".to_vec()),
            Seen::DataEnd(1, true),
            Seen::DataEnd(3, true),
            Seen::Frame(kind::PING, 0, vec![7; 8]),
            Seen::TooLarge(kind::HEADERS),
        ];
        for piece in [1, 2, 5, 9, 10, 17, stream.len()] {
            assert_eq!(read(&stream, piece, 32), want, "pieces of {piece}");
        }
    }

    #[test]
    fn padding_longer_than_the_frame_is_skipped() {
        let mut stream = frame(kind::DATA, flag::PADDED, 1, b"\x09abc");
        stream.extend(frame(kind::DATA, flag::PADDED, 1, b""));
        stream.extend(frame(kind::PING, 0, 0, &[0; 8]));
        assert_eq!(
            read(&stream, 3, 64),
            vec![
                Seen::BadPadding,
                Seen::BadPadding,
                Seen::Frame(kind::PING, 0, vec![0; 8])
            ]
        );
    }

    #[test]
    fn gaps_inside_data_keep_the_frames_in_step() {
        let mut reader = FrameReader::default();
        let data = frame(kind::DATA, flag::END_STREAM, 1, &[b'x'; 100]);
        let mut ends = 0;
        reader.feed(&data[..20], 64, |_| {});
        assert_eq!(reader.gap(Some(50)).map(|lost| lost.data), Some(50));
        reader.feed(&data[70..], 64, |e| {
            ends += usize::from(matches!(e, Event::DataEnd(_)))
        });
        assert_eq!(ends, 1);
        // A gap to the frame's very end ends it.
        reader.feed(&data[..20], 64, |_| {});
        let lost = reader.gap(Some(89)).unwrap();
        assert!(lost.frame_ended && lost.frame.has(flag::END_STREAM));
        // Past the frame's end, or in a header: lost.
        reader.feed(&data[..20], 64, |_| {});
        assert_eq!(reader.gap(Some(200)), None);
        assert_eq!(FrameReader::default().gap(Some(1)), None);
        assert_eq!(FrameReader::default().gap(None), None);
    }

    #[test]
    fn frame_runs_are_recognised() {
        let mut run = frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
        run.extend(frame(kind::HEADERS, flag::END_HEADERS, 7, b"\x82"));
        assert!(looks_like_frames(&run));
        assert!(looks_like_frames(&run[..run.len() - 1]));
        assert!(looks_like_frames(&frame(kind::DATA, 0, 3, b"hi")));
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!looks_like_frames(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!looks_like_frames(&frame(kind::SETTINGS, 0, 1, b"")));
        assert!(!looks_like_frames(&[0; 4]));
    }
}

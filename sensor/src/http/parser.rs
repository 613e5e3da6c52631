//! One direction of an HTTP/1.x connection: message heads (httparse), body framing
//! (Content-Length, chunked, until close), gaps and resynchronisation.
//!
//! The parser is incremental: [`MessageParser::feed`] consumes as much input as it can and stops
//! at every event the connection must react to (a head, a complete message), returning how many
//! bytes it used. "Need more bytes" is a value, not an error. The connection decides a message's
//! framing ([`Framing`]) because a response's framing depends on its request.

use crate::exchange::{Anomalies, HeaderBlock, MessageMeta, Request, Response};

use super::{HttpConfig, HttpCounters};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

/// How the body of the current message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What pairing needs to know of a request's method: whether the response has a body
/// (HEAD) and whether a success turns the connection into a tunnel (CONNECT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MethodKind {
    Head,
    Connect,
    #[default]
    Other,
}

impl MethodKind {
    pub fn of(method: &str) -> Self {
        if method.eq_ignore_ascii_case("HEAD") {
            Self::Head
        } else if method.eq_ignore_ascii_case("CONNECT") {
            Self::Connect
        } else {
            Self::Other
        }
    }
}

/// A parsed head, handed to the connection so it can pair and frame the message. The message's
/// own fields (method, URI, headers) stay with the parser until the message is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Of a request; `Other` for a response.
    pub method: MethodKind,
    pub status: Option<u16>,
    pub version: &'static str,
    pub content_length: Option<Result<u64, ()>>,
    pub chunked: bool,
}

impl Head {
    /// Framing from Transfer-Encoding and Content-Length (chunked wins, RFC 9112 6.3);
    /// `without_length` when neither says, or when the length is invalid (counted).
    pub fn body_framing(&self, without_length: Framing, counters: &mut HttpCounters) -> Framing {
        if self.chunked {
            return Framing::Chunked;
        }
        match self.content_length {
            Some(Ok(len)) => Framing::Length(len),
            Some(Err(())) => {
                counters.bad_framing += 1;
                without_length
            }
            None => without_length,
        }
    }
}

/// Whether `bytes` begin like a request (a known method and a space) or a response.
pub fn looks_like_request(bytes: &[u8]) -> bool {
    METHODS.iter().any(|m| bytes.starts_with(m))
}

pub fn looks_like_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HTTP/1.")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input used; waiting for more.
    NeedMore,
    /// A head was parsed; call [`MessageParser::set_framing`] before feeding more.
    Head(Head),
    /// The current message is complete.
    Request(Request),
    Response(Response),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty line.
    Trailer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Head parsed, framing not yet decided by the connection.
    AwaitFraming,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    /// Lost sync: skipping to the next plausible message start.
    Resync,
    /// Not HTTP any more (upgrade, CONNECT tunnel) or never was: bytes are only counted.
    Passthrough,
}

/// Methods recognised when looking for a request start after losing sync.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
    b"SEARCH ",
    b"REPORT ",
    b"PURGE ",
];
/// Largest Content-Length or chunk size taken as valid: servers keep lengths in signed 64 bits
/// (nginx's `off_t`, Go's `int64`, Java's `long`) and reject anything larger with a 400.
const MAX_LENGTH: u64 = i64::MAX as u64;
/// Longest pattern a resync scan must see whole.
const MAX_START_PATTERN: usize = 16;
/// Longest failed head whose bytes are scanned again for a message start.
const REPLAY_MAX: usize = 8 * 1024;
/// Skipped bytes after which a stream that never carried HTTP is given up on.
const NOT_HTTP_AFTER: u64 = 256 * 1024;

#[derive(Debug)]
pub struct MessageParser {
    kind: Kind,
    state: State,
    /// Head bytes, or a chunk-size / trailer line, or resync carry-over.
    buf: Vec<u8>,
    /// In resync: whether `buf[0]` starts a line (so a message may start there).
    at_line_start: bool,
    request: Request,
    response: Response,
    /// Whether `request`/`response` holds a message in progress.
    in_message: bool,
    /// A complete message was ever parsed on this stream.
    ever_parsed: bool,
    skipped: u64,
    /// The current head was salvaged from a gap: its framing cannot be trusted.
    salvaged: bool,
    /// A gap of lost bytes broke the framing: the next message is found by scanning, so it may
    /// be a false start inside a lost message's body, and messages may be missing before it.
    /// That message is marked `gap`.
    lost_in_gap: bool,
    /// The message in progress began while `lost_in_gap` was set.
    message_after_gap: bool,
    /// Bytes already consumed that must be fed again, ahead of the rest of the input (a failed
    /// head may contain the next message's start).
    replay: Vec<u8>,
    /// A request on this connection had a head or framing origins read differently or reject
    /// (see [`Anomalies::AFTER_AMBIGUOUS`]): every later request is flagged.
    after_ambiguous: bool,
    /// A request whose body another server would frame the other way (see [`OtherReading`]).
    other_reading: Option<OtherReading>,
    /// The request that other reading finds in the body of the request just completed.
    hidden: Option<Request>,
}

/// A request with both framings, read the way the decoder did not: the raw body bytes, for the
/// request another server would parse after the body as it frames it. TE.CL smuggling: the
/// decoder reads chunked, a server reading the Content-Length finds a request inside the
/// chunks. TE.TE: an obfuscated Transfer-Encoding the decoder does not take for chunked (it
/// reads the length), a lenient server does, and finds a request after the last chunk.
#[derive(Debug)]
struct OtherReading {
    /// `Some(n)`: the other server reads `n` bytes of body; `None`: it reads chunks.
    length: Option<u64>,
    /// With a length, the body bytes after it; with chunks, the body from its start. At most
    /// [`REPLAY_MAX`].
    bytes: Vec<u8>,
}

impl OtherReading {
    fn observe(&mut self, raw: &[u8]) {
        let mut rest = raw;
        if let Some(skip) = &mut self.length {
            let skipped = (*skip).min(raw.len() as u64) as usize;
            *skip -= skipped as u64;
            rest = &raw[skipped..];
        }
        let room = REPLAY_MAX.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// The request head starting where the other reading ends the body, if a whole one is
    /// there; flagged.
    fn hidden_request(&self, ts_ns: u64, config: &HttpConfig) -> Option<Request> {
        // Parsed on the side: the decoder's counters are about the stream as it reads it.
        let mut counters = HttpCounters::default();
        let after = match self.length {
            Some(_) => &self.bytes[..],
            None => {
                let mut chunks = MessageParser::new(Kind::Request);
                chunks.state = State::Chunked(Chunk::Size);
                chunks.in_message = true;
                let mut at = 0;
                loop {
                    let (used, progress) =
                        chunks.feed(&self.bytes[at..], ts_ns, config, &mut counters);
                    at += used;
                    match progress {
                        Progress::Request(r)
                            if !r.meta.anomalies.contains(Anomalies::CHUNK_SIZE_INVALID) =>
                        {
                            break self.bytes.get(at..)?;
                        }
                        Progress::NeedMore if used > 0 && at < self.bytes.len() => {}
                        _ => return None,
                    }
                }
            }
        };
        if !looks_like_request(after) {
            return None;
        }
        let mut parser = MessageParser::new(Kind::Request);
        let (_, Progress::Head(_)) = parser.feed(after, ts_ns, config, &mut counters) else {
            return None;
        };
        let Some(Progress::Request(mut request)) = parser.set_framing(Framing::None, ts_ns) else {
            return None;
        };
        request.meta.anomalies.insert(Anomalies::AFTER_AMBIGUOUS);
        Some(request)
    }
}

impl MessageParser {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            state: State::Head,
            buf: Vec::new(),
            at_line_start: true,
            request: Request::default(),
            response: Response::default(),
            in_message: false,
            ever_parsed: false,
            skipped: 0,
            replay: Vec::new(),
            salvaged: false,
            lost_in_gap: false,
            message_after_gap: false,
            after_ambiguous: false,
            other_reading: None,
            hidden: None,
        }
    }

    /// The request a server framing the body of the request just completed the other way would
    /// parse (see [`OtherReading`]).
    pub fn take_hidden(&mut self) -> Option<Request> {
        self.hidden.take()
    }

    /// Bytes to feed again before the rest of the current input, if any.
    pub fn take_replay(&mut self) -> Option<Vec<u8>> {
        (!self.replay.is_empty()).then(|| std::mem::take(&mut self.replay))
    }

    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Whether a gap broke this direction's framing and no message has started since: the next
    /// one is found by scanning (see `lost_in_gap`).
    pub fn lost_in_gap(&self) -> bool {
        self.lost_in_gap
    }

    /// Declares the gap just reported a loss of the capture's, though its length is unknown:
    /// the next message is marked as after any other loss.
    pub fn mark_lost_in_gap(&mut self) {
        if self.state == State::Resync {
            self.lost_in_gap = true;
        }
    }

    /// Whether the message in progress was found by scanning after a gap (see `lost_in_gap`).
    pub fn message_after_gap(&self) -> bool {
        self.message_after_gap
    }

    /// Waiting for a head with nothing of it buffered: between messages.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.buf.is_empty() && !self.in_message
    }

    fn meta(&mut self) -> &mut MessageMeta {
        match self.kind {
            Kind::Request => &mut self.request.meta,
            Kind::Response => &mut self.response.meta,
        }
    }

    /// Stops decoding this direction (the connection became a tunnel).
    pub fn passthrough(&mut self) {
        self.state = State::Passthrough;
        self.buf.clear();
    }

    /// Starts an HTTP/0.9 response: no head, the body runs until the connection closes.
    pub fn begin_raw_response(&mut self, ts_ns: u64) {
        self.response = Response::default();
        self.response.meta.version = "0.9";
        self.response.meta.start_ns = ts_ns;
        self.in_message = true;
        self.state = State::UntilClose;
    }

    /// Sets the framing of the message whose head was just returned.
    pub fn set_framing(&mut self, framing: Framing, ts_ns: u64) -> Option<Progress> {
        if std::mem::take(&mut self.salvaged) {
            // The body's start is unknown: end the message and look for the next one.
            let done = self.complete(ts_ns);
            self.state = State::Resync;
            self.at_line_start = true;
            return Some(done);
        }
        self.state = match framing {
            Framing::None => return Some(self.complete(ts_ns)),
            Framing::Length(0) => return Some(self.complete(ts_ns)),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        None
    }

    /// Consumes from `input`; returns the bytes used and what happened.
    pub fn feed(
        &mut self,
        input: &[u8],
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> (usize, Progress) {
        let in_body = matches!(self.state, State::Length(_) | State::Chunked(_));
        let (used, progress) = match self.state {
            State::Head => self.feed_head(input, ts_ns, config, counters),
            State::AwaitFraming => (0, Progress::NeedMore),
            State::Length(remaining) => {
                let take = remaining.min(input.len() as u64) as usize;
                self.body(&input[..take], config, counters);
                if take as u64 == remaining {
                    (take, self.complete(ts_ns))
                } else {
                    self.state = State::Length(remaining - take as u64);
                    (take, Progress::NeedMore)
                }
            }
            State::Chunked(chunk) => self.feed_chunked(chunk, input, ts_ns, config, counters),
            State::UntilClose => {
                self.body(input, config, counters);
                (input.len(), Progress::NeedMore)
            }
            State::Resync => self.feed_resync(input, counters),
            State::Passthrough => {
                counters.tunnel_bytes += input.len() as u64;
                (input.len(), Progress::NeedMore)
            }
        };
        if in_body && let Some(reading) = &mut self.other_reading {
            reading.observe(&input[..used]);
            if matches!(progress, Progress::Request(_)) {
                self.hidden = reading.hidden_request(ts_ns, config);
                self.other_reading = None;
            }
        }
        (used, progress)
    }

    fn body(&mut self, bytes: &[u8], config: &HttpConfig, counters: &mut HttpCounters) {
        super::append_body(self.meta(), bytes, config, counters);
    }

    fn complete(&mut self, ts_ns: u64) -> Progress {
        self.state = State::Head;
        self.in_message = false;
        self.ever_parsed = true;
        self.meta().end_ns = ts_ns;
        match self.kind {
            Kind::Request => Progress::Request(std::mem::take(&mut self.request)),
            Kind::Response => Progress::Response(std::mem::take(&mut self.response)),
        }
    }

    fn feed_head(
        &mut self,
        input: &[u8],
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> (usize, Progress) {
        if self.buf.is_empty() {
            // Blank lines between messages are allowed (RFC 9112 2.2) and not a message start.
            let blank = input
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if blank == input.len() {
                return (input.len(), Progress::NeedMore);
            }
            if blank > 0 {
                return (blank, Progress::NeedMore);
            }
            self.message_after_gap = std::mem::take(&mut self.lost_in_gap);
            *self.meta() = MessageMeta {
                start_ns: ts_ns,
                gap: self.message_after_gap,
                ..MessageMeta::default()
            };
            self.in_message = true;
        }
        let searched_from = self.buf.len().saturating_sub(3);
        let room = config.max_head_bytes.saturating_sub(self.buf.len());
        let take = input.len().min(room.max(1));
        self.buf.extend_from_slice(&input[..take]);
        if self.kind == Kind::Request
            && let Some(line_end) = http09_request_line(&self.buf)
        {
            let used = take - (self.buf.len() - line_end);
            return (used, self.http09_request(ts_ns, line_end, counters));
        }
        let Some(head_end) = find_head_end(&self.buf, searched_from) else {
            if self.buf.len() >= config.max_head_bytes {
                counters.heads_too_large += 1;
                self.lose_sync(counters);
            }
            return (take, Progress::NeedMore);
        };
        // Bytes of `input` after the head belong to the body or the next message.
        let used = take - (self.buf.len() - head_end);
        self.buf.truncate(head_end);
        match self.parse_head(config, counters) {
            Ok(head) => {
                self.buf.clear();
                self.state = State::AwaitFraming;
                (used, Progress::Head(head))
            }
            Err(()) => {
                counters.parse_errors += 1;
                // The next message may begin inside the bytes taken for this head: have them
                // fed again from the second byte on. Only for short heads, which keeps the cost
                // of hostile input linear.
                let head = std::mem::take(&mut self.buf);
                self.lose_sync(counters);
                if head.len() <= REPLAY_MAX {
                    self.replay = head.get(1..).unwrap_or_default().to_vec();
                }
                (used, Progress::NeedMore)
            }
        }
    }

    fn http09_request(
        &mut self,
        ts_ns: u64,
        line_end: usize,
        counters: &mut HttpCounters,
    ) -> Progress {
        counters.http09_requests += 1;
        let line = String::from_utf8_lossy(&self.buf[..line_end])
            .trim_end()
            .to_owned();
        self.buf.clear();
        self.request.method = "GET".into();
        self.request.uri = line.get(4..).unwrap_or_default().to_owned();
        self.request.meta.version = "0.9";
        self.request.meta.start_ns = ts_ns;
        self.state = State::AwaitFraming;
        Progress::Head(Head {
            method: MethodKind::Other,
            status: None,
            version: "0.9",
            content_length: None,
            chunked: false,
        })
    }

    fn parse_head(&mut self, config: &HttpConfig, counters: &mut HttpCounters) -> Result<Head, ()> {
        let mut head = std::mem::take(&mut self.buf);
        // httparse refuses folded header lines (in requests) and a bare CR; joined, and the CR
        // read as a space, the message decodes as a lenient server reads it, and each is
        // recorded: a request hidden behind either would otherwise be missing from the record.
        let folded = unfold_headers(&mut head);
        let bare_cr = blank_bare_cr(&mut head);
        let mut truncated = false;
        let mut invalid_header = false;
        let result = loop {
            match parse_owned(self.kind, &head, config.max_headers) {
                Err(httparse::Error::TooManyHeaders) if !truncated => {
                    // Keep the message with the headers that fit, and say so.
                    truncated = true;
                    counters.headers_truncated += 1;
                    head = cut_after_lines(&head, config.max_headers + 1);
                }
                Err(httparse::Error::HeaderName | httparse::Error::HeaderValue)
                    if self.kind == Kind::Request && !invalid_header =>
                {
                    // The origin answers such a request (400, RFC 9112 5.1) and logs it: it
                    // stays in the record without the lines no parser accepts, flagged.
                    match without_invalid_header_lines(&head) {
                        Some(kept) => {
                            invalid_header = true;
                            head = kept;
                        }
                        None => break Err(httparse::Error::HeaderName),
                    }
                }
                other => break other,
            }
        };
        self.buf = head;
        let Ok(Some(OwnedHead {
            method,
            uri,
            status,
            reason,
            version,
            headers,
        })) = result
        else {
            return Err(());
        };
        let version = if version == 0 { "1.0" } else { "1.1" };
        let mut content_length = None;
        let mut chunked = false;
        // What an attacker smuggling a request plays with; recorded, the framing decided as
        // before (see `Anomalies`).
        let mut anomalies = Anomalies::default();
        let mut transfer_encodings = 0;
        let mut mentions_chunked = false;
        for (name, value) in headers.iter() {
            if name.eq_ignore_ascii_case("content-length") {
                let digits = value.trim();
                let parsed = digits
                    .parse::<u64>()
                    .ok()
                    .filter(|len| *len <= MAX_LENGTH)
                    .ok_or(());
                // `parse` takes a leading `+`; the grammar is digits only (RFC 9110 8.6).
                if parsed.is_err() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    anomalies.insert(Anomalies::LENGTH_INVALID);
                }
                // Differing repeated lengths are a framing error (RFC 9112 6.3).
                content_length = match (content_length, parsed) {
                    (None, p) => Some(p),
                    (Some(Ok(a)), Ok(b)) if a == b => Some(Ok(a)),
                    (Some(Ok(_)), Ok(_)) => {
                        anomalies.insert(Anomalies::LENGTH_CONFLICT);
                        Some(Err(()))
                    }
                    _ => Some(Err(())),
                };
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encodings += 1;
                // Lenient servers take any coding that says chunked for chunked.
                mentions_chunked |= value.to_ascii_lowercase().contains("chunked");
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                if !transfer_encoding_is_plain(value) {
                    anomalies.insert(Anomalies::TRANSFER_ENCODING_INVALID);
                }
            }
        }
        // Repeated, or in HTTP/1.0, which has no Transfer-Encoding: RFC 9112 6.1 asks for the
        // framing to be treated as faulty (nginx answers 400).
        if transfer_encodings > 1 || (transfer_encodings > 0 && version == "1.0") {
            anomalies.insert(Anomalies::TRANSFER_ENCODING_INVALID);
        }
        if transfer_encodings > 0 && content_length.is_some() {
            anomalies.insert(Anomalies::LENGTH_AND_CHUNKED);
        }
        if has_bare_lf(&self.buf) {
            anomalies.insert(Anomalies::BARE_LF);
        }
        if folded {
            anomalies.insert(Anomalies::OBS_FOLD);
        }
        if bare_cr {
            anomalies.insert(Anomalies::BARE_CR);
        }
        if invalid_header {
            anomalies.insert(Anomalies::HEADER_INVALID);
        }
        if self.kind == Kind::Request {
            if self.after_ambiguous {
                anomalies.insert(Anomalies::AFTER_AMBIGUOUS);
            }
            self.after_ambiguous |= anomalies.is_ambiguous();
            self.other_reading = match (chunked, content_length) {
                (true, Some(Ok(length))) => Some(OtherReading {
                    length: Some(length),
                    bytes: Vec::new(),
                }),
                (false, Some(Ok(_))) if mentions_chunked => Some(OtherReading {
                    length: None,
                    bytes: Vec::new(),
                }),
                _ => None,
            };
        }
        let meta = self.meta();
        meta.anomalies = anomalies;
        meta.version = version;
        meta.header_block = headers;
        meta.headers_truncated = truncated;
        let method_kind = match self.kind {
            Kind::Request => {
                counters.requests += 1;
                let kind = MethodKind::of(&method);
                self.request.method = method;
                self.request.uri = uri;
                kind
            }
            Kind::Response => {
                counters.responses += 1;
                self.response.status = status;
                self.response.reason = reason;
                MethodKind::Other
            }
        };
        Ok(Head {
            method: method_kind,
            status,
            version,
            content_length,
            chunked,
        })
    }

    fn feed_chunked(
        &mut self,
        chunk: Chunk,
        input: &[u8],
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> (usize, Progress) {
        match chunk {
            Chunk::Data(remaining) => {
                let take = remaining.min(input.len() as u64) as usize;
                self.body(&input[..take], config, counters);
                self.state = State::Chunked(if take as u64 == remaining {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(remaining - take as u64)
                });
                (take, Progress::NeedMore)
            }
            Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                let Some(newline) = input.iter().position(|b| *b == b'\n') else {
                    self.buf.extend_from_slice(input);
                    if self.buf.len() > config.max_line_bytes {
                        counters.parse_errors += 1;
                        self.lose_sync(counters);
                    }
                    return (input.len(), Progress::NeedMore);
                };
                self.buf.extend_from_slice(&input[..=newline]);
                let line = std::mem::take(&mut self.buf);
                let used = newline + 1;
                match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(&line) {
                        Ok(httparse::Status::Complete((_, 0))) => {
                            self.state = State::Chunked(Chunk::Trailer);
                        }
                        // Beyond a signed 64-bit size no server takes it (nginx, Go, Java keep
                        // sizes signed): invalid, as past 64 bits.
                        Ok(httparse::Status::Complete((_, size))) if size <= MAX_LENGTH => {
                            self.state = State::Chunked(Chunk::Data(size));
                        }
                        _ => {
                            // Hand the message on, cut and marked, rather than lose it with
                            // the sync: a broken chunk size is itself a smuggling sign that
                            // the attack detector reports.
                            self.after_ambiguous = true;
                            let meta = self.meta();
                            meta.anomalies.insert(Anomalies::CHUNK_SIZE_INVALID);
                            meta.truncated = true;
                            let message = self.complete(ts_ns);
                            counters.parse_errors += 1;
                            self.lose_sync(counters);
                            return (used, message);
                        }
                    },
                    Chunk::DataEnd => {
                        if line.trim_ascii().is_empty() {
                            self.state = State::Chunked(Chunk::Size);
                        } else {
                            counters.parse_errors += 1;
                            self.lose_sync(counters);
                        }
                    }
                    _ => {
                        if line.trim_ascii().is_empty() {
                            return (used, self.complete(ts_ns));
                        }
                        // A trailer field: kept with the headers, within the same bound.
                        if let Some((name, value)) = split_header_line(&line) {
                            let max = config.max_headers;
                            let meta = self.meta();
                            if meta.header_count() < max {
                                meta.header_block.push(&name, &value);
                            } else {
                                meta.headers_truncated = true;
                            }
                        }
                    }
                }
                (used, Progress::NeedMore)
            }
        }
    }

    /// Abandons the message in progress (it is incomplete) and looks for the next start.
    fn lose_sync(&mut self, counters: &mut HttpCounters) {
        counters.resyncs += 1;
        self.state = State::Resync;
        self.buf.clear();
        self.at_line_start = false;
        self.in_message = false;
    }

    fn feed_resync(&mut self, input: &[u8], counters: &mut HttpCounters) -> (usize, Progress) {
        let carried = self.buf.len();
        let mut window = std::mem::take(&mut self.buf);
        window.extend_from_slice(input);
        if let Some(start) = find_message_start(self.kind, &window, self.at_line_start) {
            // Give the bytes from the message start back to the head parser: as `input` is
            // consumed up to there, the carried-over prefix (if any) is re-fed from `buf`.
            counters.resync_bytes_skipped += start as u64;
            self.state = State::Head;
            self.at_line_start = true;
            if start < carried {
                // The start lies in the carried-over tail: have it fed again before `input`.
                self.replay = window[start..carried].to_vec();
                return (0, Progress::NeedMore);
            }
            return (start - carried, Progress::NeedMore);
        }
        // Keep a short tail that may hold the beginning of a start pattern.
        let last_newline = window.iter().rposition(|b| *b == b'\n');
        let tail_from = match (self.kind, last_newline) {
            (Kind::Response, _) => window.len().saturating_sub(MAX_START_PATTERN),
            (Kind::Request, Some(i)) if window.len() - (i + 1) < MAX_START_PATTERN => i + 1,
            (Kind::Request, _) => window.len(),
        };
        counters.resync_bytes_skipped += tail_from as u64;
        self.skipped += tail_from as u64;
        self.at_line_start = last_newline.is_some_and(|i| i + 1 == tail_from)
            || (tail_from == 0 && self.at_line_start);
        self.buf = window[tail_from..].to_vec();
        if !self.ever_parsed && self.skipped > NOT_HTTP_AFTER {
            counters.not_http_streams += 1;
            self.passthrough();
        }
        (input.len(), Progress::NeedMore)
    }

    /// Body bytes of the message in progress that this parser will only count: it kept all the
    /// body it keeps (`body_cap`), the rest has a known length (Content-Length), and nothing
    /// else reads it (no second reading looking for a hidden request). Those bytes need not be
    /// captured at all (see [`Self::skip`]).
    pub fn body_left_to_count(&self, config: &HttpConfig) -> Option<u64> {
        let State::Length(remaining) = self.state else {
            return None;
        };
        let meta = match self.kind {
            Kind::Request => &self.request.meta,
            Kind::Response => &self.response.meta,
        };
        (meta.body.len() >= config.body_cap && self.other_reading.is_none()).then_some(remaining)
    }

    /// `len` bytes of the stream went by uncaptured because the decoder asked for it
    /// ([`Self::body_left_to_count`]): within that body they are counted like the bytes past the
    /// cap always were, and the message stays whole. `None` when they are not (the state moved
    /// on since): the caller takes them as lost.
    pub fn skip(
        &mut self,
        len: u64,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> Option<Option<Progress>> {
        let remaining = self.body_left_to_count(config).filter(|r| len <= *r)?;
        counters.body_bytes_skipped += len;
        let meta = self.meta();
        meta.body_len += len;
        if !meta.truncated {
            meta.truncated = true;
            counters.bodies_truncated += 1;
        }
        if len == remaining {
            return Some(Some(self.complete(ts_ns)));
        }
        self.state = State::Length(remaining - len);
        Some(None)
    }

    /// Bytes of the stream were lost. A body of known length stays in step; anything else
    /// loses sync. `len: None` means an unknown amount.
    pub fn gap(
        &mut self,
        len: Option<u64>,
        ts_ns: u64,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> Option<Progress> {
        match (self.state, len) {
            (State::Passthrough, _) => None,
            (State::Length(remaining), Some(len)) if len <= remaining => {
                let meta = self.meta();
                meta.gap = true;
                meta.body_len += len;
                counters.messages_with_gaps += 1;
                if len == remaining {
                    return Some(self.complete(ts_ns));
                }
                self.state = State::Length(remaining - len);
                None
            }
            (State::Chunked(Chunk::Data(remaining)), Some(len)) if len < remaining => {
                let meta = self.meta();
                meta.gap = true;
                meta.body_len += len;
                counters.messages_with_gaps += 1;
                self.state = State::Chunked(Chunk::Data(remaining - len));
                None
            }
            (State::UntilClose, Some(len)) => {
                let meta = self.meta();
                meta.gap = true;
                meta.body_len += len;
                counters.messages_with_gaps += 1;
                None
            }
            (State::Head, _) if self.in_message && !self.buf.is_empty() => {
                // A head cut by the gap (typically a capture snaplen): its start line and the
                // headers before the cut are still worth reporting. Where its body ends is
                // unknown, so the message ends here and the stream resynchronises after it.
                let salvaged = self.salvage_head(config, counters);
                if salvaged.is_none() {
                    counters.truncated_messages += 1;
                }
                self.lose_sync(counters);
                self.at_line_start = true;
                self.lost_in_gap = len.is_some();
                salvaged
            }
            _ => {
                // The message in progress (if any) cannot be finished: hand it over incomplete.
                let partial = self.take_partial(ts_ns, counters);
                self.lose_sync(counters);
                // After a gap, data may start right at a message boundary.
                self.at_line_start = true;
                // A capture that starts mid-stream (`len: None`) loses nothing it could report.
                self.lost_in_gap = len.is_some();
                partial
            }
        }
    }

    /// Parses the complete lines of a head cut short; the message is marked incomplete and its
    /// framing will be ignored ([`Self::set_framing`]).
    fn salvage_head(
        &mut self,
        config: &HttpConfig,
        counters: &mut HttpCounters,
    ) -> Option<Progress> {
        let last_newline = self.buf.iter().rposition(|b| *b == b'\n')?;
        let mut head = self.buf[..=last_newline].to_vec();
        head.extend_from_slice(b"\r\n");
        let saved = std::mem::replace(&mut self.buf, head);
        let parsed = self.parse_head(config, counters);
        self.buf = saved;
        let head = parsed.ok()?;
        counters.heads_salvaged += 1;
        counters.truncated_messages += 1;
        let meta = self.meta();
        meta.truncated = true;
        meta.gap = true;
        meta.headers_truncated = true;
        self.salvaged = true;
        self.state = State::AwaitFraming;
        Some(Progress::Head(head))
    }

    /// The message in progress, marked incomplete, if its head had been parsed.
    fn take_partial(&mut self, ts_ns: u64, counters: &mut HttpCounters) -> Option<Progress> {
        let head_parsed = !matches!(self.state, State::Head | State::Resync | State::Passthrough);
        if !self.in_message || !head_parsed {
            self.in_message = false;
            return None;
        }
        counters.truncated_messages += 1;
        let meta = self.meta();
        meta.truncated = true;
        meta.gap = true;
        Some(self.complete(ts_ns))
    }

    /// The stream ended. A body that runs until close completes; any other message in progress
    /// is handed over incomplete.
    /// `after_loss`: the capture lost bytes of this connection, so a message the end cuts
    /// short most likely lost its rest with them: it is marked `gap` too.
    pub fn finish(
        &mut self,
        ts_ns: u64,
        after_loss: bool,
        counters: &mut HttpCounters,
    ) -> Option<Progress> {
        match self.state {
            State::UntilClose => Some(self.complete(ts_ns)),
            State::Passthrough | State::Resync => None,
            _ => {
                let head_parsed = self.state != State::Head;
                if self.in_message && head_parsed {
                    counters.truncated_messages += 1;
                    let meta = self.meta();
                    meta.truncated = true;
                    meta.gap |= after_loss;
                    Some(self.complete(ts_ns))
                } else {
                    if self.in_message {
                        counters.truncated_messages += 1;
                    }
                    self.in_message = false;
                    None
                }
            }
        }
    }
}

/// A head copied out of httparse's borrowed view.
struct OwnedHead {
    method: String,
    uri: String,
    status: Option<u16>,
    reason: String,
    /// httparse's minor version: 0 or 1.
    version: u8,
    headers: HeaderBlock,
}

/// Header slots on the stack: enough for nearly every message. Only a head with more headers
/// (and a configured maximum above this) is parsed again with `max_headers` slots on the heap.
const INLINE_HEADERS: usize = 32;

/// Parses a complete head; `Ok(None)` if httparse still wants more bytes.
fn parse_owned(
    kind: Kind,
    head: &[u8],
    max_headers: usize,
) -> Result<Option<OwnedHead>, httparse::Error> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    match parse_with(kind, head, &mut inline[..max_headers.min(INLINE_HEADERS)]) {
        Err(httparse::Error::TooManyHeaders) if max_headers > INLINE_HEADERS => {
            parse_with(kind, head, &mut vec![httparse::EMPTY_HEADER; max_headers])
        }
        other => other,
    }
}

fn parse_with<'b>(
    kind: Kind,
    head: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<OwnedHead>, httparse::Error> {
    match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(headers);
            Ok(req.parse(head)?.is_complete().then(|| OwnedHead {
                method: req.method.unwrap_or_default().to_owned(),
                uri: req.path.unwrap_or_default().to_owned(),
                status: None,
                reason: String::new(),
                version: req.version.unwrap_or(1),
                headers: collect_headers(req.headers, head.len()),
            }))
        }
        Kind::Response => {
            let mut res = httparse::Response::new(headers);
            Ok(res.parse(head)?.is_complete().then(|| OwnedHead {
                method: String::new(),
                uri: String::new(),
                status: res.code,
                reason: res.reason.unwrap_or_default().to_owned(),
                version: res.version.unwrap_or(1),
                headers: collect_headers(res.headers, head.len()),
            }))
        }
    }
}

/// The headers in one block; `head_len` bounds their text (unless lossy decoding grows it).
fn collect_headers(headers: &[httparse::Header<'_>], head_len: usize) -> HeaderBlock {
    let count = headers.iter().take_while(|h| !h.name.is_empty()).count();
    let mut block = HeaderBlock::with_capacity(count, head_len);
    for h in &headers[..count] {
        block.push(h.name, &String::from_utf8_lossy(h.value));
    }
    block
}

fn split_header_line(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
    let value = String::from_utf8_lossy(&line[colon + 1..])
        .trim()
        .to_owned();
    (!name.is_empty()).then_some((name, value))
}

/// End of the head (after the blank line), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    memchr::memchr_iter(b'\n', tail).find_map(|at| {
        let i = from + at;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

/// `GET <uri>\r\n` with no version: an HTTP/0.9 simple request. Returns the line's end.
fn http09_request_line(buf: &[u8]) -> Option<usize> {
    if !buf.starts_with(b"GET ") {
        return None;
    }
    let newline = buf.iter().position(|b| *b == b'\n')?;
    let line = buf[..newline].trim_ascii_end();
    let uri = line.get(4..)?;
    (!uri.is_empty() && !uri.contains(&b' ')).then_some(newline + 1)
}

/// Keeps the first `lines` lines and terminates the head there.
fn cut_after_lines(head: &[u8], lines: usize) -> Vec<u8> {
    let mut end = 0;
    for _ in 0..lines {
        match head[end..].iter().position(|b| *b == b'\n') {
            Some(i) => end += i + 1,
            None => break,
        }
    }
    let mut cut = head[..end].to_vec();
    cut.extend_from_slice(b"\r\n");
    cut
}

/// Where a message plausibly starts. Requests: a known method and a space at a line start.
/// Responses: `HTTP/1.x NNN ` anywhere — specific enough not to need a line start, which matters
/// after a gap that ends inside an unterminated body. `first_is_line_start`: whether offset 0
/// starts a line.
fn find_message_start(kind: Kind, buf: &[u8], first_is_line_start: bool) -> Option<usize> {
    match kind {
        Kind::Request => {
            let matches = |at: usize| looks_like_request(&buf[at..]);
            if first_is_line_start && matches(0) {
                return Some(0);
            }
            buf.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1)
                .find(|&at| at < buf.len() && matches(at))
        }
        Kind::Response => buf.windows(13).position(|w| {
            w.starts_with(b"HTTP/1.")
                && (w[7] == b'0' || w[7] == b'1')
                && w[8] == b' '
                && (b'1'..=b'5').contains(&w[9])
                && w[10].is_ascii_digit()
                && w[11].is_ascii_digit()
                && (w[12] == b' ' || w[12] == b'\r' || w[12] == b'\n')
        }),
    }
}

/// A Transfer-Encoding value of registered codings only (RFC 9112 7), each once, `chunked`
/// last if present. Anything else (`xchunked`, `chunked, identity`, `chunked\t`, an empty
/// element) is how smuggling attacks make a front end and a back end disagree.
fn transfer_encoding_is_plain(value: &str) -> bool {
    let codings: Vec<&str> = value.split(',').map(str::trim).collect();
    let known = |c: &str| {
        [
            "chunked", "gzip", "x-gzip", "deflate", "compress", "br", "zstd",
        ]
        .iter()
        .any(|k| c.eq_ignore_ascii_case(k))
    };
    codings.iter().all(|c| known(c))
        && codings.iter().enumerate().all(|(i, c)| {
            !c.eq_ignore_ascii_case("chunked") || i + 1 == codings.len()
        })
        // Only spaces around the commas: a tab or a vertical tab hides a coding from some parsers.
        && !value.bytes().any(|b| b.is_ascii_control())
}

/// Replaces each obsolete line folding in `head` (a line break followed by spaces or tabs,
/// after the start line) with spaces, in place, as RFC 9112 5.2 lets a recipient do; the
/// head keeps its length. Returns whether there was one.
fn unfold_headers(head: &mut [u8]) -> bool {
    let Some(first_line_end) = memchr::memchr(b'\n', head) else {
        return false;
    };
    // The blank line ending the head is no fold; stop before it.
    let end = head.len().saturating_sub(2);
    let mut folded = false;
    let mut i = first_line_end;
    while let Some(offset) = head
        .get(i + 1..end)
        .and_then(|rest| memchr::memchr(b'\n', rest))
    {
        let lf = i + 1 + offset;
        if matches!(head.get(lf + 1), Some(b' ' | b'\t')) && lf + 1 < end {
            folded = true;
            head[lf] = b' ';
            if lf > 0 && head[lf - 1] == b'\r' {
                head[lf - 1] = b' ';
            }
        }
        i = lf;
    }
    // Whitespace right after the start line is no fold (nothing to continue): left for
    // httparse to refuse (RFC 9112 2.2).
    folded
}

/// Replaces each CR in `head` that no LF follows with a space, in place (RFC 9112 2.2 lets a
/// recipient do so). Returns whether there was one.
fn blank_bare_cr(head: &mut [u8]) -> bool {
    let mut found = false;
    let mut from = 0;
    while let Some(offset) = head
        .get(from..)
        .and_then(|rest| memchr::memchr(b'\r', rest))
    {
        let i = from + offset;
        if head.get(i + 1) != Some(&b'\n') {
            head[i] = b' ';
            found = true;
        }
        from = i + 1;
    }
    found
}

/// `head` without the header lines httparse refuses on their own (whitespace before the colon,
/// a name outside the token characters, a control character in a value); `None` if every line
/// passes (the fault is elsewhere). Each line is parsed once: linear in the head's length.
fn without_invalid_header_lines(head: &[u8]) -> Option<Vec<u8>> {
    let first_line_end = memchr::memchr(b'\n', head)? + 1;
    let mut kept = head[..first_line_end].to_vec();
    let mut dropped = false;
    let mut probe = Vec::new();
    for line in head[first_line_end..].split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            // The blank line ending the head.
            kept.extend_from_slice(line);
            break;
        }
        probe.clear();
        probe.extend_from_slice(b"GET / HTTP/1.1\r\n");
        probe.extend_from_slice(line);
        probe.extend_from_slice(b"\r\n");
        let mut one = [httparse::EMPTY_HEADER; 1];
        if matches!(
            httparse::Request::new(&mut one).parse(&probe),
            Ok(httparse::Status::Complete(_))
        ) {
            kept.extend_from_slice(line);
        } else {
            dropped = true;
        }
    }
    dropped.then_some(kept)
}

/// A head line ended by LF alone (httparse accepts it, as RFC 9112 2.2 allows a recipient to).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

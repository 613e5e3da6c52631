//! pcap and pcapng capture files as a source of [`TcpSegment`]s.
//!
//! `pcap-parser` reads the container a record at a time from a bounded buffer (files of many
//! GB stream through a few hundred KiB), `etherparse` slices the network and transport
//! headers. What is left here: pcapng interface bookkeeping (link type and timestamp
//! resolution per interface, reset by every section), the Linux cooked and BSD loopback link
//! headers, and the accounting: every packet record ends up either as a segment or under
//! exactly one of [`PcapCounters::SKIP_COUNTERS`].
//!
//! Nothing here trusts the input: lengths come from the parsers' bounds-checked slices, and a
//! file that ends inside a record ends the stream like a clean end of file (counted in
//! `truncated_file`, offset in [`PcapSource::truncated_at`]).

use std::{
    fmt,
    fs::File,
    io::{self, Read},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use etherparse::{
    EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice,
    err::{Layer, ip::LaxHeaderSliceError, packet::SliceError},
    ip_number,
};
use pcap_parser::{
    IDB_MAGIC, PcapBlockOwned, PcapError, create_reader,
    pcapng::{Block, InterfaceDescriptionBlock, OptionCode},
    traits::{PcapNGPacketBlock as _, PcapReaderIterator},
};
use sensor_ebpf::tcp_flags;

use super::SourceError;
use crate::segment::TcpSegment;

/// First size of the read buffer: room for a 64 KiB packet (the largest GSO/GRO super-packet
/// before BIG TCP) and then some. Bigger records grow the buffer, which then stays grown.
const INITIAL_BUFFER: usize = 128 * 1024;

/// Largest record accepted. The buffer grows up to this for bigger records; a length field
/// beyond it is corruption, and bounding it bounds memory whatever the file says.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// pcapng interfaces remembered per section. Each description costs a few bytes, but a
/// hostile file could declare millions; packets of interfaces past the limit count as
/// `bad_interface`.
const MAX_INTERFACES: usize = 4096;

/// The `LINKTYPE_*` values (<https://www.tcpdump.org/linktypes.html>) this source decodes.
pub mod linktype {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    pub const RAW: i32 = 101;
    /// OpenBSD loopback: like `NULL`, but the family is in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    /// Linux cooked capture v2 (`tcpdump -i any` with libpcap 1.10 and later).
    pub const LINUX_SLL2: i32 = 276;
}

/// The container format of the file being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcapFormat {
    /// Classic libpcap format, with microsecond or nanosecond timestamps.
    Pcap {
        nanosecond: bool,
    },
    PcapNg,
}

/// What happened to the packets of a file. Every packet record is counted in `packets` and
/// then either in `tcp_segments` or in exactly one of [`Self::SKIP_COUNTERS`]; the other
/// counters are information about those packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcapCounters {
    /// Packet records read: pcap records, pcapng enhanced, simple and obsolete packet blocks.
    pub packets: u64,
    /// Packets delivered as segments.
    pub tcp_segments: u64,
    /// Frames that carry neither IPv4 nor IPv6 (ARP, LLDP, 802.3 LLC, MPLS, ...).
    pub non_ip: u64,
    /// IP packets of other protocols (UDP, ICMP, ...), fragments of those included.
    pub non_tcp: u64,
    /// Fragments of IP packets that carry TCP: skipped, not reassembled.
    pub ip_fragments: u64,
    /// Headers that do not parse: bad lengths, bad versions, a TCP data offset below 5.
    pub malformed: u64,
    /// Packets the capture's snaplen cut before the end of their TCP header.
    pub truncated_headers: u64,
    /// Packets of a link type this source does not decode.
    pub unsupported_linktype: u64,
    /// pcapng packets of an interface that was not described in their section, or whose
    /// description has an unusable timestamp resolution.
    pub bad_interface: u64,
    /// pcapng obsolete Packet Blocks (type 2), which this source does not decode.
    pub unsupported_block: u64,
    /// Packets whose captured length is below their length on the wire, whatever became of
    /// them.
    pub truncated_packets: u64,
    /// Segments delivered with `missing > 0`, and the sum of those missing bytes.
    pub segments_truncated: u64,
    pub bytes_truncated: u64,
    /// 1 when the file ends inside a record (the rest of the file is ignored).
    pub truncated_file: u64,
}

impl PcapCounters {
    /// The counters of packets that did not become a segment; they partition
    /// `packets - tcp_segments`.
    pub const SKIP_COUNTERS: [&'static str; 8] = [
        "non_ip",
        "non_tcp",
        "ip_fragments",
        "malformed",
        "truncated_headers",
        "unsupported_linktype",
        "bad_interface",
        "unsupported_block",
    ];

    /// All counters by name, in a stable order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("packets", self.packets),
            ("tcp_segments", self.tcp_segments),
            ("non_ip", self.non_ip),
            ("non_tcp", self.non_tcp),
            ("ip_fragments", self.ip_fragments),
            ("malformed", self.malformed),
            ("truncated_headers", self.truncated_headers),
            ("unsupported_linktype", self.unsupported_linktype),
            ("bad_interface", self.bad_interface),
            ("unsupported_block", self.unsupported_block),
            ("truncated_packets", self.truncated_packets),
            ("segments_truncated", self.segments_truncated),
            ("bytes_truncated", self.bytes_truncated),
            ("truncated_file", self.truncated_file),
        ]
    }

    /// Packets that did not become a segment.
    pub fn skipped(&self) -> u64 {
        self.named()
            .into_iter()
            .filter(|(name, _)| Self::SKIP_COUNTERS.contains(name))
            .map(|(_, value)| value)
            .sum()
    }

    fn skip_counter(&mut self, skip: Skip) -> &mut u64 {
        match skip {
            Skip::NonIp => &mut self.non_ip,
            Skip::NonTcp => &mut self.non_tcp,
            Skip::IpFragment => &mut self.ip_fragments,
            Skip::Malformed => &mut self.malformed,
            Skip::TruncatedHeaders => &mut self.truncated_headers,
            Skip::UnsupportedLinktype => &mut self.unsupported_linktype,
            Skip::BadInterface => &mut self.bad_interface,
            Skip::UnsupportedBlock => &mut self.unsupported_block,
        }
    }
}

/// Why a packet did not become a segment; one variant per skip counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    NonIp,
    NonTcp,
    IpFragment,
    Malformed,
    TruncatedHeaders,
    UnsupportedLinktype,
    BadInterface,
    UnsupportedBlock,
}

/// A capture file, read one segment at a time.
///
/// ```no_run
/// # fn main() -> Result<(), apisessions::source::SourceError> {
/// let mut source = apisessions::source::PcapSource::open("trace.pcapng")?;
/// while let Some(segment) = source.next_segment()? {
///     println!("{} -> {}: {} bytes", segment.src, segment.dst, segment.payload.len());
/// }
/// for (name, value) in source.counters() {
///     println!("{name}: {value}");
/// }
/// # Ok(())
/// # }
/// ```
pub struct PcapSource {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The I/O error behind a failed read: pcap-parser reports only that a read failed.
    read_error: Arc<Mutex<Option<io::Error>>>,
    decoder: Decoder,
    format: PcapFormat,
    capacity: usize,
    total_bytes: Option<u64>,
    truncated_at: Option<u64>,
    done: bool,
}

impl fmt::Debug for PcapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcapSource")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("progress", &self.progress())
            .field("counters", &self.decoder.counters)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PcapSource {
    /// Opens a pcap or pcapng file (told apart by its magic number) and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref();
        let io_error = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let total_bytes = file.metadata().map_err(io_error)?.len();
        Self::from_reader(path, file, Some(total_bytes))
    }

    /// Reads a capture from any byte stream; `name` names it in errors, `total_bytes` is its
    /// length, if known, for [`Self::progress`] and to tell a cut-off last record from a
    /// corrupt length field.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        input: impl Read + Send + 'static,
        total_bytes: Option<u64>,
    ) -> Result<Self, SourceError> {
        let path = name.into();
        let read_error = Arc::new(Mutex::new(None));
        let tracked = TrackedRead {
            inner: input,
            error: Arc::clone(&read_error),
        };
        let reader = match create_reader(INITIAL_BUFFER, tracked) {
            Ok(reader) => reader,
            Err(PcapError::ReadError) => {
                return Err(SourceError::Io {
                    source: take_read_error(&read_error),
                    path,
                });
            }
            Err(error) => {
                let reason = match error {
                    PcapError::Eof => "the file is empty".to_owned(),
                    PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
                        "too short for a pcap or pcapng header".to_owned()
                    }
                    PcapError::HeaderNotRecognized => {
                        "it starts with neither a pcap magic number nor a pcapng section header"
                            .to_owned()
                    }
                    other => describe(&other),
                };
                return Err(SourceError::NotCapture { path, reason });
            }
        };
        let mut source = Self {
            path,
            reader,
            read_error,
            decoder: Decoder::default(),
            // Replaced below from the file's header block.
            format: PcapFormat::PcapNg,
            capacity: INITIAL_BUFFER,
            total_bytes,
            truncated_at: None,
            done: false,
        };
        // The first block is always the file header (create_reader checked that it parses),
        // so no packet can be passed over here.
        while source.decoder.format.is_none() {
            if let Progress::End = source.step()? {
                return Err(SourceError::NotCapture {
                    path: source.path,
                    reason: "no file header".to_owned(),
                });
            }
        }
        if let Some(format) = source.decoder.format {
            source.format = format;
        }
        Ok(source)
    }

    /// The next TCP segment, or `None` at the end of the file. After an error the stream is
    /// over: later calls return `None`.
    pub fn next_segment(&mut self) -> Result<Option<TcpSegment>, SourceError> {
        while !self.done {
            match self.step()? {
                Progress::Segment(segment) => return Ok(Some(segment)),
                Progress::Continue => {}
                Progress::End => break,
            }
        }
        Ok(None)
    }

    /// Bytes of the file consumed so far, and the file's size (0 if unknown).
    pub fn progress(&self) -> (u64, u64) {
        (self.reader.consumed() as u64, self.total_bytes.unwrap_or(0))
    }

    /// The counters by name (see [`PcapCounters`]).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.decoder.counters.named()
    }

    pub fn stats(&self) -> &PcapCounters {
        &self.decoder.counters
    }

    pub fn format(&self) -> PcapFormat {
        self.format
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the record starts that the file ends inside of, if it does.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// One block decoded, or one buffer operation done.
    fn step(&mut self) -> Result<Progress, SourceError> {
        // Turn the parser's answer into owned values first: its error borrows the buffer,
        // which has to be mutated next.
        let next = match self.reader.next() {
            Ok((len, block)) => Next::Block(len, self.decoder.block(block)),
            Err(PcapError::Eof) => Next::Eof,
            Err(PcapError::Incomplete(_)) => Next::Incomplete,
            Err(PcapError::BufferTooSmall) => Next::BufferTooSmall,
            Err(PcapError::UnexpectedEof) => Next::UnexpectedEof,
            Err(PcapError::ReadError) => Next::ReadError,
            Err(other) => Next::Corrupt(describe(&other)),
        };
        match next {
            Next::Block(len, segment) => {
                self.reader.consume(len);
                Ok(segment.map_or(Progress::Continue, Progress::Segment))
            }
            Next::Eof => {
                self.done = true;
                Ok(Progress::End)
            }
            Next::Incomplete => self.refill(),
            Next::BufferTooSmall => self.grow(),
            Next::UnexpectedEof => Ok(self.truncated()),
            Next::ReadError => Err(self.read_failed()),
            Next::Corrupt(reason) => {
                self.done = true;
                Err(SourceError::Corrupt {
                    path: self.path.clone(),
                    offset: self.reader.consumed() as u64,
                    reason,
                })
            }
        }
    }

    fn refill(&mut self) -> Result<Progress, SourceError> {
        let before = self.reader.data().len();
        if self.reader.refill().is_err() {
            return Err(self.read_failed());
        }
        if self.reader.data().len() == before && !self.reader.reader_exhausted() {
            // A full buffer, and the parser wants more without saying how much.
            return self.grow();
        }
        Ok(Progress::Continue)
    }

    /// The record at the start of the buffer needs more than the buffer's capacity.
    fn grow(&mut self) -> Result<Progress, SourceError> {
        let offset = self.reader.consumed() as u64;
        // With fewer bytes left in the file than that, the record is a cut-off last one (its
        // length field may be garbage): no need to grow to find out.
        let remaining = self.total_bytes.map(|total| total.saturating_sub(offset));
        if remaining.is_some_and(|remaining| remaining < self.capacity as u64) {
            return Ok(self.truncated());
        }
        if self.capacity >= MAX_RECORD {
            self.done = true;
            return Err(SourceError::Corrupt {
                path: self.path.clone(),
                offset,
                reason: format!("a record larger than {} MiB", MAX_RECORD >> 20),
            });
        }
        self.capacity = self.capacity.saturating_mul(2).min(MAX_RECORD);
        self.reader.grow(self.capacity);
        Ok(Progress::Continue)
    }

    fn truncated(&mut self) -> Progress {
        let offset = self.reader.consumed() as u64;
        self.decoder.counters.truncated_file = 1;
        self.truncated_at = Some(offset);
        self.done = true;
        log::warn!(
            "{}: the file ends inside the record at byte {offset}; that record is ignored",
            self.path.display()
        );
        Progress::End
    }

    fn read_failed(&mut self) -> SourceError {
        self.done = true;
        SourceError::Io {
            path: self.path.clone(),
            source: take_read_error(&self.read_error),
        }
    }
}

impl Iterator for PcapSource {
    type Item = Result<TcpSegment, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_segment().transpose()
    }
}

enum Progress {
    Segment(TcpSegment),
    Continue,
    End,
}

/// The parser's answer, owning nothing of its buffer.
enum Next {
    Block(usize, Option<TcpSegment>),
    Eof,
    Incomplete,
    BufferTooSmall,
    UnexpectedEof,
    ReadError,
    Corrupt(String),
}

/// pcap-parser's errors without the input bytes its `Display` would dump.
fn describe(error: &PcapError<&[u8]>) -> String {
    match error {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a block or record does not parse ({kind:?})")
        }
        other => other.to_string(),
    }
}

fn take_read_error(slot: &Mutex<Option<io::Error>>) -> io::Error {
    slot.lock()
        .ok()
        .and_then(|mut error| error.take())
        .unwrap_or_else(|| io::Error::other("read failed"))
}

/// Keeps the error of a failed read, which pcap-parser replaces by a bare `ReadError`.
struct TrackedRead<R> {
    inner: R,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for TrackedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let kind = error.kind();
                    if let Ok(mut slot) = self.error.lock() {
                        *slot = Some(error);
                    }
                    return Err(kind.into());
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

/// What a packet's timestamp and link layer need from its interface.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second; `None` when `if_tsresol` does not fit in 64 bits.
    units_per_second: Option<u64>,
    /// `if_tsoffset`: seconds added to every timestamp.
    offset_seconds: i64,
    /// 0 when unlimited.
    snaplen: u32,
}

/// Block-level state: the format, the interfaces of the current section, the counters.
#[derive(Default)]
struct Decoder {
    format: Option<PcapFormat>,
    interfaces: Vec<Interface>,
    counters: PcapCounters,
    /// Simple packet blocks carry no timestamp: they get the previous packet's.
    last_ts_ns: u64,
}

impl Decoder {
    fn block(&mut self, block: PcapBlockOwned<'_>) -> Option<TcpSegment> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let nanosecond = header.is_nanosecond_precision();
                self.format = Some(PcapFormat::Pcap { nanosecond });
                self.interfaces = vec![Interface {
                    // The upper bits may carry an FCS length (LT_FCS_DATALINK_EXT); the FCS
                    // then trails the IP packet, whose own length leaves it out.
                    linktype: header.network.0 & 0xffff,
                    units_per_second: Some(if nanosecond { 1_000_000_000 } else { 1_000_000 }),
                    offset_seconds: 0,
                    snaplen: header.snaplen,
                }];
                None
            }
            PcapBlockOwned::Legacy(record) => {
                let Some(interface) = self.interfaces.first().copied() else {
                    return self.skip(Skip::BadInterface);
                };
                // Microseconds or nanoseconds. Cannot overflow: u32::MAX seconds are 4.3e18 ns
                // and u32::MAX fractions 4.3e12 ns; u64 holds 1.8e19.
                let scale = 1_000_000_000 / interface.units_per_second.unwrap_or(1_000_000).max(1);
                let ts_ns =
                    u64::from(record.ts_sec) * 1_000_000_000 + u64::from(record.ts_usec) * scale;
                self.packet(interface.linktype, ts_ns, record.data, record.origlen)
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                self.format = Some(PcapFormat::PcapNg);
                // Interface ids are per section.
                self.interfaces.clear();
                None
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                if self.interfaces.len() < MAX_INTERFACES {
                    self.interfaces.push(Interface {
                        linktype: idb.linktype.0,
                        units_per_second: units_per_second(idb.if_tsresol),
                        offset_seconds: ts_offset(&idb),
                        snaplen: idb.snaplen,
                    });
                }
                None
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let interface = usize::try_from(epb.if_id)
                    .ok()
                    .and_then(|id| self.interfaces.get(id).copied());
                let Some((interface, units_per_second)) =
                    interface.and_then(|i| Some((i, i.units_per_second?)))
                else {
                    return self.skip(Skip::BadInterface);
                };
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let ts_ns = ng_timestamp_ns(units, units_per_second, interface.offset_seconds);
                self.packet(interface.linktype, ts_ns, epb.packet_data(), epb.origlen)
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let Some(interface) = self.interfaces.first().copied() else {
                    return self.skip(Skip::BadInterface);
                };
                // The block holds min(original length, snaplen) bytes plus padding.
                let mut caplen = spb.packet_data().len();
                if interface.snaplen != 0 {
                    caplen = caplen.min(interface.snaplen as usize);
                }
                let data = spb.packet_data().get(..caplen).unwrap_or_default();
                self.packet(interface.linktype, self.last_ts_ns, data, spb.origlen)
            }
            // The obsolete Packet Block (type 2) still holds a packet: count it.
            PcapBlockOwned::NG(Block::Unknown(unknown))
                if unknown.block_type == 2 || unknown.block_type == 2u32.swap_bytes() =>
            {
                self.skip(Skip::UnsupportedBlock)
            }
            // Statistics, name resolution, secrets, custom blocks: no packets.
            PcapBlockOwned::NG(_) => None,
        }
    }

    fn skip(&mut self, skip: Skip) -> Option<TcpSegment> {
        self.counters.packets += 1;
        *self.counters.skip_counter(skip) += 1;
        None
    }

    fn packet(
        &mut self,
        linktype: i32,
        ts_ns: u64,
        data: &[u8],
        original_len: u32,
    ) -> Option<TcpSegment> {
        self.counters.packets += 1;
        self.last_ts_ns = ts_ns;
        if original_len as usize > data.len() {
            self.counters.truncated_packets += 1;
        }
        match decode(linktype, ts_ns, data, original_len) {
            Ok(segment) => {
                self.counters.tcp_segments += 1;
                if segment.missing > 0 {
                    self.counters.segments_truncated += 1;
                    self.counters.bytes_truncated += u64::from(segment.missing);
                }
                Some(segment)
            }
            Err(skip) => {
                *self.counters.skip_counter(skip) += 1;
                None
            }
        }
    }
}

/// pcapng `if_tsoffset` in the section's byte order (pcap-parser 0.17 always reads it
/// little-endian).
fn ts_offset(idb: &InterfaceDescriptionBlock<'_>) -> i64 {
    // pcap-parser reads the block type little-endian: a big-endian IDB shows up swapped.
    let big_endian = idb.block_type == IDB_MAGIC.swap_bytes();
    idb.options
        .iter()
        .filter(|option| option.code == OptionCode::IfTsoffset)
        .find_map(|option| option.value().first_chunk::<8>().copied())
        .map_or(0, |bytes| {
            if big_endian {
                i64::from_be_bytes(bytes)
            } else {
                i64::from_le_bytes(bytes)
            }
        })
}

/// pcapng `if_tsresol`: 10^-n seconds, or 2^-n with the high bit set.
fn units_per_second(tsresol: u8) -> Option<u64> {
    let exponent = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        2u64.checked_pow(exponent)
    }
}

/// A pcapng timestamp in ns since the epoch, clamped to `u64` (wide arithmetic: units can
/// be 2^64 - 1 and the offset negative).
fn ng_timestamp_ns(units: u64, units_per_second: u64, offset_seconds: i64) -> u64 {
    let per_second = i128::from(units_per_second.max(1));
    let units = i128::from(units);
    let seconds = units / per_second + i128::from(offset_seconds);
    let fraction_ns = units % per_second * 1_000_000_000 / per_second;
    let ns = seconds * 1_000_000_000 + fraction_ns;
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}

/// Why slicing stopped before a TCP header.
enum Stop {
    Skip(Skip),
    /// The data ended inside a header: snaplen if the packet was cut, else malformed.
    Short,
    /// A header's content is invalid.
    Invalid,
}

fn stop_of(error: &SliceError) -> Stop {
    match error {
        SliceError::Len(_) => Stop::Short,
        _ => Stop::Invalid,
    }
}

/// One packet record to a segment. `data` is what was captured, `original_len` the packet's
/// length on the wire.
fn decode(linktype: i32, ts_ns: u64, data: &[u8], original_len: u32) -> Result<TcpSegment, Skip> {
    let uncaptured = u64::from(original_len).saturating_sub(data.len() as u64);
    let stop = |stop: Stop| match stop {
        Stop::Skip(skip) => skip,
        Stop::Short if uncaptured > 0 => Skip::TruncatedHeaders,
        Stop::Short | Stop::Invalid => Skip::Malformed,
    };
    let packet = slice_link(linktype, data).map_err(stop)?;
    segment(&packet, ts_ns, uncaptured).map_err(stop)
}

/// Slices from the link layer down. etherparse handles Ethernet, VLAN tags and raw IP; the
/// cooked and loopback headers are fixed-size and parsed here, because etherparse's SLL
/// parser rejects ARPHRD_LOOPBACK, which `tcpdump -i any` records for traffic on `lo`.
fn slice_link(linktype: i32, data: &[u8]) -> Result<LaxSlicedPacket<'_>, Stop> {
    const IPV4: u16 = 0x0800;
    const IPV6: u16 = 0x86dd;
    let ether_type = |ether_type: u16, rest| {
        Ok(LaxSlicedPacket::from_ether_type(
            EtherType(ether_type),
            rest,
        ))
    };
    match linktype {
        linktype::ETHERNET => LaxSlicedPacket::from_ethernet(data).map_err(|_| Stop::Short),
        linktype::RAW | linktype::IPV4 | linktype::IPV6 => {
            LaxSlicedPacket::from_ip(data).map_err(|error| match error {
                LaxHeaderSliceError::Len(_) => Stop::Short,
                LaxHeaderSliceError::Content(_) => Stop::Invalid,
            })
        }
        linktype::LINUX_SLL => {
            // packet type, ARPHRD, address length, address (8), protocol.
            let (header, rest) = data.split_first_chunk::<16>().ok_or(Stop::Short)?;
            ether_type(u16::from_be_bytes([header[14], header[15]]), rest)
        }
        linktype::LINUX_SLL2 => {
            // protocol, reserved, ifindex, ARPHRD, packet type, address length, address (8).
            let (header, rest) = data.split_first_chunk::<20>().ok_or(Stop::Short)?;
            ether_type(u16::from_be_bytes([header[0], header[1]]), rest)
        }
        linktype::NULL | linktype::LOOP => {
            let (header, rest) = data.split_first_chunk::<4>().ok_or(Stop::Short)?;
            let family = if linktype == linktype::LOOP {
                u32::from_be_bytes(*header)
            } else {
                // NULL is in the byte order of the host that captured, which the file does
                // not record; a family is a small number, so the order giving one is right.
                let little = u32::from_le_bytes(*header);
                if little <= 0xffff {
                    little
                } else {
                    little.swap_bytes()
                }
            };
            match family {
                // AF_INET everywhere; AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
                2 => ether_type(IPV4, rest),
                10 | 24 | 28 | 30 => ether_type(IPV6, rest),
                _ => Err(Stop::Skip(Skip::NonIp)),
            }
        }
        _ => Err(Stop::Skip(Skip::UnsupportedLinktype)),
    }
}

/// Transport layers of protocols other than TCP: an error there makes the packet `non_tcp`.
fn other_transport(layer: Layer) -> bool {
    matches!(
        layer,
        Layer::UdpHeader
            | Layer::UdpPayload
            | Layer::Icmpv4
            | Layer::Icmpv4Timestamp
            | Layer::Icmpv4TimestampReply
            | Layer::Icmpv6
            | Layer::Igmp
    )
}

fn segment(packet: &LaxSlicedPacket<'_>, ts_ns: u64, uncaptured: u64) -> Result<TcpSegment, Stop> {
    let Some(net) = &packet.net else {
        return Err(match &packet.stop_err {
            Some((error, _)) => stop_of(error),
            None => Stop::Skip(Skip::NonIp),
        });
    };
    // `declared`: the IP payload length the IP header announces (after extension headers),
    // if it announces one.
    let (src, dst, payload, declared) = match net {
        LaxNetSlice::Ipv4(ip) => {
            let header = ip.header();
            let auth = ip.extensions().auth.map_or(0, |auth| auth.slice().len());
            let declared = usize::from(header.total_len()).checked_sub(header.slice().len() + auth);
            (
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
                ip.payload(),
                declared,
            )
        }
        LaxNetSlice::Ipv6(ip) => {
            let header = ip.header();
            // 0 is a jumbogram's (or a GSO super-packet's): no length.
            let declared = match header.payload_length() {
                0 => None,
                len => usize::from(len).checked_sub(ip.extensions().slice().len()),
            };
            (
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
                ip.payload(),
                declared,
            )
        }
        LaxNetSlice::Arp(_) => return Err(Stop::Skip(Skip::NonIp)),
    };
    let is_tcp = payload.ip_number == ip_number::TCP;
    if payload.fragmented {
        return Err(Stop::Skip(if is_tcp {
            Skip::IpFragment
        } else {
            Skip::NonTcp
        }));
    }
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        return Err(match &packet.stop_err {
            Some((error, layer)) if is_tcp || !other_transport(*layer) => stop_of(error),
            _ if is_tcp => Stop::Invalid,
            _ => Stop::Skip(Skip::NonTcp),
        });
    };

    // Payload bytes on the wire but not in the capture. When the IP header announces more
    // than was captured, the difference (at most what the capture says it cut); when the IP
    // packet is complete, the uncaptured bytes were link-layer trailer or padding; with no
    // usable IP length, all of them.
    let missing = if uncaptured == 0 {
        0
    } else if payload.incomplete {
        declared.map_or(uncaptured, |declared| {
            (declared.saturating_sub(payload.payload.len()) as u64).min(uncaptured)
        })
    } else if declared.is_some() {
        0
    } else {
        uncaptured
    };

    let flags = [
        (tcp.fin(), tcp_flags::FIN),
        (tcp.syn(), tcp_flags::SYN),
        (tcp.rst(), tcp_flags::RST),
        (tcp.psh(), tcp_flags::PSH),
        (tcp.ack(), tcp_flags::ACK),
        (tcp.urg(), tcp_flags::URG),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .fold(0, |flags, (_, bit)| flags | bit);

    Ok(TcpSegment {
        ts_ns,
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags,
        payload: tcp.payload().to_vec(),
        missing: u32::try_from(missing).unwrap_or(u32::MAX),
        skipped: false,
        upstream: None,
        tls: false,
    })
}

#[cfg(test)]
mod tests;

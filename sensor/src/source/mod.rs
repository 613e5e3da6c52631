//! Capture sources besides the live eBPF ring: capture files (pcap and pcapng).
//!
//! A source turns its input into [`TcpSegment`](crate::segment::TcpSegment)s, the unit that
//! reassembly consumes, so an imported file runs through exactly the same pipeline as live
//! traffic. Like the live path, a file source counts every packet it does not turn into a
//! segment under a named counter, and says how many payload bytes the capture did not hold.

use std::{io, path::PathBuf};

pub mod pcap;

pub use pcap::{PcapCounters, PcapFormat, PcapSource};

/// Why a capture file cannot be read (further).
///
/// Segments delivered before an error stay valid: the error only ends the stream. A file that
/// merely ends in the middle of its last record is not an error (see
/// [`PcapSource::truncated_at`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a pcap or pcapng file: {reason}")]
    NotCapture { path: PathBuf, reason: String },
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

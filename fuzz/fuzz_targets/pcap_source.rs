//! The capture-file reader on arbitrary files: no input may panic it or make it loop.
#![no_main]

use apisessions::source::PcapSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let Ok(mut source) = PcapSource::from_reader("fuzz.pcap", std::io::Cursor::new(data.to_vec()), Some(len)) else {
        return;
    };
    // Every call consumes input or ends the stream, so this terminates.
    while let Ok(Some(_segment)) = source.next_segment() {}
    let counters = source.stats();
    assert!(counters.packets >= counters.tcp_segments);
});

//! HPACK (RFC 7541): decoding the header blocks of one direction of an HTTP/2 connection.
//!
//! Written here rather than taken from a crate: the maintained HTTP/2 stacks keep theirs
//! private (`h2`), and the public ones are unmaintained or have had panics and unbounded
//! allocation on hostile input (`hpack`: RUSTSEC-2023-0084/0085; `fluke-hpack`/`loona-hpack`:
//! CVE-2024-51502). A passive decoder needs only the decoding half, which is small.
//!
//! Bounded everywhere: the dynamic table holds at most `bound` bytes (as HPACK counts them, so at
//! most `bound / 32` entries) whatever size updates the encoder sends; integers are checked; a
//! string is never longer than the block it comes from (Huffman output at most 8/5 of that).
//! Any fault returns an error and leaves the table in an unknown state: the caller stops
//! decoding the connection, as a peer would.

use std::collections::VecDeque;

/// The table size both ends start with (RFC 9113 6.5.2, SETTINGS_HEADER_TABLE_SIZE).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-entry overhead HPACK adds to a field's length (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("invalid Huffman code")]
    Huffman,
    #[error("dynamic table size {size} above the {bound} bytes kept")]
    TableTooLarge { size: usize, bound: usize },
}

/// A header field as decoded: name and value bytes.
type Field = (Box<[u8]>, Box<[u8]>);

/// The decoding context of one direction: its dynamic table.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<Field>,
    /// Sum of the entries' sizes as HPACK counts them.
    size: usize,
    /// The table's size limit, as the encoder last set it.
    max_size: usize,
    /// The largest limit accepted from the encoder.
    bound: usize,
}

impl Decoder {
    /// A decoder that accepts table sizes up to `bound` bytes.
    pub fn new(bound: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE.min(bound),
            bound,
        }
    }

    /// Decodes one complete header block, handing each field to `field` in order. The caller
    /// bounds what it keeps: a block of one-byte references to one large entry yields many
    /// large fields.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut input = block;
        while let Some(&first) = input.first() {
            if first & 0x80 != 0 {
                // Indexed field (6.1).
                let index = integer(&mut input, 7)?;
                let (name, value) = self.get(index)?;
                field(name, value);
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing (6.2.1).
                let (name, value) = self.literal(&mut input, 6)?;
                field(&name, &value);
                self.insert(name, value);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (6.3).
                let size = integer(&mut input, 5)?;
                if size > self.bound {
                    return Err(HpackError::TableTooLarge {
                        size,
                        bound: self.bound,
                    });
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // Literal without indexing or never indexed (6.2.2, 6.2.3).
                let (name, value) = self.literal(&mut input, 4)?;
                field(&name, &value);
            }
        }
        Ok(())
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.entries.len()
    }

    /// The dynamic table's size as HPACK counts it.
    pub fn table_size(&self) -> usize {
        self.size
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=STATIC_LEN => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes(), value.as_bytes()))
            }
            _ => self
                .entries
                .get(index - STATIC_LEN - 1)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    /// A literal field whose name index has a `prefix`-bit prefix.
    fn literal(&self, input: &mut &[u8], prefix: u8) -> Result<Field, HpackError> {
        let index = integer(input, prefix)?;
        let name = if index == 0 {
            string(input)?
        } else {
            self.get(index)?.0.into()
        };
        let value = string(input)?;
        Ok((name, value))
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // Not an error: the table is emptied (4.4).
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((name, value));
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with an N-bit prefix (5.1). Values past 2^28 are refused: nothing in a header
/// block is that large, and the bound keeps the arithmetic from overflowing.
fn integer(input: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, mut rest) = input.split_first().ok_or(HpackError::Truncated)?;
    let max_prefix = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value == max_prefix {
        let mut shift = 0;
        loop {
            let (&byte, after) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = after;
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *input = rest;
    Ok(value)
}

/// A string literal (5.2): its length can never pass the end of the block.
fn string(input: &mut &[u8]) -> Result<Box<[u8]>, HpackError> {
    let huffman = input.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(input, 7)?;
    if len > input.len() {
        return Err(HpackError::Truncated);
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    if huffman {
        huffman_decode(bytes).map(Vec::into_boxed_slice)
    } else {
        Ok(bytes.into())
    }
}

/// Decodes a Huffman-coded string (5.2, Appendix B). HPACK's code is canonical, so code
/// lengths alone define it: codes of one length are consecutive numbers, in symbol order.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, HpackError> {
    // The shortest code has 5 bits.
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in input {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            if len > MAX_CODE_LEN {
                return Err(HpackError::Huffman);
            }
            let offset = code.wrapping_sub(HUFFMAN.first[len]);
            if code >= HUFFMAN.first[len] && offset < HUFFMAN.count[len] {
                let symbol = HUFFMAN.symbols[HUFFMAN.start[len] + offset as usize];
                // EOS inside a string is an error (5.2).
                let byte = u8::try_from(symbol).map_err(|_| HpackError::Huffman)?;
                out.push(byte);
                (code, len) = (0, 0);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

const MAX_CODE_LEN: usize = 30;

/// The canonical code, by length: first code, how many codes, where their symbols start.
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    start: [usize; MAX_CODE_LEN + 1],
    /// Symbols by code length, then value.
    symbols: [u16; 257],
}

impl Canonical {
    const fn build(lengths: &[u8; 257]) -> Self {
        let mut count = [0u32; MAX_CODE_LEN + 1];
        let mut i = 0;
        while i < 257 {
            count[lengths[i] as usize] += 1;
            i += 1;
        }
        let mut first = [0u32; MAX_CODE_LEN + 1];
        let mut start = [0usize; MAX_CODE_LEN + 1];
        let (mut code, mut at, mut len) = (0u32, 0usize, 1);
        while len <= MAX_CODE_LEN {
            first[len] = code;
            start[len] = at;
            code = (code + count[len]) << 1;
            at += count[len] as usize;
            len += 1;
        }
        let mut symbols = [0u16; 257];
        let mut next = start;
        let mut symbol = 0;
        while symbol < 257 {
            let len = lengths[symbol] as usize;
            symbols[next[len]] = symbol as u16;
            next[len] += 1;
            symbol += 1;
        }
        Self {
            first,
            count,
            start,
            symbols,
        }
    }
}

static HUFFMAN: Canonical = Canonical::build(&CODE_LENGTHS);

/// Code length of each symbol (0-255, then EOS), RFC 7541 Appendix B.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const STATIC_LEN: usize = 61;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); STATIC_LEN] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(decoder: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        decoder
            .decode(&hex(block), |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        fields
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn integers_of_appendix_c1() {
        let mut input = &[0b0000_1010u8][..];
        assert_eq!(integer(&mut input, 5), Ok(10));
        let mut input = &[0b0001_1111u8, 0b1001_1010, 0b0000_1010][..];
        assert_eq!(integer(&mut input, 5), Ok(1337));
        assert!(input.is_empty());
        let mut input = &[42u8][..];
        assert_eq!(integer(&mut input, 8), Ok(42));
        let mut endless = &[0x1fu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..];
        assert_eq!(integer(&mut endless, 5), Err(HpackError::IntegerOverflow));
        let mut cut = &[0x1fu8, 0xff][..];
        assert_eq!(integer(&mut cut, 5), Err(HpackError::Truncated));
    }

    /// C.3: requests without Huffman coding, one context.
    #[test]
    fn requests_of_appendix_c3() {
        let mut d = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(
            decode(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!((d.table_len(), d.table_size()), (1, 57));
        assert_eq!(
            decode(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865"),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!((d.table_len(), d.table_size()), (2, 110));
        assert_eq!(
            decode(
                &mut d,
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"
            ),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!((d.table_len(), d.table_size()), (3, 164));
    }

    /// C.4: the same requests with Huffman coding.
    #[test]
    fn huffman_requests_of_appendix_c4() {
        let mut d = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(
            decode(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")[3],
            (":authority".into(), "www.example.com".into())
        );
        assert_eq!(
            decode(&mut d, "8286 84be 5886 a8eb 1064 9cbf")[4],
            ("cache-control".into(), "no-cache".into())
        );
        assert_eq!(
            decode(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            )[4],
            ("custom-key".into(), "custom-value".into())
        );
        assert_eq!((d.table_len(), d.table_size()), (3, 164));
    }

    /// C.6: responses with Huffman coding and a 256-byte table, which evicts.
    #[test]
    fn huffman_responses_with_eviction_of_appendix_c6() {
        let mut d = Decoder::new(DEFAULT_TABLE_SIZE);
        // The encoder shrinks the table to 256 bytes first.
        assert!(decode(&mut d, "3fe1 01").is_empty());
        assert_eq!(
            decode(
                &mut d,
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 \
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"
            ),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!((d.table_len(), d.table_size()), (4, 222));
        assert_eq!(
            decode(&mut d, "4883 640e ffc1 c0bf")[0],
            (":status".into(), "307".into())
        );
        assert_eq!((d.table_len(), d.table_size()), (4, 222));
        let third = decode(
            &mut d,
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        assert_eq!(third[0], (":status".into(), "200".into()));
        assert_eq!(
            third[5],
            (
                "set-cookie".into(),
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
            )
        );
        assert_eq!((d.table_len(), d.table_size()), (3, 215));
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let mut d = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut nothing = |_: &[u8], _: &[u8]| {};
        assert_eq!(
            d.decode(&[0x80], &mut nothing),
            Err(HpackError::BadIndex(0))
        );
        assert_eq!(
            d.decode(&[0xbe], &mut nothing),
            Err(HpackError::BadIndex(62))
        );
        // A string longer than the block.
        assert_eq!(
            d.decode(&[0x40, 0x05, b'a'], &mut nothing),
            Err(HpackError::Truncated)
        );
        // A table larger than the bound.
        assert_eq!(
            d.decode(&[0x3f, 0xe1, 0xff, 0x03], &mut nothing),
            Err(HpackError::TableTooLarge {
                size: 65536,
                bound: DEFAULT_TABLE_SIZE
            })
        );
        // EOS inside a string, and padding that is not all ones.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(HpackError::Huffman)
        );
        assert_eq!(huffman_decode(&[0x00]), Err(HpackError::Huffman));
        assert_eq!(huffman_decode(&[0x1f]), Ok(b"a".to_vec()));
    }

    #[test]
    fn every_byte_round_trips_through_the_code() {
        // Encode each symbol with the canonical code built from the lengths, decode it back.
        for symbol in 0..=255u16 {
            let len = CODE_LENGTHS[symbol as usize] as usize;
            let index = HUFFMAN.symbols
                [HUFFMAN.start[len]..HUFFMAN.start[len] + HUFFMAN.count[len] as usize]
                .iter()
                .position(|s| *s == symbol)
                .unwrap();
            let code = u64::from(HUFFMAN.first[len]) + index as u64;
            // Left-align into bytes, pad with ones.
            let total = len.div_ceil(8) * 8;
            let bits = code << (total - len) | ((1u64 << (total - len)) - 1);
            let bytes: Vec<u8> = (0..total / 8)
                .rev()
                .map(|i| (bits >> (i * 8)) as u8)
                .collect();
            assert_eq!(huffman_decode(&bytes), Ok(vec![symbol as u8]), "{symbol}");
        }
    }
}

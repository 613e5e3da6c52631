//! Content decoding (gzip, deflate, br) for later stages that read JSON or form bodies.
//!
//! Output is bounded: a small compressed body can expand to gigabytes (a decompression bomb),
//! so decoding stops at `limit` bytes and says the result is cut.

use std::io::Read as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentError {
    #[error("unsupported content encoding '{0}'")]
    Unsupported(String),
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
}

/// A decoded body.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    /// Decoding stopped at the limit; more output would have followed.
    pub cut: bool,
}

/// Decodes `body` as declared by a Content-Encoding value (codings applied in order, so they are
/// undone in reverse). `identity` or an empty value returns the body as it is (cut to `limit`).
pub fn decode(body: &[u8], content_encoding: &str, limit: usize) -> Result<Decoded, ContentError> {
    let mut data = body.to_vec();
    let mut cut = false;
    let codings: Vec<String> = content_encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    for coding in codings.iter().rev() {
        let decoded = match coding.as_str() {
            "gzip" | "x-gzip" => {
                read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit, "gzip")?
            }
            "deflate" => inflate(&data, limit)?,
            "br" => read_bounded(brotli::Decompressor::new(&data[..], 4096), limit, "br")?,
            other => return Err(ContentError::Unsupported(other.to_owned())),
        };
        cut |= decoded.cut;
        data = decoded.bytes;
    }
    if data.len() > limit {
        data.truncate(limit);
        cut = true;
    }
    Ok(Decoded { bytes: data, cut })
}

/// "deflate" is zlib-wrapped by the RFC, but some servers send raw deflate: try both.
fn inflate(data: &[u8], limit: usize) -> Result<Decoded, ContentError> {
    read_bounded(flate2::read::ZlibDecoder::new(data), limit, "deflate")
        .or_else(|_| read_bounded(flate2::read::DeflateDecoder::new(data), limit, "deflate"))
}

fn read_bounded(
    reader: impl std::io::Read,
    limit: usize,
    encoding: &'static str,
) -> Result<Decoded, ContentError> {
    let mut bytes = Vec::new();
    // One byte past the limit tells whether there was more.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ContentError::Corrupt {
            encoding,
            reason: e.to_string(),
        })?;
    let cut = bytes.len() > limit;
    bytes.truncate(limit);
    Ok(Decoded { bytes, cut })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn decodes_gzip_deflate_and_br() {
        let text = br#"{"user":{"id":42}}"#;
        assert_eq!(decode(&gzip(text), "gzip", 1024).unwrap().bytes, text);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(text).unwrap();
        assert_eq!(
            decode(&zlib.finish().unwrap(), "deflate", 1024)
                .unwrap()
                .bytes,
            text
        );
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &text[..], &mut br, &Default::default()).unwrap();
        assert_eq!(decode(&br, "br", 1024).unwrap().bytes, text);
        assert_eq!(decode(text, "identity", 1024).unwrap().bytes, text);
        assert_eq!(
            decode(&gzip(&gzip(text)), "gzip, gzip", 1024)
                .unwrap()
                .bytes,
            text
        );
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        let decoded = decode(&bomb, "gzip", 64 * 1024).unwrap();
        assert_eq!(decoded.bytes.len(), 64 * 1024);
        assert!(decoded.cut);
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_errors() {
        assert!(matches!(
            decode(b"not gzip", "gzip", 100),
            Err(ContentError::Corrupt { .. })
        ));
        assert_eq!(
            decode(b"x", "zstd", 100),
            Err(ContentError::Unsupported("zstd".into()))
        );
    }
}

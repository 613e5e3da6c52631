//! SQL injection and XSS through libinjection (the `libinjectionrs` port: pure Rust, no build-time
//! download, checked by its authors against the C library's own test files and by differential
//! fuzzing against it). libinjection tokenises a value the way SQL and HTML parsers would and
//! compares the token shape with known injection fingerprints, which is what keeps it quiet on
//! prose that merely contains SQL words or angle brackets.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// What libinjection found in a value.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// SQL injection, with libinjection's fingerprint (the token shape, e.g. `s&sos`).
    Sqli(String),
    Xss,
}

/// Decides cheaply which values are worth libinjection's tokeniser.
pub struct Gate {
    /// SQL words that can make an injection out of letters and spaces alone (`1 union select
    /// 1`); a value without them and without punctuation cannot be SQL injection.
    sql_words: AhoCorasick,
    /// Words found in SQL injections and hardly anywhere else, for header values.
    strong_sql_words: AhoCorasick,
}

const STRONG_SQL_WORDS: &[&str] = &[
    "select",
    "union",
    "sleep",
    "benchmark",
    "waitfor",
    "pg_sleep",
    "extractvalue",
    "updatexml",
    "information_schema",
    "concat",
    "char(",
    "chr(",
];

const SQL_WORDS: &[&str] = &[
    "select",
    "union",
    "sleep",
    "benchmark",
    "waitfor",
    "delay",
    "exec",
    "insert",
    "update",
    "delete",
    "drop",
    "order",
    "group",
    "having",
    "where",
    "from",
    "and",
    "or",
    "xor",
    "not",
    "like",
    "regexp",
    "rlike",
    "procedure",
    "case",
    "when",
    "pg_sleep",
    "into",
    "limit",
    "div",
];

/// Fingerprints libinjection reports for ordinary text and that carry no injection on their
/// own: a number or a word followed by a comment (`50% off -- today only`). An injection
/// that comments out the rest of a query has a quote or an operator before the comment
/// (`admin'--` is `sc`), which stays reported.
const PROSE_FINGERPRINTS: &[&str] = &["1c", "nc"];

/// A fingerprint of words and keywords only (`To use BLAKE3 from Rust code` is `nTnkn`): a
/// sentence. An injection needs a quote, an operator, a bracket, a comment, `;` or UNION to
/// leave the value it sits in, and each has its own letter in a fingerprint.
fn is_prose(fingerprint: &str) -> bool {
    PROSE_FINGERPRINTS.contains(&fingerprint)
        || fingerprint.bytes().all(|b| matches!(b, b'n' | b'k' | b'T'))
}

/// Backtick-quoted plain identifiers unquoted (`` `name` `` to `name`): Markdown's inline code
/// looks like MySQL's quoted identifiers to libinjection, and unquoting keeps an injection's
/// shape (`` union select `password` `` is still `union select password`).
fn unquote_identifiers(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !bytes.contains(&b'`') {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let word = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            if word > 0 && bytes.get(i + 1 + word) == Some(&b'`') {
                out.extend_from_slice(&bytes[i + 1..i + 1 + word]);
                i += word + 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

impl Gate {
    pub fn new() -> Result<Self, aho_corasick::BuildError> {
        let sql_words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(SQL_WORDS)?;
        let strong_sql_words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(STRONG_SQL_WORDS)?;
        Ok(Self {
            sql_words,
            strong_sql_words,
        })
    }

    /// SQL injection by libinjection, for values that could hold one. `header`: a header value
    /// (User-Agent, Referer...), whose ordinary punctuation (`;`, `(`, `/`) says nothing: it
    /// goes to libinjection only with a quote, `=`, a comment or an SQL word in it.
    pub fn sqli(&self, value: &str, header: bool) -> Option<Verdict> {
        let bytes = value.as_bytes();
        let worth = if header {
            bytes
                .iter()
                .any(|b| matches!(b, b'\'' | b'"' | b'`' | b'=' | b'#'))
                || memchr::memmem::find(bytes, b"--").is_some()
                || memchr::memmem::find(bytes, b"/*").is_some()
                || self.strong_sql_words.is_match(bytes)
        } else {
            bytes
                .iter()
                .any(|b| !b.is_ascii_alphanumeric() && *b != b' ' && *b != b'_' && *b != b'.')
                || (bytes.contains(&b' ') && self.sql_words.is_match(bytes))
        };
        if !worth {
            return None;
        }
        let unquoted = unquote_identifiers(bytes);
        let result = libinjectionrs::detect_sqli(&unquoted);
        let injection = result.is_injection();
        let fingerprint = result
            .fingerprint
            .map(|f| f.to_string())
            .unwrap_or_default();
        (injection && !is_prose(&fingerprint)).then_some(Verdict::Sqli(fingerprint))
    }

    /// XSS by libinjection, for values holding markup or attribute-breaking characters.
    /// `header`: a header value, where `:` and `=` are ordinary (a Referer's URL): only markup
    /// and quotes count there.
    pub fn xss(&self, value: &str, header: bool) -> Option<Verdict> {
        let bytes = value.as_bytes();
        let worth = |b: &u8| match b {
            b'<' | b'>' | b'"' | b'\'' | b'`' => true,
            b'=' | b':' => !header,
            _ => false,
        };
        if !bytes.iter().any(worth) {
            return None;
        }
        libinjectionrs::detect_xss(bytes)
            .is_injection()
            .then_some(Verdict::Xss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_injections_and_prose() {
        let gate = Gate::new().unwrap();
        for sqli in [
            "1' OR '1'='1",
            "1 UNION SELECT username, password FROM users--",
            "1 union select 1",
            "1) AND SLEEP(5)#",
            "'; DROP TABLE users; --",
            "1 AND 1=1",
            "1 union select `password` from `users`",
            "admin'--",
        ] {
            assert!(
                matches!(gate.sqli(sqli, false), Some(Verdict::Sqli(_))),
                "{sqli}"
            );
        }
        for prose in [
            "O'Reilly",
            "select a plan that fits",
            "Tom and Jerry or Spike",
            "42",
            "john.doe@example.com",
            "add a dependency on the `blake3` crate to",
            "50% off -- today only",
            "To use BLAKE3 from Rust code, add a dependency on the `blake3` crate to",
        ] {
            assert_eq!(gate.sqli(prose, false), None, "{prose}");
        }
        for xss in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg/onload=alert(1)>",
        ] {
            assert_eq!(gate.xss(xss, false), Some(Verdict::Xss), "{xss}");
        }
        for text in [
            "a < b and c > d",
            "5 > 3",
            "key=value",
            "https://example.com/a",
        ] {
            assert_eq!(gate.xss(text, false), None, "{text}");
        }
    }
}

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
        let result = libinjectionrs::detect_sqli(bytes);
        result.is_injection().then(|| {
            Verdict::Sqli(
                result
                    .fingerprint
                    .map(|f| f.to_string())
                    .unwrap_or_default(),
            )
        })
    }

    /// XSS by libinjection, for values holding markup or attribute-breaking characters.
    pub fn xss(&self, value: &str) -> Option<Verdict> {
        let bytes = value.as_bytes();
        if !bytes
            .iter()
            .any(|b| matches!(b, b'<' | b'>' | b'"' | b'\'' | b'`' | b'=' | b':'))
        {
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
        ] {
            assert_eq!(gate.sqli(prose, false), None, "{prose}");
        }
        for xss in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg/onload=alert(1)>",
        ] {
            assert_eq!(gate.xss(xss), Some(Verdict::Xss), "{xss}");
        }
        for text in [
            "a < b and c > d",
            "5 > 3",
            "key=value",
            "https://example.com/a",
        ] {
            assert_eq!(gate.xss(text), None, "{text}");
        }
    }
}

//! Undoing the encodings attackers use to slip past pattern matching.
//!
//! Every step is bounded: percent-decoding repeats only while it changes something and at most
//! [`MAX_URL_DECODES`] times, and each step's output is never longer than its input.

use std::borrow::Cow;

/// Percent-decoding passes: a value encoded twice (`%2527`) is common evasion; three covers
/// triple encoding without letting a hostile value make us loop.
pub const MAX_URL_DECODES: usize = 3;

/// `value` percent-decoded while that changes it (at most [`MAX_URL_DECODES`] passes), with NUL
/// bytes removed (`%00` truncates strings in C back ends and splits keywords for filters).
/// Invalid UTF-8 after decoding is replaced, as the excerpt is text.
pub fn url_decoded(value: &str) -> Cow<'_, str> {
    let mut current = Cow::Borrowed(value);
    for _ in 0..MAX_URL_DECODES {
        if !current.as_bytes().contains(&b'%') {
            break;
        }
        let decoded = percent_decode(current.as_bytes());
        if decoded.as_bytes() == current.as_bytes() {
            break;
        }
        current = Cow::Owned(decoded);
    }
    if current.as_bytes().contains(&0) {
        current = Cow::Owned(current.replace('\0', ""));
    }
    current
}

/// One pass of `%XX` decoding; malformed escapes stay as they are.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        // IIS's `%u0027` form, still accepted by some stacks and used by evasion lists.
        if b == b'%'
            && matches!(bytes.get(i + 1), Some(b'u' | b'U'))
            && let Some(code) = bytes
                .get(i + 2..i + 6)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
        {
            let mut buf = [0; 4];
            out.extend_from_slice(code.encode_utf8(&mut buf).as_bytes());
            i += 6;
            continue;
        }
        out.push(b);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// HTML character references decoded (`&lt;`, `&#60;`, `&#x3c;`, with or without the `;`), the
/// way a browser reads them inside an attribute: what XSS payloads use to hide `<` and `javascript:`.
/// Only the named references that matter for markup are known; others stay.
pub fn html_decoded(value: &str) -> Cow<'_, str> {
    if !value.contains('&') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match reference(after) {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character a reference (the text after `&`) stands for, and how many bytes it used.
fn reference(after: &str) -> Option<(char, usize)> {
    let bytes = after.as_bytes();
    if bytes.first() == Some(&b'#') {
        let (radix, start) = match bytes.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        // Leading zeros are legal and a classic padding trick (`&#0000060`); cap the digits.
        let digits = bytes[start..]
            .iter()
            .take(12)
            .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
            .count();
        if digits == 0 {
            return None;
        }
        let code = u32::from_str_radix(&after[start..start + digits], radix).ok()?;
        let c = char::from_u32(code)?;
        let used = start + digits + usize::from(bytes.get(start + digits) == Some(&b';'));
        return Some((c, used));
    }
    const NAMED: &[(&str, char)] = &[
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("amp", '&'),
        ("colon", ':'),
        ("lpar", '('),
        ("rpar", ')'),
        ("sol", '/'),
        ("tab", '\t'),
        ("newline", '\n'),
        ("equals", '='),
    ];
    NAMED.iter().find_map(|&(name, c)| {
        let candidate = after.get(..name.len())?;
        candidate.eq_ignore_ascii_case(name).then(|| {
            let used = name.len() + usize::from(bytes.get(name.len()) == Some(&b';'));
            (c, used)
        })
    })
}

/// The value as a browser would read it in markup: HTML references decoded, and the tabs and
/// line breaks it ignores inside URL schemes (`jav&#x09;ascript:`) removed.
pub fn for_xss(value: &str) -> Cow<'_, str> {
    let decoded = html_decoded(value);
    if decoded.bytes().any(|b| matches!(b, b'\t' | b'\n' | b'\r')) {
        Cow::Owned(decoded.replace(['\t', '\n', '\r'], ""))
    } else {
        decoded
    }
}

/// At most `max` bytes of `text` around byte `at`, cut on char boundaries: a long value's
/// excerpt shows where the match is, not only how the value starts.
pub fn excerpt(text: &str, at: usize, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = at
        .saturating_sub(max / 4)
        .min(text.len().saturating_sub(max));
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + max).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[start..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding_repeats_while_it_changes_and_stops() {
        assert_eq!(url_decoded("plain"), "plain");
        assert_eq!(url_decoded("%27%20OR%201%3D1"), "' OR 1=1");
        assert_eq!(url_decoded("%2527"), "'");
        assert_eq!(url_decoded("%252527"), "'");
        // A fourth level stays encoded: the bound.
        assert_eq!(url_decoded("%25252527"), "%27");
        assert_eq!(url_decoded("%u0027or"), "'or");
        assert_eq!(url_decoded("a%00b"), "ab");
        assert_eq!(url_decoded("100%"), "100%");
        assert_eq!(url_decoded("%zz%4"), "%zz%4");
        assert_eq!(url_decoded("%ff"), "\u{fffd}");
    }

    #[test]
    fn html_references_decode() {
        assert_eq!(html_decoded("&lt;script&gt;"), "<script>");
        assert_eq!(html_decoded("java&#x73;cript&colon;"), "javascript:");
        assert_eq!(html_decoded("&#0000060;img"), "<img");
        assert_eq!(html_decoded("&#60img"), "<img");
        assert_eq!(html_decoded("Tom & Jerry &copy;"), "Tom & Jerry &copy;");
        assert_eq!(html_decoded("&#xffffffff;&#;"), "&#xffffffff;&#;");
    }

    #[test]
    fn excerpts_are_bounded_and_on_char_boundaries() {
        let text = "é".repeat(200);
        for at in [0, 1, 100, 399, 400] {
            let cut = excerpt(&text, at, 128);
            assert!(cut.len() <= 128 && !cut.is_empty());
        }
        assert_eq!(excerpt("short", 2, 128), "short");
        let long = format!("{}<script>", "a".repeat(500));
        assert!(excerpt(&long, 500, 128).contains("<script>"));
    }
}

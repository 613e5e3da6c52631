//! Endpoint templates: the path of a request with its identifiers replaced, so that
//! `/users/42/orders` and `/users/7/orders` count as one endpoint, `/users/{id}/orders`.
//!
//! An endpoint is a name that sessions count and the store indexes, so it is bounded: a
//! segment longer than [`MAX_SEGMENT`] becomes `{long}` (no API names a resource that way, but
//! probes and overflow attempts do), and a template longer than [`MAX_ENDPOINT`] is cut and ends
//! in `…`.

/// Longest path segment kept as it is.
pub const MAX_SEGMENT: usize = 64;
/// Longest template, in bytes, the cut marker included.
pub const MAX_ENDPOINT: usize = 256;
const CUT_MARKER: &str = "…";
/// The placeholder the template learner (`analysis::inventory::templates`) writes for a
/// segment position whose values vary (user names, slugs, e-mails): the second pass after this
/// module's, which the store recognises to keep learned templates in a few bytes.
pub const PARAM: &str = "{param}";

/// The templated path of `uri` (query and fragment dropped).
pub fn template(uri: &str) -> String {
    let path = path_of(uri);
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len().min(MAX_ENDPOINT));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(classify(segment).unwrap_or(segment));
        if out.len() > MAX_ENDPOINT {
            break;
        }
    }
    if out.len() > MAX_ENDPOINT {
        let mut cut = MAX_ENDPOINT - CUT_MARKER.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(CUT_MARKER);
    }
    out
}

/// The path of a request target: origin-form as it is, absolute-form (`http://host/path`, sent
/// to proxies) without scheme and authority; query and fragment dropped. Only a target that
/// starts with a scheme is absolute-form: `://` further on (`/go?next=http://…`) is data.
fn path_of(uri: &str) -> &str {
    let path = match scheme_len(uri) {
        Some(scheme) => {
            let rest = &uri[scheme + 3..];
            rest.find(['/', '?', '#']).map_or("", |i| &rest[i..])
        }
        None => uri,
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The length of the scheme when `uri` starts with `scheme://` (RFC 3986: a letter, then
/// letters, digits, `+`, `-`, `.`).
fn scheme_len(uri: &str) -> Option<usize> {
    let end = uri.find("://")?;
    let scheme = &uri.as_bytes()[..end];
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some(end)
}

/// The placeholder for a path segment that is an identifier, if it is one.
fn classify(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return None;
    }
    if segment.len() > MAX_SEGMENT {
        return Some("{long}");
    }
    let bytes = segment.as_bytes();
    if bytes.iter().all(u8::is_ascii_digit) {
        return Some("{id}");
    }
    if is_uuid(bytes) {
        return Some("{uuid}");
    }
    if bytes.len() >= 16
        && bytes.iter().all(u8::is_ascii_hexdigit)
        && bytes.iter().any(u8::is_ascii_digit)
    {
        return Some("{hash}");
    }
    // Long tokens mixing letters and digits (base62/base64 ids, ULIDs, slugs with ids).
    let alnum = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if alnum && bytes.len() >= 20 && digits >= 2 {
        return Some("{id}");
    }
    None
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::{MAX_ENDPOINT, MAX_SEGMENT, template};

    #[test]
    fn identifiers_become_placeholders() {
        let cases = [
            ("/users/42", "/users/{id}"),
            ("/users/42/orders?page=2", "/users/{id}/orders"),
            ("/api/v2/items", "/api/v2/items"),
            (
                "/files/550e8400-e29b-41d4-a716-446655440000",
                "/files/{uuid}",
            ),
            ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{hash}"),
            ("/t/01HF3Z8K9Q2W7R4M5N6P8S0T1V", "/t/{id}"),
            ("/static/application.css", "/static/application.css"),
            ("/", "/"),
            ("", "/"),
            ("http://api.example/users/5?x", "/users/{id}"),
            ("/a//b/", "/a//b/"),
            ("/deadbeef", "/deadbeef"),
            // Absolute-form only with a scheme at the start.
            ("https://api.example", "/"),
            ("http://api.example?x=1", "/"),
            ("svn+ssh://h/repo/7", "/repo/{id}"),
            ("/get?next=http://evil.test/a/b/c", "/get"),
            ("/r#frag://x", "/r"),
            ("/a://b/c", "/a://b/c"),
            ("1http://h/x", "1http://h/x"),
        ];
        for (uri, expected) in cases {
            assert_eq!(template(uri), expected, "{uri}");
        }
    }

    #[test]
    fn long_segments_and_long_paths_are_bounded() {
        let at = "s".repeat(MAX_SEGMENT);
        assert_eq!(template(&format!("/x/{at}")), format!("/x/{at}"));
        let past = "s".repeat(MAX_SEGMENT + 1);
        assert_eq!(template(&format!("/x/{past}/y")), "/x/{long}/y");
        assert_eq!(template(&format!("/{}", "a".repeat(600))), "/{long}");

        // Many short segments: cut at the bound, marked.
        let many = "/abcdefgh".repeat(100);
        let t = template(&many);
        assert!(t.len() <= MAX_ENDPOINT, "{}", t.len());
        assert!(t.ends_with('…'));
        assert!(many.starts_with(t.trim_end_matches('…')));

        // Exactly at the bound: kept whole; one byte more: cut.
        let exact = "/abcdefg".repeat(MAX_ENDPOINT / 8);
        assert_eq!(exact.len(), MAX_ENDPOINT);
        assert_eq!(template(&exact), exact);
        let t = template(&format!("{exact}h"));
        assert!(t.len() <= MAX_ENDPOINT && t.ends_with('…'), "{t}");
        // Multi-byte characters are never split.
        let wide = "/é".repeat(200);
        let t = template(&wide);
        assert!(t.len() <= MAX_ENDPOINT && t.ends_with('…'));
    }
}

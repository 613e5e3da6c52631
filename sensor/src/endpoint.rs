//! Endpoint templates: the path of a request with its identifiers replaced, so that
//! `/users/42/orders` and `/users/7/orders` count as one endpoint, `/users/{id}/orders`.

/// The templated path of `uri` (query and fragment dropped).
pub fn template(uri: &str) -> String {
    // Absolute-form request targets (proxies): keep only the path.
    let path = match uri.find("://") {
        Some(scheme_end) => uri[scheme_end + 3..]
            .find('/')
            .map_or("/", |i| &uri[scheme_end + 3 + i..]),
        None => uri,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(classify(segment).unwrap_or(segment));
    }
    out
}

/// The placeholder for a path segment that is an identifier, if it is one.
fn classify(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return None;
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
    use super::template;

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
        ];
        for (uri, expected) in cases {
            assert_eq!(template(uri), expected, "{uri}");
        }
    }
}

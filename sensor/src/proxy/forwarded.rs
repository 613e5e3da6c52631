//! Forwarding headers: who a proxy says the client is.
//!
//! Two shapes: RFC 7239 `Forwarded` (`for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"`) and
//! a comma-separated address list (`X-Forwarded-For`; `X-Real-IP` and its kin are lists of one).
//! Every value is client input: a proxy appends to what the client sent, so only the right end
//! of a list was written by proxies the operator trusts. [`resolve`] walks from the right and
//! stops at the first address that is not a trusted proxy: that is the client.
//!
//! Bounds: only the last [`MAX_ENTRIES`] entries of a header are kept (the ones a resolution can
//! reach through a sane chain of proxies); the work is one pass over the header text, which the
//! decoder already caps (`max_head_bytes`).

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use crate::exchange::MessageMeta;

/// Entries kept per header, from its right end.
pub const MAX_ENTRIES: usize = 32;

/// One hop named in a forwarding header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// An address, with its port or 0 where none (or an obfuscated one) was given.
    Addr(SocketAddr),
    /// `unknown`, an obfuscated identifier (`_hidden`), an element without `for=`, or garbage:
    /// the chain cannot be followed past it.
    Unknown,
}

/// The hops a header names, left (farthest) to right (nearest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nodes {
    pub list: VecDeque<Node>,
    /// Entries left of the kept ones were dropped (the header had more than [`MAX_ENTRIES`]).
    pub cut: bool,
}

impl Nodes {
    fn push(&mut self, node: Node) {
        if self.list.len() == MAX_ENTRIES {
            self.list.pop_front();
            self.cut = true;
        }
        self.list.push_back(node);
    }
}

/// Whether `name` is parsed as RFC 7239 `Forwarded` (else as an address list).
fn is_rfc7239(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
}

/// The hops named by every instance of header `name` in `meta` (instances concatenate, as
/// RFC 9110 says for list headers); None if the message has no such header.
pub fn nodes(meta: &MessageMeta, name: &str) -> Option<Nodes> {
    // Most messages carry no forwarding header: a lookup that compares lengths first says so
    // without the walk over every header below.
    meta.header(name)?;
    let mut nodes: Option<Nodes> = None;
    for (_, value) in meta
        .all_headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        let nodes = nodes.get_or_insert_with(Nodes::default);
        if is_rfc7239(name) {
            parse_forwarded(value, nodes);
        } else {
            parse_list(value, nodes);
        }
    }
    nodes
}

/// `X-Forwarded-For`-style: addresses separated by commas. Empty entries are skipped.
pub fn parse_list(value: &str, out: &mut Nodes) {
    for entry in value.split(',') {
        let entry = entry.trim();
        if !entry.is_empty() {
            out.push(parse_node(entry));
        }
    }
}

/// RFC 7239: elements separated by commas, pairs by semicolons, values tokens or quoted
/// strings (which may hold either separator). Each element yields its `for=` node.
pub fn parse_forwarded(value: &str, out: &mut Nodes) {
    for element in split_outside_quotes(value, b',') {
        if element.trim().is_empty() {
            continue;
        }
        let mut node = Node::Unknown;
        for pair in split_outside_quotes(element, b';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("for") {
                node = unquote(value.trim()).map_or(Node::Unknown, |v| parse_node(&v));
            }
        }
        out.push(node);
    }
}

/// Pieces of `text` between `separator`s that are not inside a quoted string.
fn split_outside_quotes(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut position = 0;
    let mut quoted = false;
    let mut escaped = false;
    std::iter::from_fn(move || {
        if start > bytes.len() {
            return None;
        }
        while position < bytes.len() {
            let byte = bytes[position];
            position += 1;
            if escaped {
                escaped = false;
            } else if quoted && byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                quoted = !quoted;
            } else if byte == separator && !quoted {
                // Separators are ASCII, so both ends are char boundaries.
                let piece = text.get(start..position - 1);
                start = position;
                return piece;
            }
        }
        let piece = text.get(start..);
        start = bytes.len() + 1;
        piece
    })
}

/// A token as it is, a quoted string without its quotes and escapes; None if a quote is open.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// One node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, a bare
/// IPv6 address (as X-Forwarded-For writes them), or anything else as [`Node::Unknown`]. An
/// obfuscated port (`_abc`) counts as no port. IPv4-mapped IPv6 addresses become IPv4.
pub fn parse_node(text: &str) -> Node {
    let text = text.trim();
    let addr = |ip: IpAddr, port: u16| Node::Addr(SocketAddr::new(ip.to_canonical(), port));
    let port = |text: &str| -> Option<u16> {
        match text {
            "" => Some(0),
            p if p.starts_with('_') => Some(0),
            p if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            _ => None,
        }
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Node::Unknown;
        };
        let port = match after {
            "" => Some(0),
            after => after.strip_prefix(':').and_then(port),
        };
        return match (ip.parse::<Ipv6Addr>(), port) {
            (Ok(ip), Some(port)) => addr(IpAddr::V6(ip), port),
            _ => Node::Unknown,
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return addr(ip, 0);
    }
    // An IPv4 address with a port; a bare IPv6 address was taken above.
    match text.split_once(':') {
        Some((ip, p)) => match (ip.parse::<std::net::Ipv4Addr>(), port(p)) {
            (Ok(ip), Some(port)) if !p.is_empty() => addr(IpAddr::V4(ip), port),
            _ => Node::Unknown,
        },
        None => Node::Unknown,
    }
}

/// What a forwarding header says about the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The right-most hop that is not a trusted proxy (or, if all are, the left-most).
    Client(SocketAddr),
    /// The chain breaks (an unknown or obfuscated hop, garbage) before an untrusted address,
    /// or every kept entry is trusted but entries were cut: no client can be named.
    Unusable,
}

/// The client that `nodes` names, given which addresses are trusted proxies.
pub fn resolve(nodes: &Nodes, is_trusted: impl Fn(IpAddr) -> bool) -> Resolution {
    let mut leftmost = None;
    for node in nodes.list.iter().rev() {
        match *node {
            Node::Addr(addr) if is_trusted(addr.ip()) => leftmost = Some(addr),
            Node::Addr(addr) => return Resolution::Client(addr),
            Node::Unknown => return Resolution::Unusable,
        }
    }
    // Every hop is a trusted proxy: the first one is where the request came from, unless the
    // real first one was cut off.
    match leftmost {
        Some(addr) if !nodes.cut => Resolution::Client(addr),
        _ => Resolution::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Node {
        Node::Addr(text.parse().unwrap())
    }

    fn forwarded(value: &str) -> Vec<Node> {
        let mut nodes = Nodes::default();
        parse_forwarded(value, &mut nodes);
        nodes.list.into()
    }

    fn list(value: &str) -> Nodes {
        let mut nodes = Nodes::default();
        parse_list(value, &mut nodes);
        nodes
    }

    #[test]
    fn nodes_of_every_form() {
        let cases = [
            ("192.0.2.60", addr("192.0.2.60:0")),
            (" 192.0.2.60 ", addr("192.0.2.60:0")),
            ("192.0.2.60:4711", addr("192.0.2.60:4711")),
            ("192.0.2.60:_hidden", addr("192.0.2.60:0")),
            ("[2001:db8:cafe::17]", addr("[2001:db8:cafe::17]:0")),
            ("[2001:db8:cafe::17]:4711", addr("[2001:db8:cafe::17]:4711")),
            ("2001:db8:cafe::17", addr("[2001:db8:cafe::17]:0")),
            ("::ffff:10.0.0.1", addr("10.0.0.1:0")),
            ("[::ffff:10.0.0.1]:80", addr("10.0.0.1:80")),
            ("unknown", Node::Unknown),
            ("_hidden", Node::Unknown),
            ("_SEVKISEK", Node::Unknown),
            ("", Node::Unknown),
            ("192.0.2.60:", Node::Unknown),
            ("192.0.2.60:99999", Node::Unknown),
            ("192.0.2.60:+80", Node::Unknown),
            ("[2001:db8::1", Node::Unknown),
            ("[2001:db8::1]80", Node::Unknown),
            ("[192.0.2.1]", Node::Unknown),
            ("2001:db8::1:80:x", Node::Unknown),
            ("999.0.0.1", Node::Unknown),
            ("example.com", Node::Unknown),
            ("1.2.3.4 5.6.7.8", Node::Unknown),
            ("\u{0}\u{ff}é", Node::Unknown),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(text, want)| parse_node(text) != *want)
            .map(|(text, want)| format!("{text:?}: want {want:?}, got {:?}", parse_node(text)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn rfc7239_examples() {
        // RFC 7239 section 4 and 7.
        assert_eq!(
            forwarded(r#"for="_gazonk""#),
            [Node::Unknown],
            "obfuscated identifier"
        );
        assert_eq!(
            forwarded(r#"For="[2001:db8:cafe::17]:4711""#),
            [addr("[2001:db8:cafe::17]:4711")]
        );
        assert_eq!(
            forwarded("for=192.0.2.60;proto=http;by=203.0.113.43"),
            [addr("192.0.2.60:0")]
        );
        assert_eq!(
            forwarded("for=192.0.2.43, for=198.51.100.17"),
            [addr("192.0.2.43:0"), addr("198.51.100.17:0")]
        );
        assert_eq!(
            forwarded(r#"for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown"#),
            [
                addr("192.0.2.43:0"),
                addr("[2001:db8:cafe::17]:0"),
                Node::Unknown
            ]
        );
        // Separators inside quoted strings, escapes, empty elements and pairs, spaces.
        assert_eq!(
            forwarded(r#"by="a,b;c" ; for = "192.0.2.1" ;, , proto=https;for="\"x""#),
            [addr("192.0.2.1:0"), Node::Unknown]
        );
        // An element without for=, an unterminated quote, a pair without '='.
        assert_eq!(
            forwarded(r#"proto=https, for="192.0.2.1, for"#),
            [Node::Unknown, Node::Unknown]
        );
        assert_eq!(forwarded("for"), [Node::Unknown]);
        assert_eq!(forwarded(r#"for="192.0.2.1"x"#), [Node::Unknown]);
        assert_eq!(forwarded(""), []);
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted = |ip: IpAddr| ip.is_loopback() || ip == "10.0.0.5".parse::<IpAddr>().unwrap();
        let client = |value: &str| resolve(&list(value), trusted);
        let at = |text: &str| Resolution::Client(text.parse().unwrap());
        // A client's own entries left of the one the trusted proxies appended are ignored.
        assert_eq!(client("6.6.6.6, 203.0.113.9"), at("203.0.113.9:0"));
        assert_eq!(
            client("6.6.6.6, 203.0.113.9, 10.0.0.5"),
            at("203.0.113.9:0")
        );
        assert_eq!(
            client("203.0.113.9,127.0.0.1,10.0.0.5"),
            at("203.0.113.9:0")
        );
        // Every hop trusted: the first one.
        assert_eq!(client("127.0.0.2, 10.0.0.5"), at("127.0.0.2:0"));
        assert_eq!(client("2001:db8::1"), at("[2001:db8::1]:0"));
        // The chain breaks at garbage or an unknown hop before any untrusted address.
        assert_eq!(client("203.0.113.9, unknown"), Resolution::Unusable);
        assert_eq!(
            client("203.0.113.9, not-an-ip, 10.0.0.5"),
            Resolution::Unusable
        );
        // Garbage left of the client does not matter.
        assert_eq!(client("x, y, 203.0.113.9"), at("203.0.113.9:0"));
        assert_eq!(client(""), Resolution::Unusable);
        assert_eq!(client(" , ,"), Resolution::Unusable);
    }

    #[test]
    fn long_lists_are_cut_to_their_right_end() {
        let long: Vec<String> = (0..100_000)
            .map(|i| format!("10.1.{}.{}", i / 256 % 256, i % 256))
            .collect();
        let nodes = list(&long.join(", "));
        assert_eq!(nodes.list.len(), MAX_ENTRIES);
        assert!(nodes.cut);
        assert_eq!(nodes.list.back(), Some(&addr("10.1.134.159:0")));
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.1.");
        // All kept entries trusted, the real first one cut: nobody can be named.
        assert_eq!(resolve(&nodes, trusted), Resolution::Unusable);
        assert_eq!(
            resolve(&nodes, |_| false),
            Resolution::Client("10.1.134.159:0".parse().unwrap())
        );
        let mut many = Nodes::default();
        parse_forwarded(&"for=192.0.2.1;by=x,".repeat(10_000), &mut many);
        assert_eq!(many.list.len(), MAX_ENTRIES);
        assert!(many.cut);
    }

    #[test]
    fn header_instances_concatenate() {
        let meta = MessageMeta {
            headers: vec![
                ("X-Forwarded-For".into(), "6.6.6.6".into()),
                ("Host".into(), "a".into()),
                ("x-forwarded-for".into(), "203.0.113.9, 127.0.0.1".into()),
            ],
            ..MessageMeta::default()
        };
        let nodes = nodes(&meta, "X-Forwarded-For").unwrap();
        assert_eq!(
            Vec::from(nodes.list),
            [
                addr("6.6.6.6:0"),
                addr("203.0.113.9:0"),
                addr("127.0.0.1:0")
            ]
        );
        assert_eq!(super::nodes(&meta, "forwarded"), None);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of awkward inputs, in both parsers.
        let inputs = [
            r#"for="[2001:db8::1]:4711";proto=https, for=unknown,for="\"#,
            "é, [\u{1F600}]:1, \"quoted\", ::, [::]:65535, 255.255.255.255:0",
        ];
        for input in inputs {
            for end in (0..=input.len()).filter(|&i| input.is_char_boundary(i)) {
                let mut nodes = Nodes::default();
                parse_forwarded(&input[..end], &mut nodes);
                parse_list(&input[..end], &mut nodes);
                let _ = resolve(&nodes, |ip| ip.is_loopback());
            }
        }
    }
}

//! Sensitive data kinds: which kinds of personal data, credentials and secrets a message carries.
//! Only the kind is ever kept, never the value.
//!
//! Detection is pattern matching in linear time (`regex` automata, `aho-corasick` for field
//! names) over a bounded prefix of each input ([`MAX_SCAN`] bytes per message, the cut is
//! reported), followed by a check digit or structure test where the kind has one: a card number
//! must pass Luhn and start like a card network's numbers, an IBAN must pass ISO 7064 mod 97, an
//! SSN must not use a never-issued area, group or serial, an IPv4 address must not be part of a
//! version string. Patterns never look for data in places that always hold it for transport
//! reasons (Host, forwarding headers, Authorization and Cookie: those are what the inventory's
//! `auth` kinds describe).

use std::{fmt, net::Ipv6Addr, str::FromStr};

use hashbrown::{Equivalent, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Bytes of one message (body, or all its header and query values together) scanned at most;
/// the rest is not looked at and the result says so.
pub const MAX_SCAN: usize = 64 * 1024;

macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// A kind of sensitive data.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum SensitiveKind { $($variant,)* }

        impl SensitiveKind {
            pub const ALL: &'static [SensitiveKind] = &[$(SensitiveKind::$variant,)*];

            /// The name in JSON output and in the store.
            pub fn name(self) -> &'static str {
                match self { $(SensitiveKind::$variant => $name,)* }
            }
        }

        impl FromStr for SensitiveKind {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(SensitiveKind::$variant),)*
                    _ => Err(format!("unknown sensitive data kind '{s}'")),
                }
            }
        }
    };
}

kinds! {
    Email => "email",
    Phone => "phone",
    PaymentCard => "payment_card",
    Iban => "iban",
    UsSsn => "us_ssn",
    Jwt => "jwt",
    PrivateKey => "private_key",
    AwsAccessKey => "aws_access_key",
    GithubToken => "github_token",
    StripeKey => "stripe_key",
    SlackToken => "slack_token",
    GoogleApiKey => "google_api_key",
    Password => "password",
    IpAddress => "ip_address",
}

impl fmt::Display for SensitiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of kinds, one bit each: what the inventory keeps per endpoint and direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u16);

impl KindSet {
    pub fn insert(&mut self, kind: SensitiveKind) {
        self.0 |= 1 << kind as u8;
    }

    pub fn contains(self, kind: SensitiveKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in a fixed order (the declaration order).
    pub fn iter(self) -> impl Iterator<Item = SensitiveKind> {
        SensitiveKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(SensitiveKind::name).collect()
    }
}

impl FromIterator<SensitiveKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = SensitiveKind>>(iter: I) -> Self {
        let mut set = KindSet::default();
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

/// Serialised as the list of kind names: stable across versions that add kinds.
impl Serialize for KindSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Collected first: postcard needs the length up front.
        self.names().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KindSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names
            .iter()
            .map(|n| n.parse::<SensitiveKind>().map_err(de::Error::custom))
            .collect()
    }
}

/// What a scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub kinds: KindSet,
    /// The input was longer than [`MAX_SCAN`]: only its prefix was scanned.
    pub capped: bool,
}

impl Findings {
    pub fn merge(&mut self, other: Findings) {
        self.kinds = self.kinds.union(other.kinds);
        self.capped |= other.capped;
    }
}

/// Headers never scanned: they always carry addresses, tokens or cookies for transport or
/// authentication reasons, which the inventory reports as auth kinds, not as data.
const SKIPPED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-forwarded-for",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "via",
    "referer",
    "origin",
];

/// Field names (substrings, any ASCII case) that hold a password.
const PASSWORD_NAMES: &[&str] = &["password", "passwd", "passphrase", "pwd"];

/// The detectors, compiled once and shared (they are immutable).
pub struct Scanner {
    email: Regex,
    phone: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    ipv4: Regex,
    ipv6: Regex,
    /// Kinds that need no check beyond their pattern.
    plain: Vec<(SensitiveKind, Regex)>,
    /// `"password": "x"` in JSON, `password=x` in forms.
    password_field: Regex,
    password_names: AhoCorasick,
    /// Every pattern, in one pass: each alone costs a full scan of the text and a search's
    /// fixed cost (most texts are short header and query values), and most texts hold none of
    /// them, so the validating passes run only for those the set saw. Its indexes: the
    /// `GATE_*` constants, then `plain` in order.
    gate: RegexSet,
    /// Header lines scanned lately (name and value), with what they held: most headers repeat
    /// the same values from request to request (User-Agent, Accept, Content-Type), and a lookup
    /// costs a fraction of a scan. Bounded: emptied when full. Keyed with a randomly seeded
    /// hash: the lines are the senders'.
    header_memo: HashMap<HeaderLine, KindSet, foldhash::fast::RandomState>,
}

/// Header lines remembered by [`Scanner::header_memo`] at most, and the longest remembered
/// (name and value together).
const HEADER_MEMO_ENTRIES: usize = 4096;
const HEADER_MEMO_LINE_MAX: usize = 256;

/// A header's name and value, as [`Scanner::header_memo`] keeps them.
type HeaderLine = (Box<[u8]>, Box<[u8]>);

/// A header line looked up without copying it: hashes as [`HeaderLine`] does (a tuple hashes
/// its fields in order, a boxed slice as the slice).
#[derive(Hash)]
struct HeaderLineRef<'a>(&'a [u8], &'a [u8]);

impl Equivalent<HeaderLine> for HeaderLineRef<'_> {
    fn equivalent(&self, key: &HeaderLine) -> bool {
        *self.0 == *key.0 && *self.1 == *key.1
    }
}

/// Indexes in [`Scanner::gate`].
const GATE_PHONE: usize = 0;
const GATE_CARD: usize = 1;
const GATE_IBAN: usize = 2;
const GATE_SSN: usize = 3;
const GATE_IPV6: usize = 4;
const GATE_PASSWORD: usize = 5;
const GATE_EMAIL: usize = 6;
const GATE_IPV4: usize = 7;
const GATE_PLAIN: usize = 8;

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// A pattern written in this file; a failure to compile is a bug caught by every test. ASCII
/// semantics (`(?-u)`): word boundaries and classes over bytes keep every pattern in the DFA
/// engines, and captured bytes need not be UTF-8.
fn pattern(re: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(&format!("(?-u){re}")).expect("built-in pattern compiles")
}

impl Scanner {
    pub fn new() -> Self {
        let plain = vec![
            (
                SensitiveKind::Jwt,
                pattern(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
            ),
            (
                SensitiveKind::PrivateKey,
                pattern(
                    r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
                ),
            ),
            (
                SensitiveKind::AwsAccessKey,
                pattern(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
            ),
            (
                SensitiveKind::GithubToken,
                pattern(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b"),
            ),
            (
                SensitiveKind::StripeKey,
                pattern(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
            ),
            (
                SensitiveKind::SlackToken,
                pattern(r"\bxox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{6,}"),
            ),
            (
                SensitiveKind::GoogleApiKey,
                pattern(r"\bAIza[0-9A-Za-z_-]{35}(?:[^0-9A-Za-z_-]|$)"),
            ),
        ];
        #[allow(clippy::expect_used)]
        let password_names = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(PASSWORD_NAMES)
            .expect("built-in names compile");
        let mut scanner = Self {
            email: pattern(
                r"(?i)\b[a-z0-9][a-z0-9._%+-]{0,63}@[a-z0-9](?:[a-z0-9-]{0,62}\.)+[a-z]{2,24}\b",
            ),
            // International (+ and 8-15 digits, separators allowed) or North American
            // ((NPA) NXX-XXXX with separators). Bare digit runs are ids, not phone numbers.
            phone: pattern(
                r"\+[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}|\(?[2-9][0-9]{2}\)?[ .-][2-9][0-9]{2}[ .-][0-9]{4}",
            ),
            card: pattern(r"\b[0-9](?:[ -]?[0-9]){12,18}\b"),
            iban: pattern(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
            ssn: pattern(r"\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b"),
            ipv4: pattern(r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"),
            ipv6: pattern(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"),
            plain,
            password_field: pattern(
                r#"(?i)"[a-z0-9_.-]*(?:password|passwd|passphrase|pwd)[a-z0-9_.-]*"\s*:\s*"[^"]|(?:^|&)[a-z0-9_.%-]*(?:password|passwd|passphrase|pwd)[a-z0-9_.%-]*=[^&\s]"#,
            ),
            password_names,
            gate: RegexSet::empty(),
            header_memo: HashMap::default(),
        };
        let gated = [
            &scanner.phone,
            &scanner.card,
            &scanner.iban,
            &scanner.ssn,
            &scanner.ipv6,
            &scanner.password_field,
            &scanner.email,
            &scanner.ipv4,
        ]
        .into_iter()
        .chain(scanner.plain.iter().map(|(_, re)| re));
        #[allow(clippy::expect_used)]
        let gate = RegexSet::new(gated.map(Regex::as_str)).expect("built-in patterns compile");
        scanner.gate = gate;
        scanner
    }

    /// The kinds in free text (a body, a header value, a query value).
    pub fn scan_text(&self, input: &[u8]) -> Findings {
        let capped = input.len() > MAX_SCAN;
        let text = &input[..input.len().min(MAX_SCAN)];
        let mut kinds = KindSet::default();
        let gate = self.gate.matches(text);
        if !gate.matched_any() {
            return Findings { kinds, capped };
        }
        for (i, (kind, _)) in self.plain.iter().enumerate() {
            if gate.matched(GATE_PLAIN + i) {
                kinds.insert(*kind);
            }
        }
        if gate.matched(GATE_EMAIL) {
            kinds.insert(SensitiveKind::Email);
        }
        if gate.matched(GATE_PHONE)
            && self.phone.find_iter(text).any(|m| {
                let digits = m.as_bytes().iter().filter(|b| b.is_ascii_digit()).count();
                isolated(text, m.start(), m.end()) && (10..=15).contains(&digits)
            })
        {
            kinds.insert(SensitiveKind::Phone);
        }
        if gate.matched(GATE_CARD)
            && self
                .card
                .find_iter(text)
                .any(|m| isolated(text, m.start(), m.end()) && is_card(m.as_bytes()))
        {
            kinds.insert(SensitiveKind::PaymentCard);
        }
        if gate.matched(GATE_IBAN) && self.iban.find_iter(text).any(|m| is_iban(m.as_bytes())) {
            kinds.insert(SensitiveKind::Iban);
        }
        if gate.matched(GATE_SSN)
            && self.ssn.captures_iter(text).any(|c| {
                let whole = c.get(0).map_or((0, 0), |m| (m.start(), m.end()));
                isolated(text, whole.0, whole.1) && is_ssn(&c[1], &c[2], &c[3])
            })
        {
            kinds.insert(SensitiveKind::UsSsn);
        }
        if (gate.matched(GATE_IPV4) || gate.matched(GATE_IPV6))
            && self.has_ip(text, gate.matched(GATE_IPV4), gate.matched(GATE_IPV6))
        {
            kinds.insert(SensitiveKind::IpAddress);
        }
        if gate.matched(GATE_PASSWORD) {
            kinds.insert(SensitiveKind::Password);
        }
        Findings { kinds, capped }
    }

    /// A named value (a query parameter, a form field): the value's kinds, plus `password`
    /// when the name says it holds one and the value is not empty.
    pub fn scan_field(&self, name: &str, value: &str) -> Findings {
        let mut findings = self.scan_text(value.as_bytes());
        if !value.is_empty() && self.password_names.is_match(name) {
            findings.kinds.insert(SensitiveKind::Password);
        }
        findings
    }

    /// A message: its header values (transport and credential headers skipped, see
    /// [`SKIPPED_HEADERS`]), and its body when its content type is text (JSON, XML, forms,
    /// `text/*`) or, without one, when it looks like text. `body` is content-decoded already.
    pub fn scan_message<'a>(
        &mut self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Findings {
        let mut findings = Findings::default();
        let mut scanned = 0usize;
        for (name, value) in headers {
            if SKIPPED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                continue;
            }
            if scanned >= MAX_SCAN {
                findings.capped = true;
                break;
            }
            scanned += value.len();
            findings.merge(self.scan_header(name, value));
        }
        if !body.is_empty() && is_text(content_type, body) {
            findings.merge(self.scan_text(body));
        }
        findings
    }

    /// A header line as [`Self::scan_field`] sees a named value, remembered when short.
    fn scan_header(&mut self, name: &str, value: &str) -> Findings {
        if name.len() + value.len() > HEADER_MEMO_LINE_MAX {
            return self.scan_field(name, value);
        }
        let line = HeaderLineRef(name.as_bytes(), value.as_bytes());
        if let Some(kinds) = self.header_memo.get(&line) {
            return Findings {
                kinds: *kinds,
                capped: false,
            };
        }
        let found = self.scan_field(name, value);
        if self.header_memo.len() >= HEADER_MEMO_ENTRIES {
            self.header_memo.clear();
        }
        self.header_memo
            .insert((line.0.into(), line.1.into()), found.kinds);
        found
    }

    fn has_ip(&self, text: &[u8], ipv4_candidates: bool, ipv6_candidates: bool) -> bool {
        let v4 = ipv4_candidates
            && self.ipv4.find_iter(text).any(|m| {
                let (start, end) = (m.start(), m.end());
                // Not part of a version string or a longer dotted number (v1.2.3.4, 1.2.3.4.5).
                let before = start.checked_sub(1).map(|i| text[i]);
                let after = text.get(end..end + 2);
                let in_version = matches!(before, Some(b'v' | b'V' | b'.' | b'-'))
                    || after.is_some_and(|a| a[0] == b'.' && a[1].is_ascii_digit());
                !in_version
                    && std::str::from_utf8(m.as_bytes())
                        .ok()
                        .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
                        .is_some()
            });
        v4 || ipv6_candidates
            && self.ipv6.find_iter(text).any(|m| {
                let bytes = m.as_bytes();
                // Times (12:30:45) and MAC-like strings parse as nothing; `::` alone says little.
                let glued = m
                    .start()
                    .checked_sub(1)
                    .is_some_and(|i| text[i].is_ascii_alphanumeric())
                    || text.get(m.end()).is_some_and(u8::is_ascii_alphanumeric);
                !glued
                    && bytes.iter().filter(|b| **b == b':').count() >= 2
                    && bytes.iter().any(u8::is_ascii_hexdigit)
                    && std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|s| s.parse::<Ipv6Addr>().ok())
                        .is_some_and(|ip| !ip.is_unspecified())
            })
    }
}

/// Not glued to more digits or letters (`\b` already holds for word characters; this also
/// rejects `+` and `.` digit runs such as amounts and decimals).
fn isolated(text: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).map(|i| text[i]);
    let after = text.get(end).copied();
    let glued = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.');
    !glued(before) && !glued(after) && before != Some(b'-') && after != Some(b'-')
}

/// 13-19 digits, a card network's prefix, and the Luhn check digit.
fn is_card(candidate: &[u8]) -> bool {
    let digits: Vec<u8> = candidate
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) || !card_prefix(&digits) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Discover 6011/644-649/65, JCB 3528-3589,
/// Diners 300-305/36/38, UnionPay 62.
fn card_prefix(d: &[u8]) -> bool {
    let n = |len: usize| {
        d[..len]
            .iter()
            .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
    };
    match d[0] {
        4 => true,
        5 => (51..=55).contains(&n(2)),
        2 => (2221..=2720).contains(&n(4)),
        3 => {
            matches!(n(2), 34 | 36 | 37 | 38)
                || (300..=305).contains(&n(3))
                || (3528..=3589).contains(&n(4))
        }
        6 => n(4) == 6011 || (644..=649).contains(&n(3)) || n(2) == 65 || n(2) == 62,
        _ => false,
    }
}

/// ISO 13616: 15-34 characters, check digits by ISO 7064 mod 97-10.
fn is_iban(candidate: &[u8]) -> bool {
    let compact: Vec<u8> = candidate.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for &c in tail.iter().chain(head) {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// Area 001-899 except 666, group 01-99, serial 0001-9999 (never issued otherwise).
fn is_ssn(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// Textual content types; without one, a body whose first bytes are mostly printable text.
fn is_text(content_type: Option<&str>, body: &[u8]) -> bool {
    match content_type.map(|c| c.trim().to_ascii_lowercase()) {
        Some(ct) if !ct.is_empty() => {
            ct.starts_with("text/")
                || ct.contains("json")
                || ct.contains("xml")
                || ct.contains("x-www-form-urlencoded")
                || ct.contains("javascript")
                || ct.contains("yaml")
                || ct.contains("graphql")
        }
        _ => {
            let head = &body[..body.len().min(512)];
            let printable = head
                .iter()
                .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || **b >= 0x80)
                .count();
            printable * 10 >= head.len() * 9
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_of(text: &str) -> KindSet {
        Scanner::new().scan_text(text.as_bytes()).kinds
    }

    /// (kind, must match, must not match): each detector against values that are that kind and
    /// values that look alike and are not.
    #[test]
    fn must_match_and_must_not_match() {
        use SensitiveKind::*;
        let table: &[(SensitiveKind, &[&str], &[&str])] = &[
            (
                Email,
                &[
                    "jane.doe@example.com",
                    "{\"e\":\"a+tag@mail.co.uk\"}",
                    "X@Y.ORG",
                ],
                &[
                    "user@localhost",
                    "@handle",
                    "lodash@4.17.21",
                    "foo@bar",
                    "a@b.c",
                ],
            ),
            (
                Phone,
                &[
                    "+1 415 555 2671",
                    "+442071838750",
                    "(415) 555-2671",
                    "call 415-555-2671 now",
                    "+49 (30) 901820",
                ],
                &[
                    "2024-01-15",
                    "order 12345678901",
                    "1700000000000",
                    "v1.2.3",
                    "12:30:45",
                    "415-555-267",
                    "+12",
                ],
            ),
            (
                PaymentCard,
                &[
                    "4111111111111111",
                    "4111 1111 1111 1111",
                    "5500-0000-0000-0004",
                    "378282246310005",
                    "{\"card\":\"6011111111111117\"}",
                ],
                &[
                    "4111111111111112",
                    "1234567890123456",
                    "1700000000000000000",
                    "9999999999999995",
                    "41111111111111111111111",
                    "3.4111111111111111",
                ],
            ),
            (
                Iban,
                &[
                    "GB82 WEST 1234 5698 7654 32",
                    "DE89370400440532013000",
                    "FR1420041010050500013M02606",
                ],
                &[
                    "GB82 WEST 1234 5698 7654 33",
                    "DE89370400440532013001",
                    "AB12",
                    "US12 3456 7890",
                ],
            ),
            (
                UsSsn,
                &["123-45-6789", "ssn: 078-05-1120"],
                &[
                    "000-12-3456",
                    "666-12-3456",
                    "900-12-3456",
                    "123-00-4567",
                    "123-45-0000",
                    "2024-01-15",
                    "123-45-67890",
                    "123456789",
                ],
            ),
            (
                Jwt,
                &[
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ],
                &["eyJhbGciOiJIUzI1NiJ9", "a.b.c", "eyJ.eyJ.x"],
            ),
            (
                PrivateKey,
                &[
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                    "-----BEGIN PRIVATE KEY-----",
                    "-----BEGIN OPENSSH PRIVATE KEY-----",
                ],
                &[
                    "-----BEGIN PUBLIC KEY-----",
                    "-----BEGIN CERTIFICATE-----",
                    "private key",
                ],
            ),
            (
                AwsAccessKey,
                &["AKIAIOSFODNN7EXAMPLE", "id=ASIAY34FZKBOKMUTVV7A"],
                &[
                    "AKIAIOSFODNN7EXAMPL",
                    "XAKIAIOSFODNN7EXAMPLE",
                    "akiaiosfodnn7example",
                ],
            ),
            (
                GithubToken,
                &[
                    "ghp_abcdefghijklmnopqrstuvwxyzABCDEF0123",
                    &format!("github_pat_{}", "A1b2C3d4E5".repeat(8) + "xy"),
                ],
                &["ghp_short", "ghx_abcdefghijklmnopqrstuvwxyzABCDEF0123"],
            ),
            (
                StripeKey,
                &[
                    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                    "pk_test_TYooMQauvdEDq54NiTphI7jx",
                    "rk_live_abcdefghijklmnop",
                ],
                &[
                    "sk_live_short",
                    "sk_prod_4eC39HqLyjWDarjtT1zdp7dc",
                    "task_live_4eC39HqLyjWDarjtT1zdp7dc",
                ],
            ),
            (
                SlackToken,
                &[
                    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                    "xoxp-1234567-abcdefg",
                ],
                &["xoxz-123456789012-abc", "xoxb-", "xoxb-abc-def"],
            ),
            (
                GoogleApiKey,
                &[
                    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                    "key=AIzaSyA1234567890abcdefghijklmnopqrstuv&x",
                ],
                &["AIzaShort", "AIzaSyA1234567890abcdefghijklmnopqrstuvwxyz"],
            ),
            (
                Password,
                &[
                    "{\"password\":\"hunter2\"}",
                    "{\"new_password\" : \"x\"}",
                    "user=a&passwd=secret",
                    "Password=x",
                ],
                &[
                    "{\"password\":\"\"}",
                    "forgot your password?",
                    "password_reset=",
                    "{\"passwords_match\":true}",
                ],
            ),
            (
                IpAddress,
                &[
                    "10.0.0.1",
                    "client 192.168.1.20 connected",
                    "2001:db8::8a2e:370:7334",
                    "{\"ip\":\"::1\"}",
                ],
                &[
                    "v1.2.3.4",
                    "1.2.3.4.5",
                    "version 2.10.300.4000",
                    "999.1.1.1",
                    "12:30:45",
                    "::",
                    "1.2.3",
                ],
            ),
        ];
        let scanner = Scanner::new();
        for (kind, positives, negatives) in table {
            for text in *positives {
                let found = scanner.scan_text(text.as_bytes()).kinds;
                assert!(
                    found.contains(*kind),
                    "{kind} must match {text:?}, found {:?}",
                    found.names()
                );
            }
            for text in *negatives {
                let found = scanner.scan_text(text.as_bytes()).kinds;
                assert!(!found.contains(*kind), "{kind} must not match {text:?}");
            }
        }
    }

    #[test]
    fn fields_headers_and_bodies() {
        let mut scanner = Scanner::new();
        assert!(
            scanner
                .scan_field("password", "x")
                .kinds
                .contains(SensitiveKind::Password)
        );
        assert!(
            scanner
                .scan_field("userPwd", "x")
                .kinds
                .contains(SensitiveKind::Password)
        );
        assert!(
            !scanner
                .scan_field("password", "")
                .kinds
                .contains(SensitiveKind::Password)
        );
        assert!(
            !scanner
                .scan_field("name", "x")
                .kinds
                .contains(SensitiveKind::Password)
        );

        // Transport and credential headers are not data.
        let headers = [
            ("Host", "10.0.0.1"),
            ("X-Forwarded-For", "192.168.0.9"),
            (
                "Authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
            ),
            ("X-Contact", "jane@example.com"),
        ];
        let found = scanner.scan_message(headers, None, b"");
        assert_eq!(found.kinds.names(), ["email"]);

        // Binary content types are not scanned; JSON is.
        let body = b"{\"email\":\"jane@example.com\",\"card\":\"4111111111111111\"}";
        assert!(
            scanner
                .scan_message([], Some("image/png"), body)
                .kinds
                .is_empty()
        );
        let found = scanner.scan_message([], Some("application/json; charset=utf-8"), body);
        assert_eq!(found.kinds.names(), ["email", "payment_card"]);
        // No content type: sniffed.
        assert_eq!(
            scanner.scan_message([], None, body).kinds.names(),
            ["email", "payment_card"]
        );
        assert!(
            scanner
                .scan_message([], None, &[0u8, 1, 2, 3, 0xff, 0])
                .kinds
                .is_empty()
        );
    }

    #[test]
    fn scanning_is_bounded_and_flags_the_cut() {
        let mut big = vec![b'a'; MAX_SCAN];
        big.extend_from_slice(b" jane@example.com");
        let found = Scanner::new().scan_text(&big);
        assert!(found.capped);
        assert!(!found.kinds.contains(SensitiveKind::Email), "past the cap");
        let found = Scanner::new().scan_text(b"jane@example.com");
        assert!(!found.capped);
    }

    /// Where the scan's time goes, per pattern (run with the inventory's `scan_throughput`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn pattern_costs() {
        let mut body = String::from("[");
        while body.len() < 16 * 1024 {
            body.push_str(r#"{"id":12345,"name":"Widget deluxe","price":19.99,"created":"2024-01-15T10:00:00Z","tags":["a","b"],"owner":{"id":"550e8400-e29b-41d4-a716-446655440000","active":true}},"#);
        }
        let s = Scanner::new();
        let mut named: Vec<(&str, &Regex)> = vec![
            ("email", &s.email),
            ("phone", &s.phone),
            ("card", &s.card),
            ("iban", &s.iban),
            ("ssn", &s.ssn),
            ("ipv4", &s.ipv4),
            ("ipv6", &s.ipv6),
            ("password_field", &s.password_field),
        ];
        named.extend(s.plain.iter().map(|(k, re)| (k.name(), re)));
        for (name, re) in named {
            let start = std::time::Instant::now();
            for _ in 0..200 {
                std::hint::black_box(re.find_iter(body.as_bytes()).count());
            }
            println!(
                "{name}: {:.1} us per 16 KiB",
                start.elapsed().as_secs_f64() * 1e6 / 200.0
            );
        }
    }

    /// What a typical exchange's header values cost to scan (run in release or with
    /// `--release` for figures that mean something).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn header_scan_cost() {
        let headers = [
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            ),
            ("accept", "application/json, text/plain, */*"),
            ("accept-language", "en-US,en;q=0.9"),
            ("accept-encoding", "gzip, deflate, br"),
            ("content-type", "application/json"),
            ("x-request-id", "7f3c9a52-1b2e-4c1d-9e8f-0a1b2c3d4e5f"),
            ("date", "Mon, 30 Nov 2026 10:00:00 GMT"),
            ("server", "nginx/1.22.1"),
            ("etag", "\"65a8f2c1-2f\""),
            ("cache-control", "no-cache"),
        ];
        let mut s = Scanner::new();
        let rounds = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(s.scan_message(headers.iter().copied(), None, b""));
        }
        println!(
            "{:.0} ns per {} header values",
            start.elapsed().as_secs_f64() * 1e9 / f64::from(rounds),
            headers.len()
        );
    }

    #[test]
    fn kind_sets_serialise_as_names() {
        let set: KindSet = [SensitiveKind::Iban, SensitiveKind::Email]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["email","iban"]"#);
        assert_eq!(serde_json::from_str::<KindSet>(&json).unwrap(), set);
        let bytes = postcard::to_allocvec(&set).unwrap();
        assert_eq!(postcard::from_bytes::<KindSet>(&bytes).unwrap(), set);
        assert!(serde_json::from_str::<KindSet>(r#"["nope"]"#).is_err());
        for kind in SensitiveKind::ALL {
            assert_eq!(kind.name().parse::<SensitiveKind>().unwrap(), *kind);
        }
        assert!(kinds_of("nothing here").is_empty());
    }
}

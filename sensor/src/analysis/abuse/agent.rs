//! What a User-Agent says about its client: a browser (and how old), a library or tool, a
//! headless browser, an attack tool, or nothing at all.

use std::time::{SystemTime, UNIX_EPOCH};

/// How a User-Agent looks, with what it matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// No User-Agent header, or an empty one.
    Missing,
    /// A known attack or scanning tool.
    AttackTool(&'static str),
    /// A browser driven without a window (automation).
    Headless(&'static str),
    /// An HTTP library or command-line client.
    Library(&'static str),
    /// A browser whose major version is this many years behind the current one.
    OldBrowser {
        browser: &'static str,
        major: u32,
        years: u32,
    },
    /// Nothing suspicious.
    Ordinary,
}

/// Substrings (lower case) of attack and scanning tools' agents.
const ATTACK_TOOLS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "wpscan",
    "dirbuster",
    "gobuster",
    "ffuf",
    "wfuzz",
    "hydra",
    "acunetix",
    "netsparker",
    "burp",
    "zap/",
    "openvas",
    "nessus",
    "arachni",
    "w3af",
    "commix",
    "havij",
    "feroxbuster",
];

const HEADLESS: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "slimerjs",
    "electron",
];

/// Libraries and command-line clients, as they start their agent (lower case).
const LIBRARIES: &[&str] = &[
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "httpx",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "lwp::",
    "ruby",
    "faraday",
    "axios/",
    "node-fetch",
    "undici",
    "got (",
    "scrapy",
    "restsharp",
    "guzzlehttp",
    "php/",
    "powershell",
    "httpie",
    "postmanruntime",
    "insomnia",
    "dart:io",
    "reqwest",
    "hyper/",
];

/// Browsers by the token that carries their major version, with the major version released at
/// the start of 2024 and how many majors they release a year (a four-week cycle).
const BROWSERS: &[(&str, &str, u32, u32)] = &[
    ("Edg/", "Edge", 120, 13),
    ("OPR/", "Opera", 106, 13),
    ("Firefox/", "Firefox", 121, 13),
    ("Chrome/", "Chrome", 120, 13),
];

/// Seconds since the epoch at 2024-01-01T00:00:00Z.
const EPOCH_2024: u64 = 1_704_067_200;
const YEAR_SECS: u64 = 31_557_600;

/// Years since 2024 at `now` (seconds since the epoch), as a fraction.
fn years_since_2024(now_s: u64) -> f64 {
    now_s.saturating_sub(EPOCH_2024) as f64 / YEAR_SECS as f64
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Classifies `agent` as of `now_s` (seconds since the epoch: the age of a browser version is
/// relative to it).
pub fn classify(agent: Option<&str>, now_s: u64) -> AgentKind {
    let Some(agent) = agent.map(str::trim).filter(|a| !a.is_empty()) else {
        return AgentKind::Missing;
    };
    // Bounded: an agent is a header value, but a hostile one can be long.
    let head = agent.get(..agent.len().min(512)).unwrap_or(agent);
    let lower = head.to_ascii_lowercase();
    if let Some(tool) = ATTACK_TOOLS.iter().find(|t| lower.contains(*t)) {
        return AgentKind::AttackTool(tool);
    }
    if let Some(name) = HEADLESS.iter().find(|t| lower.contains(*t)) {
        return AgentKind::Headless(name);
    }
    if let Some(name) = LIBRARIES.iter().find(|t| lower.starts_with(*t)) {
        return AgentKind::Library(name);
    }
    let years = years_since_2024(now_s);
    for &(token, browser, major_2024, per_year) in BROWSERS {
        let Some(at) = head.find(token) else {
            continue;
        };
        let digits: String = head[at + token.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(5)
            .collect();
        let Ok(major) = digits.parse::<u32>() else {
            return AgentKind::Ordinary;
        };
        let current = major_2024 as f64 + years * per_year as f64;
        let behind = (current - major as f64) / per_year as f64;
        if behind >= 2.0 {
            return AgentKind::OldBrowser {
                browser,
                major,
                years: behind as u32,
            };
        }
        return AgentKind::Ordinary;
    }
    // Neither a browser nor a known client: an application's own agent (a mobile app, a partner's
    // integration) says nothing against it.
    AgentKind::Ordinary
}

/// The score (0-100) and reason of an agent's kind, if it is suspicious.
pub fn score(kind: &AgentKind) -> Option<(u8, String)> {
    Some(match kind {
        AgentKind::Missing => (50, "no User-Agent".to_owned()),
        AgentKind::AttackTool(tool) => (95, format!("attack tool in User-Agent ({tool})")),
        AgentKind::Headless(name) => (60, format!("headless browser ({name})")),
        // Machine clients are what many APIs are for (integrations with an API key): worth
        // listing, weak on its own.
        AgentKind::Library(name) => (30, format!("HTTP library or tool ({name})")),
        AgentKind::OldBrowser {
            browser,
            major,
            years,
        } => (
            if *years >= 4 { 60 } else { 40 },
            format!("{browser} {major}, about {years} years old"),
        ),
        AgentKind::Ordinary => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01.
    const NOW: u64 = 1_796_083_200;

    #[test]
    fn agents_are_told_apart() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "missing"),
            (Some("  "), "missing"),
            (Some("sqlmap/1.8.2#stable (https://sqlmap.org)"), "attack"),
            (
                Some(
                    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
                ),
                "attack",
            ),
            (
                Some(
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
                ),
                "headless",
            ),
            (Some("python-requests/2.32.3"), "library"),
            (Some("curl/8.5.0"), "library"),
            (Some("Go-http-client/1.1"), "library"),
            (Some("okhttp/4.12.0"), "library"),
            (
                Some("ShopApp/2.3.1 (iPhone; iOS 17.4; Scale/3.00)"),
                "ordinary",
            ),
            (
                Some(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
                ),
                "ordinary",
            ),
            (
                Some(
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:145.0) Gecko/20100101 Firefox/145.0",
                ),
                "ordinary",
            ),
            (
                Some(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36 Edg/141.0.0.0",
                ),
                "ordinary",
            ),
            (
                Some(
                    "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/49.0.2623.112 Safari/537.36",
                ),
                "old",
            ),
            (
                Some("Mozilla/5.0 (Windows NT 10.0; rv:115.0) Gecko/20100101 Firefox/115.0"),
                "old",
            ),
        ];
        for (agent, want) in cases {
            let kind = classify(*agent, NOW);
            let got = match kind {
                AgentKind::Missing => "missing",
                AgentKind::AttackTool(_) => "attack",
                AgentKind::Headless(_) => "headless",
                AgentKind::Library(_) => "library",
                AgentKind::OldBrowser { .. } => "old",
                AgentKind::Ordinary => "ordinary",
            };
            assert_eq!(got, *want, "{agent:?}");
            assert_eq!(score(&kind).is_none(), *want == "ordinary");
        }
    }

    #[test]
    fn a_browser_ages_with_the_clock() {
        let chrome = Some(
            "Mozilla/5.0 (X11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36",
        );
        assert_eq!(classify(chrome, NOW), AgentKind::Ordinary);
        // Three years on, the same version is old.
        let later = NOW + 3 * YEAR_SECS;
        assert!(matches!(
            classify(chrome, later),
            AgentKind::OldBrowser { major: 142, .. }
        ));
    }
}

//! The configuration loader on arbitrary text: parsing and checking (a rejected file names its
//! line and column inside the text), the stages' settings built from an accepted file, and a
//! reload between two files. No input may panic them.
#![no_main]

use std::path::Path;

use apisessions::{
    analysis::{
        abuse::AbuseTracker,
        attacks::{AttacksConfig, Detector},
    },
    config::{AttacksSection, CaptureOverrides, Config, ConfigError, reload::Reload},
    proxy::ProxyConfig,
    sessions::SessionConfig,
};
use libfuzzer_sys::fuzz_target;

/// Parses `text`; a rejection must point inside it, as `file:line:column: reason`.
fn parse(text: &str) -> Option<Config> {
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => Some(config),
        Err(e) => {
            let ConfigError::Invalid { line, column, .. } = &e else {
                panic!("parsing text cannot fail to read: {e}");
            };
            let lines = text.split('\n').count();
            assert!((1..=lines).contains(line), "line {line} of {lines}: {e}");
            assert!(*column >= 1, "{e}");
            assert!(e.to_string().starts_with("fuzz.toml:"), "{e}");
            None
        }
    }
}

/// What the daemon builds from an accepted configuration, at start and at every reload.
fn build_stages(config: &Config) {
    let _ = SessionConfig::from(config);
    let _ = ProxyConfig::from(config);
    if config.abuse.enabled {
        let _ = AbuseTracker::new(config.abuse.clone());
    }
    // Compiling the detector's rules is slow: only when the file touches `[attacks]`.
    if config.attacks.enabled && config.attacks != AttacksSection::default() {
        let _ = Detector::new(&AttacksConfig::from_config(config));
    }
}

fuzz_target!(|data: &[u8]| {
    // The running file and the reloaded one, split at the first NUL (the same file without).
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\0').unwrap_or((&text, &text));
    let (Some(running), new) = (parse(first), parse(second)) else {
        return;
    };
    build_stages(&running);
    let Some(new) = new else {
        return;
    };
    let overrides = CaptureOverrides {
        ports: match data.len() % 3 {
            0 => vec![8080],
            _ => Vec::new(),
        },
        all_ports: data.len() % 5 == 0,
        ..CaptureOverrides::default()
    };
    let reload = Reload::new(&running, new.clone(), &overrides);
    build_stages(&reload.config);
    // The same file again changes nothing that applies live.
    let again = Reload::new(&reload.config, new, &overrides);
    assert!(again.applied.is_empty(), "{:?}", again.applied);
});

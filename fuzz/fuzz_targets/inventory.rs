//! The inventory's parsers on arbitrary input: the sensitive-data scan, value types, the
//! template learner and OpenAPI documents (YAML and JSON) with request matching. No input may
//! panic them.
#![no_main]

use std::{path::Path, sync::OnceLock};

use apisessions::analysis::inventory::{
    sensitive::Scanner,
    spec::Spec,
    templates::{LearnerConfig, TemplateLearner},
    types,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    let scanner = SCANNER.get_or_init(Scanner::new);
    let _ = scanner.scan_text(data);
    let text = String::from_utf8_lossy(data);
    let _ = scanner.scan_field(&text, &text);
    let _ = types::infer_text(&text);

    let mut learner = TemplateLearner::new(LearnerConfig::default());
    for line in text.lines().take(64) {
        let learned = learner.learn("h", "GET", line);
        let _ = learner.resolve("h", "GET", &learned);
    }

    if let Ok(spec) = Spec::parse(Path::new("fuzz.yaml"), &text) {
        for line in text.lines().take(16) {
            let _ = spec.match_request("GET", line);
        }
    }
});

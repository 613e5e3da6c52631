//! The store across crashes and next to readers: an import killed with SIGKILL in the middle of
//! a write burst leaves a store that opens, holds only whole committed batches, and reads back
//! complete records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use apisessions::pipeline::writer::TRANSACTION_EXCHANGES;
use common::{wait_until, write_generated_pcap};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apisessions"))
}

fn stored_exchanges(data_dir: &std::path::Path) -> Option<Vec<serde_json::Value>> {
    let out = bin()
        .args(["export", "--format", "ndjson", "--data-dir"])
        .arg(data_dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

#[test]
fn sigkill_during_a_write_burst_keeps_every_committed_batch() {
    let dir = std::env::temp_dir().join(format!("apis-crash-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("burst.pcap");
    // Several batches (TRANSACTION_EXCHANGES per transaction) so the kill lands mid-burst.
    write_generated_pcap(&pcap, 150_000, 1_764_000_000);
    let data_dir = dir.join("data");
    let mut import = bin()
        .arg("import")
        .arg(&pcap)
        .arg("--data-dir")
        .arg(&data_dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the first batch is committed (a reader in another process sees it).
    let committed = wait_until(Duration::from_secs(60), || {
        bin()
            .args(["sessions", "--limit", "1", "--json", "--data-dir"])
            .arg(&data_dir)
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"[\n"))
    });
    let _ = import.kill(); // SIGKILL
    let status = import.wait().unwrap();
    assert!(committed, "the import committed nothing within a minute");
    assert!(
        !status.success(),
        "the import was killed before it finished: make the burst longer"
    );

    let records = stored_exchanges(&data_dir).expect("the store opens after a SIGKILL");
    assert!(!records.is_empty());
    assert_eq!(
        records.len() % TRANSACTION_EXCHANGES,
        0,
        "only whole batches: {} records",
        records.len()
    );
    for record in &records {
        assert_eq!(record["status_code"], 200);
        assert!(record["uri"].as_str().unwrap().starts_with("/items/"));
        assert!(record["session_id"].as_str().unwrap().len() == 32);
    }
    // The store still takes writes: the file imported again completes, and everything in it is
    // there (re-importing the committed part rewrites the same keys).
    let status = bin()
        .arg("import")
        .arg(&pcap)
        .arg("--data-dir")
        .arg(&data_dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let records = stored_exchanges(&data_dir).unwrap();
    let uris: std::collections::HashSet<&str> =
        records.iter().map(|r| r["uri"].as_str().unwrap()).collect();
    assert_eq!(uris.len(), 150_000);
    assert_eq!(
        records.len(),
        150_000,
        "the rewritten batches are not doubled"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

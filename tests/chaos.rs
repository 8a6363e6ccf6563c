//! The fault suite's short form: `murmur-chaos` on a 4-node cluster with R3 streams in
//! secure mode, the platform's processes under tasks, proposals and knowledge writes, while
//! the stream leader is killed, cut off from its followers with its clients still connected,
//! agents are paused past their leases, the leader is removed from the stream's peers (the
//! replica moves to the node that held none), and it loses its whole store. The store's loss
//! comes last: its node may take a minute to be current again under load. The run goes
//! past its 30 s until every fault has had its turn. The suite's checker reads the log
//! afterwards; this test fails on anything it finds lost, duplicated, reordered or
//! unresolved, or on nodes whose copies of the streams differ, and checks the report holds
//! what was injected.

use std::time::Duration;

use anyhow::{Context, Result};

#[test]
fn nothing_acknowledged_is_lost_while_the_leader_dies_is_cut_off_loses_its_store_moves_and_agents_pause()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("report.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_murmur-chaos"))
        .arg("--murmur")
        .arg(murmur_e2e::murmur_binary()?)
        .args([
            "--faults",
            "kill-leader,partition,pause-agents,replace-peer,wipe-store",
        ])
        .args(["--schedule", "mixed", "--sync", "default"])
        // Five faults take longer than 30 s (6 s held, recovery, 3 s calm each): the run
        // goes on until each has had its turn, which the check of `faults` below proves.
        .args(["--seconds", "30", "--hold-s", "6", "--calm-s", "3"])
        .arg("--report")
        .arg(&report)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .spawn()?;
    let status = murmur_e2e::wait_with_deadline(&mut child, Duration::from_secs(900))?
        .context("murmur-chaos did not finish within 15 minutes")?;
    let reports: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report).with_context(|| format!("no report; murmur-chaos {status}"))?,
    )?;
    let run = &reports[0];
    assert!(
        status.success(),
        "the checker found something: {}",
        serde_json::to_string_pretty(run)?
    );
    let injected: Vec<&str> = run["faults"]
        .as_array()
        .context("faults")?
        .iter()
        .filter_map(|f| f["fault"].as_str())
        .collect();
    assert!(
        [
            "kill-leader",
            "partition",
            "pause-agents",
            "wipe-store",
            "replace-peer"
        ]
        .iter()
        .all(|f| injected.contains(f)),
        "every fault was injected: {injected:?}"
    );
    for (workload, acked) in [
        ("tasks", &run["tasks"]["acked"]),
        ("proposals", &run["proposals"]["acked"]),
        ("knowledge", &run["knowledge"]["acked"]),
    ] {
        assert!(
            acked.as_u64().is_some_and(|n| n > 0),
            "{workload} were written: {acked}"
        );
    }
    assert_eq!(run["log"]["lost"], serde_json::json!([]));
    let moved = run["faults"]
        .as_array()
        .context("faults")?
        .iter()
        .filter(|f| f["fault"] == "replace-peer")
        .filter_map(|f| f["note"].as_str())
        .collect::<Vec<_>>();
    assert!(
        !moved.is_empty() && moved.iter().all(|n| n.contains("three current peers (")),
        "each removal ended with three current peers: {moved:?}"
    );
    // The history stream was read through each of the three nodes holding it and compared.
    assert_eq!(
        run["replicas"]["history_read"].as_array().map(Vec::len),
        Some(3),
        "{}",
        run["replicas"]
    );
    Ok(())
}

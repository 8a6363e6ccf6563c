//! The history archive `murmur up` keeps: every event copied before retention drops it.

use super::*;

/// Events in an archive's segments: (sequence, id), in file order.
fn archived(archive: &murmur_tools::archive::Archive) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for segment in archive.segments()? {
        for line in std::fs::read_to_string(&segment)?.lines() {
            let event: serde_json::Value = serde_json::from_str(line)?;
            out.push((
                event["sequence"].as_u64().context("sequence")?,
                event["id"].as_str().context("id")?.to_string(),
            ));
        }
    }
    Ok(out)
}

/// The history stream's retention drops its oldest events; an archive that passes more often
/// than the stream fills holds every event exactly once, in order, and a pass that comes too
/// late says which events retention dropped before it could copy them.
#[tokio::test]
async fn the_archive_keeps_every_event_retention_drops_and_names_what_it_missed() -> Result<()> {
    use murmur_tools::archive::Archive;
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    // A small stream: about 150 of these events fit.
    let js = async_nats::jetstream::new(log.client().clone());
    let mut config = murmur_e2e::stream_config(&log, "MURMUR_HISTORY").await?;
    config.max_bytes = 256 * 1024;
    js.update_stream(config).await?;

    let dir = tempfile::tempdir()?;
    let archive = Archive::open(dir.path())?;
    let mut ids = Vec::new();
    let mut n = 0u64;
    let mut append = |count: u64| {
        let drafts: Result<Vec<Draft>> = (n..n + count)
            .map(|i| {
                let mut payload = submitted(i);
                payload.input = serde_json::json!({ "n": i, "pad": "x".repeat(600) });
                Draft::new(tok(&format!("t{i}")), &payload)
            })
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::from);
        n += count;
        drafts
    };
    for _ in 0..6 {
        for draft in append(60)? {
            ids.push(log.append(draft).await?.0.record.id);
        }
        let pass = archive.pass(&log).await?;
        assert_eq!(pass.dropped_unarchived, None, "{pass:?}");
    }
    let mut stream = js.get_stream("MURMUR_HISTORY").await?;
    let first = stream.info().await?.state.first_sequence;
    assert!(
        first > 1,
        "retention dropped the oldest events (first is {first})"
    );
    let copy = archived(&archive)?;
    let sequences: Vec<u64> = copy.iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        copy.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(archive.position()?, ids.len() as u64);

    // Too late: more than the stream holds written between two passes.
    let before = archive.position()?;
    for draft in append(400)? {
        log.append(draft).await?;
    }
    let pass = archive.pass(&log).await?;
    let first = stream.info().await?.state.first_sequence;
    assert_eq!(pass.dropped_unarchived, Some((before + 1, first - 1)));
    assert_eq!(archive.position()?, before + 400);

    // `murmur replay --archive` reads the events the stream dropped, verified, without a
    // server: the first 360 in order, then only what the late pass still found.
    use clap::Parser;
    let cli = Cli::try_parse_from(["murmur", "--realm", "acme", "replay"])?;
    let settings = Settings::resolve(&cli.global)?;
    let out = dir.path().join("replayed.jsonl");
    let args = |from_seq, to_seq, output: &std::path::Path| ReplayArgs {
        from_seq,
        to_seq,
        since: None,
        until: None,
        subject: None,
        ty: None,
        format: Format::Jsonl,
        output: Some(output.to_path_buf()),
        archive: Some(dir.path().to_path_buf()),
    };
    let totals = murmur_tools::cli::replay::run(&settings, args(None, None, &out)).await?;
    assert_eq!(totals.invalid, 0);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let replayed_ids: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(
        replayed_ids[..ids.len()],
        ids.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(lines[0]["sequence"], 1);
    assert_eq!(lines[0]["data"]["input"]["n"], 0);
    let kept = archived(&archive)?.len();
    assert_eq!(totals.events as usize, kept);
    assert!(
        kept > ids.len() && kept < ids.len() + 400,
        "{kept} archived"
    );
    // A range reads only its segments' lines.
    let range = murmur_tools::cli::replay::run(&settings, args(Some(100), Some(109), &out)).await?;
    assert_eq!(
        (range.events, range.first, range.last),
        (10, Some(100), Some(109))
    );
    // A changed byte is caught on reading, as on the stream.
    let segment = archive.segments()?.remove(0);
    let text = std::fs::read_to_string(&segment)?;
    let (first_line, rest) = text.split_once('\n').context("a line")?;
    let mut line: serde_json::Value = serde_json::from_str(first_line)?;
    let body = line["body"]
        .as_str()
        .context("body")?
        .replacen("\"n\":0", "\"n\":7", 1);
    assert_ne!(line["body"], body.as_str());
    line["body"] = body.into();
    std::fs::write(&segment, format!("{line}\n{rest}"))?;
    let tampered = murmur_tools::cli::replay::run(&settings, args(Some(1), Some(60), &out)).await?;
    assert_eq!((tampered.events, tampered.invalid), (59, 1));
    Ok(())
}

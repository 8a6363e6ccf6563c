//! Bulk writers: events written through a JetStream fast-ingest batch, and what happens
//! when the server will not, or cannot, take the batch.

use super::*;
use murmur_subjects::log::stores_fast_ingest_batches;

/// `n` task drafts on aggregates `{prefix}0…`, with a payload padded to `pad` bytes at `big`.
fn drafts(prefix: &str, n: u64, big: Option<(u64, usize)>) -> Result<Vec<Draft>> {
    (0..n)
        .map(|i| {
            let mut payload = submitted(i);
            if let Some((at, pad)) = big
                && at == i
            {
                payload.input = serde_json::json!({ "pad": "x".repeat(pad) });
            }
            Ok(Draft::new(tok(&format!("{prefix}{i}")), &payload)?)
        })
        .collect()
}

/// Creates the history stream before any participant does, with `config`'s settings (fast
/// ingest only where the server knows it: 2.12 refuses the field).
async fn history_made_by_hand(
    nats: &TestNats,
    config: async_nats::jetstream::stream::Config,
) -> Result<()> {
    let client = nats.client().await?;
    let fast_ingest = stores_fast_ingest_batches(&client.server_info().version);
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "MURMUR_HISTORY".into(),
            subjects: LogConfig::history_subjects(),
            allow_direct: true,
            allow_batch_publish: config.allow_batch_publish && fast_ingest,
            ..config
        })
        .await?;
    Ok(())
}

/// Turns fast ingest off on the history stream, as a murmur from before it, or a 2.11 node
/// leading the cluster's meta group, leaves it: opening a realm provisions it as `murmur up`
/// does, which turns it on where the server knows it.
async fn fast_ingest_off(log: &EventLog) -> Result<()> {
    let mut config = murmur_e2e::stream_config(log, "MURMUR_HISTORY").await?;
    config.allow_batch_publish = false;
    async_nats::jetstream::new(log.client().clone())
        .update_stream(config)
        .await?;
    Ok(())
}

/// Whether the server stores fast-ingest batches (nats-server 2.14+). An older one
/// (`scripts/test.sh` runs these tests on 2.11 and 2.12 too) stores a batch's first message
/// as a plain publish, and the writer sends every event with an ack of its own.
fn stores_batches(log: &EventLog) -> bool {
    stores_fast_ingest_batches(&log.client().server_info().version)
}

/// Why a writer on a server older than 2.14 fell back.
const OLD_SERVER: &str = "the server stores no fast-ingest batches";

async fn stored_in(log: &EventLog) -> Result<u64> {
    Ok(log
        .stream("MURMUR_HISTORY")
        .await?
        .info()
        .await?
        .state
        .messages)
}

#[tokio::test]
async fn a_bulk_writer_stores_every_event_once_with_an_ack_every_few_hundred() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let mut writer = log.bulk_writer().await?;
    let mut sealed = Vec::new();
    for chunk in drafts("t", 3_000, None)?.chunks(250) {
        sealed.extend(writer.append(chunk.to_vec()).await?);
    }
    let acks = writer.flow_acks();
    let stored = writer.finish().await?;
    assert_eq!(stored.events, 3_000, "{stored:?}");
    let batches = stores_batches(&log);
    if batches {
        assert_eq!(stored.batched, 3_000, "{stored:?}");
        assert_eq!(stored.fell_back, None);
        // Acknowledged in stretches, not message by message.
        assert!(
            (1..=30).contains(&acks),
            "{acks} flow acks for 3,000 events"
        );
    } else {
        assert_eq!(stored.batched, 0, "{stored:?}");
        let why = stored.fell_back.clone().unwrap_or_default();
        assert!(why.contains(OLD_SERVER), "{why}");
        assert_eq!(acks, 0);
    }
    assert_eq!(
        stored.last_sequence,
        log.last_sequence("MURMUR_HISTORY").await?
    );
    assert_eq!(stored_in(&log).await?, 3_000);

    // Every event reads back, in order, with a valid signature.
    let reader = nats.event_log("acme").await?;
    let mut p = Projector::new(reader, OverviewProjection { realm: tok("acme") });
    p.catch_up().await?;
    assert_eq!(p.stats().applied, 3_000);
    assert_eq!(p.stats().invalid, 0);

    // The same events again (a writer retrying after a crash): the server's dedupe stores
    // none twice, and the batch counts them as stored.
    let mut again = log.bulk_writer().await?;
    again.append_sealed(&sealed[..1_200]).await?;
    let stored = again.finish().await?;
    assert_eq!(
        (stored.events, stored.batched),
        (1_200, if batches { 1_200 } else { 0 }),
        "{stored:?}"
    );
    assert_eq!(stored_in(&log).await?, 3_000);
    Ok(())
}

#[tokio::test]
async fn a_bulk_writer_on_a_stream_without_fast_ingest_sends_each_event_with_an_ack() -> Result<()>
{
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    fast_ingest_off(&log).await?;
    let mut writer = log.bulk_writer().await?;
    writer.append(drafts("t", 1_500, None)?).await?;
    let stored = writer.finish().await?;
    assert_eq!((stored.events, stored.batched), (1_500, 0), "{stored:?}");
    let why = stored.fell_back.unwrap_or_default();
    let expected = if stores_batches(&log) {
        "10205"
    } else {
        OLD_SERVER
    };
    assert!(why.contains(expected), "{why}");
    assert_eq!(stored_in(&log).await?, 1_500);
    assert_eq!(stored.last_sequence, 1_500);
    Ok(())
}

#[tokio::test]
async fn provisioning_turns_fast_ingest_on_for_a_stream_made_without_it() -> Result<()> {
    let nats = TestNats::start().await?;
    // Made by hand with a retention of its own, which must survive the change; then left
    // without fast ingest, as an older murmur or a 2.11 meta leader leaves it.
    history_made_by_hand(
        &nats,
        async_nats::jetstream::stream::Config {
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        },
    )
    .await?;
    let log = nats.event_log("acme").await?;
    fast_ingest_off(&log).await?;
    assert!(
        !murmur_e2e::stream_config(&log, "MURMUR_HISTORY")
            .await?
            .allow_batch_publish
    );
    // What `murmur up` runs.
    log.provision().await?;
    let config = murmur_e2e::stream_config(&log, "MURMUR_HISTORY").await?;
    assert_eq!(config.allow_batch_publish, stores_batches(&log));
    assert_eq!(config.max_age, Duration::from_secs(7 * 24 * 3600));
    let mut writer = log.bulk_writer().await?;
    writer.append(drafts("t", 1_500, None)?).await?;
    let stored = writer.finish().await?;
    let batched = if stores_batches(&log) { 1_500 } else { 0 };
    assert_eq!(
        (stored.events, stored.batched),
        (1_500, batched),
        "{stored:?}"
    );
    assert_eq!(stored_in(&log).await?, 1_500);
    // Provisioning again changes nothing.
    log.provision().await?;
    assert_eq!(
        murmur_e2e::stream_config(&log, "MURMUR_HISTORY")
            .await?
            .allow_batch_publish,
        stores_batches(&log)
    );
    Ok(())
}

#[tokio::test]
async fn an_event_the_server_refuses_midway_is_the_bulk_writes_error_and_the_rest_are_stored()
-> Result<()> {
    let nats = TestNats::start().await?;
    // A stream that takes messages of at most 4 KiB; event 700 of 1,000 is larger.
    history_made_by_hand(
        &nats,
        async_nats::jetstream::stream::Config {
            allow_batch_publish: true,
            max_message_size: 4_096,
            ..Default::default()
        },
    )
    .await?;
    let log = nats.event_log("acme").await?;
    let mut writer = log.bulk_writer().await?;
    let written = async {
        writer
            .append(drafts("t", 1_000, Some((700, 6_000)))?)
            .await?;
        anyhow::Ok(writer.finish().await?)
    }
    .await;
    let refused = written.expect_err("event 700 cannot be stored");
    let text = format!("{refused:#}");
    assert!(text.contains("t700"), "{text}");
    assert!(text.to_lowercase().contains("maximum"), "{text}");
    // The others are independent events: all stored, each once; that one is not.
    assert_eq!(stored_in(&log).await?, 999);
    for (aggregate, there) in [
        ("t699", true),
        ("t700", false),
        ("t701", true),
        ("t999", true),
    ] {
        let subject = format!("murmur.v1.acme.evt.task.{aggregate}.submitted");
        assert_eq!(
            log.first_event(&subject).await?.is_some(),
            there,
            "{aggregate}"
        );
    }
    Ok(())
}

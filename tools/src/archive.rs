//! The history archive: every stored event copied to files before the history stream's
//! retention limits (age, bytes) can drop it, so the truth outlives the stream.
//!
//! An archive is a folder of segments, `history-FIRST-LAST.jsonl` (sequences, zero-padded so
//! names sort), one line per stored message: its sequence, stored time, subject, headers and
//! exact bytes (`body`, or `body_base64` when not UTF-8), with the event's `id` and `type`,
//! or `invalid` and the reason for a message that does not verify. The file `position` holds the last sequence archived. A pass reads what the
//! stream stored after it, writes one new segment (temporary name, fsync, rename, folder
//! fsync) and then moves the position, so a crash repeats at most one pass and never leaves
//! half a segment under a segment's name. `murmur up` runs a pass at start and then on an
//! interval ([`run_archiver`]); a pass that finds the stream's first event past the position
//! reports the gap: events retention dropped before they were archived.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use murmur_subjects::projection::StoredMessage;
use murmur_subjects::{EventLog, StartAt, SubjectFilter};
use serde::{Deserialize, Serialize};

/// `[archive]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The archive's folder.
    pub dir: PathBuf,
    /// Seconds between passes (default 600). It must stay well below the time the stream
    /// takes to reach its limits, or events are dropped before a pass copies them.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
}

fn default_interval_s() -> u64 {
    600
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchivePass {
    /// Events (and unverifiable messages) written.
    pub written: u64,
    /// The segment written, if any.
    pub segment: Option<PathBuf>,
    /// The last sequence archived after the pass.
    pub position: u64,
    /// Sequences retention dropped before they were archived (first, last).
    pub dropped_unarchived: Option<(u64, u64)>,
}

/// What a pass must read, from the archive's position and the stream's first and last
/// sequence: the range to copy, and the range lost to retention before it was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassPlan {
    /// Sequences to copy (first, last), if any.
    pub copy: Option<(u64, u64)>,
    /// Sequences the stream no longer holds that were never archived (first, last).
    pub lost: Option<(u64, u64)>,
}

impl PassPlan {
    /// The plan for an archive at `position` and a stream holding `first..=last` (`first`
    /// is `last + 1` for an empty stream).
    pub fn new(position: u64, first: u64, last: u64) -> Self {
        let next = position + 1;
        let lost = (first > next).then(|| (next, (first - 1).min(last.max(next))));
        let from = next.max(first);
        Self {
            copy: (from <= last).then_some((from, last)),
            lost,
        }
    }
}

/// An archive folder.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    /// Opens (creating it if missing) the archive at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the archive folder {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The archive at `dir`, which must exist (a reader's open: nothing is created).
    pub fn existing(dir: &Path) -> Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "no archive at {}: `murmur up --archive-dir DIR` writes one",
            dir.display()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last sequence archived (0: none).
    pub fn position(&self) -> Result<u64> {
        let path = self.dir.join("position");
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} holds no sequence number", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The segments, in sequence order.
    pub fn segments(&self) -> Result<Vec<PathBuf>> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("history-") && n.ends_with(".jsonl"))
            })
            .collect();
        segments.sort();
        Ok(segments)
    }

    /// Copies every message the history stream stored after the position into a new
    /// segment, then moves the position.
    pub async fn pass(&self, log: &EventLog) -> Result<ArchivePass> {
        let position = self.position()?;
        let mut stream = log.stream(&log.config().history_stream).await?;
        let state = stream.info().await?.state.clone();
        let plan = PassPlan::new(position, state.first_sequence, state.last_sequence);
        let mut pass = ArchivePass {
            position,
            dropped_unarchived: plan.lost,
            ..ArchivePass::default()
        };
        let Some((from, to)) = plan.copy else {
            if let Some((_, lost_to)) = plan.lost {
                self.set_position(lost_to)?;
                pass.position = lost_to;
            }
            return Ok(pass);
        };
        let name = format!("history-{from:012}-{to:012}.jsonl");
        let temp = self.dir.join(format!(".{name}.partial"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?,
        );
        let mut write_error = None;
        let mut last = from - 1;
        let all = SubjectFilter::plane(murmur_subjects::Plane::Evt);
        log.read(&all, StartAt::Sequence(from), Some(to), |stored| {
            let message = &stored.message;
            let mut line = serde_json::json!({
                "sequence": stored.sequence,
                "stored_at": stored.stored_at,
                "subject": message.subject.as_str(),
            });
            // What a reader checks first: the event's id and type, or why it does not verify.
            match log.decode_stored(message, stored.sequence, Some(stored.stored_at)) {
                Ok(event) => {
                    line["id"] = event.record.id.into();
                    line["type"] = event.record.ty.into();
                }
                Err(e) => line["invalid"] = e.to_string().into(),
            }
            if let Some(headers) = &message.headers {
                line["headers"] = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            v.iter().map(|x| x.to_string()).collect::<Vec<_>>().into(),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            // The stored bytes themselves, so signatures verify and the event can be
            // published again exactly as it was.
            match std::str::from_utf8(&message.payload) {
                Ok(text) => line["body"] = text.into(),
                Err(_) => {
                    line["body_base64"] = base64::engine::general_purpose::STANDARD
                        .encode(&message.payload)
                        .into()
                }
            }
            if let Err(e) = writeln!(out, "{line}") {
                write_error = Some(e);
                return ControlFlow::Break(());
            }
            pass.written += 1;
            last = stored.sequence;
            ControlFlow::Continue(())
        })
        .await?;
        if let Some(e) = write_error {
            return Err(e).with_context(|| format!("writing {}", temp.display()));
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        if pass.written == 0 {
            // Dropped between reading the stream's state and reading its messages.
            std::fs::remove_file(&temp)?;
            self.set_position(to)?;
            pass.position = to;
            pass.dropped_unarchived = Some((plan.lost.map_or(from, |(first, _)| first), to));
            return Ok(pass);
        }
        // Messages purged mid-pass end the read early: the segment is named by what it holds.
        let end = last;
        let name = format!("history-{from:012}-{end:012}.jsonl");
        let segment = self.dir.join(&name);
        std::fs::rename(&temp, &segment)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.set_position(end)?;
        pass.segment = Some(segment);
        pass.position = end;
        Ok(pass)
    }

    /// Calls `on_message` with every archived message whose sequence is in `from..=to`, in
    /// sequence order, as the stream stored it (subject, headers, exact bytes, stored time),
    /// until it breaks. Segments outside the range are not opened. Returns how many messages
    /// were passed on.
    pub fn read(
        &self,
        from: u64,
        to: u64,
        mut on_message: impl FnMut(StoredMessage) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut passed = 0;
        for segment in self.segments()? {
            let name = segment
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some((first, last)) = segment_range(name)
                && (last < from || first > to)
            {
                continue;
            }
            let text = std::fs::read_to_string(&segment)
                .with_context(|| format!("reading {}", segment.display()))?;
            for (number, line) in text.lines().enumerate() {
                let stored = archived_message(line).with_context(|| {
                    format!(
                        "{} line {} is not an archived message",
                        segment.display(),
                        number + 1
                    )
                })?;
                if stored.sequence < from {
                    continue;
                }
                if stored.sequence > to {
                    return Ok(passed);
                }
                passed += 1;
                if on_message(stored).is_break() {
                    return Ok(passed);
                }
            }
        }
        Ok(passed)
    }

    fn set_position(&self, sequence: u64) -> Result<()> {
        let temp = self.dir.join(".position.partial");
        {
            let mut f = std::fs::File::create(&temp)?;
            writeln!(f, "{sequence}")?;
            f.sync_all()?;
        }
        std::fs::rename(&temp, self.dir.join("position"))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// The first and last sequence a segment's name gives (`history-FIRST-LAST.jsonl`).
fn segment_range(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix("history-")?
        .strip_suffix(".jsonl")?
        .split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// One segment line back as the message the stream stored.
fn archived_message(line: &str) -> Result<StoredMessage> {
    #[derive(Deserialize)]
    struct Line {
        sequence: u64,
        stored_at: chrono::DateTime<chrono::Utc>,
        subject: String,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, Vec<String>>,
        body: Option<String>,
        body_base64: Option<String>,
    }
    let line: Line = serde_json::from_str(line)?;
    let payload = match (line.body, line.body_base64) {
        (Some(text), _) => bytes::Bytes::from(text),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("body_base64 is not base64")?
            .into(),
        (None, None) => anyhow::bail!("neither body nor body_base64"),
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in &line.headers {
        // Parsed, not converted: the client's conversions panic on a name or value a
        // changed file may hold.
        let header: async_nats::HeaderName = name
            .parse()
            .map_err(|e| anyhow::anyhow!("header name {name:?}: {e}"))?;
        for value in values {
            let value: async_nats::HeaderValue = value
                .parse()
                .map_err(|e| anyhow::anyhow!("header {name} value {value:?}: {e}"))?;
            headers.append(header.clone(), value);
        }
    }
    let length = payload.len();
    Ok(StoredMessage {
        sequence: line.sequence,
        stored_at: line.stored_at,
        pending: 0,
        message: async_nats::Message {
            subject: line.subject.into(),
            reply: None,
            payload,
            headers: (!line.headers.is_empty()).then_some(headers),
            status: None,
            description: None,
            length,
        },
    })
}

/// `murmur up`'s retention watch: on start and every `interval`, warns once (per crossing)
/// when the history stream reaches 80% of a retention limit, and with an archive copies what
/// was stored since the last pass, reporting any events retention dropped before a pass
/// copied them. Failed passes are retried on the next interval.
pub async fn run_archiver(
    log: EventLog,
    archive: Option<Archive>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let mut warned = false;
    loop {
        match crate::cli::status::history_usage(&log).await {
            Ok(usage) => match (&usage.warning, warned) {
                (Some(warning), false) => {
                    match &archive {
                        Some(a) => tracing::warn!(
                            "{warning}; the archive at {} keeps a copy of every event",
                            a.dir().display()
                        ),
                        None => tracing::warn!("{warning}"),
                    }
                    warned = true;
                }
                (None, true) => warned = false,
                _ => {}
            },
            Err(e) => tracing::debug!(error = %e, "history usage unavailable"),
        }
        if let Some(archive) = &archive {
            match archive.pass(&log).await {
                Ok(pass) => {
                    if let Some((first, last)) = pass.dropped_unarchived {
                        tracing::error!(
                            "events {first}..={last} were dropped by the history stream's retention before they were archived: archive more often ([archive] interval_s) or raise the stream's limits"
                        );
                    }
                    if pass.written > 0 {
                        tracing::info!(
                            written = pass.written,
                            position = pass.position,
                            "history archived"
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    "archiving the history to {} failed (retried in {}s): {e:#}",
                    archive.dir().display(),
                    interval.as_secs()
                ),
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archived_line_reads_back_as_the_stored_message_or_says_what_is_wrong() {
        let line = r#"{"sequence":7,"stored_at":"2026-12-04T12:00:00Z","subject":"murmur.v1.acme.evt.task.t1.submitted","headers":{"Nats-Msg-Id":["abc"]},"body":"{}"}"#;
        let stored = archived_message(line).expect("a valid line");
        assert_eq!(stored.sequence, 7);
        assert_eq!(stored.message.payload.as_ref(), b"{}");
        let headers = stored.message.headers.expect("headers");
        assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("abc"));
        let bad_name = line.replace("Nats-Msg-Id", "Nats:Msg");
        let err = archived_message(&bad_name).expect_err("a colon in a header name");
        assert!(format!("{err:#}").contains("header name"), "{err:#}");
        let bad_value = line.replace(r#"["abc"]"#, r#"["a\r\nb"]"#);
        let err = archived_message(&bad_value).expect_err("a line break in a value");
        assert!(format!("{err:#}").contains("value"), "{err:#}");
        let no_body = line.replace(r#","body":"{}""#, "");
        assert!(archived_message(&no_body).is_err());
        assert_eq!(
            segment_range("history-000000000001-000000000360.jsonl"),
            Some((1, 360))
        );
        assert_eq!(segment_range("position"), None);
    }

    #[test]
    fn a_pass_copies_what_is_new_and_names_what_retention_dropped_first() {
        // Fresh archive, stream holding 1..=10.
        assert_eq!(
            PassPlan::new(0, 1, 10),
            PassPlan {
                copy: Some((1, 10)),
                lost: None
            }
        );
        // Archived through 10, nothing new.
        assert_eq!(
            PassPlan::new(10, 1, 10),
            PassPlan {
                copy: None,
                lost: None
            }
        );
        // Archived through 10; retention dropped through 14 before this pass.
        assert_eq!(
            PassPlan::new(10, 15, 20),
            PassPlan {
                copy: Some((15, 20)),
                lost: Some((11, 14))
            }
        );
        // Archived through 10; the stream emptied (first = last + 1) past it.
        assert_eq!(
            PassPlan::new(10, 21, 20),
            PassPlan {
                copy: None,
                lost: Some((11, 20))
            }
        );
        // Retention dropped only what was already archived.
        assert_eq!(
            PassPlan::new(10, 5, 12),
            PassPlan {
                copy: Some((11, 12)),
                lost: None
            }
        );
    }
}

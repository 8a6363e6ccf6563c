//! `murmur replay`: stored events over a range, to stdout or a file, read from the history
//! stream or from an archive folder (events retention has dropped included, no server
//! needed).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use murmur_subjects::{EventCodec, EventLog, StartAt, Subject};

use murmur_subjects::codec::DECODED_TOGETHER;
use murmur_subjects::projection::StoredMessage;

use crate::archive::Archive;
use crate::cli::events::{describe, event_json, filter_for};
use crate::settings::Settings;

/// Output formats of `replay`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One readable line per event.
    Pretty,
    /// One JSON object per line.
    Jsonl,
}

/// `murmur replay`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// First stream sequence (inclusive).
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Last stream sequence (inclusive).
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Start time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// End time (RFC 3339, exclusive).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Subject filter.
    #[arg(long)]
    pub subject: Option<String>,
    /// CloudEvent type.
    #[arg(long = "type")]
    pub ty: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Read the archive in this folder (`murmur up --archive-dir`) instead of the stream:
    /// also the events retention has dropped, verified the same way, with no server.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
}

/// Where a replay reads.
enum Source {
    Log(Box<EventLog>),
    Archive(Archive),
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayTotals {
    /// Events written out.
    pub events: u64,
    /// Stored messages that failed verification (skipped, reported).
    pub invalid: u64,
    /// First and last sequence written.
    pub first: Option<u64>,
    /// Last sequence written.
    pub last: Option<u64>,
}

/// Where a replay writes what it reads, a batch at a time.
struct ReplayOutput<'a> {
    codec: &'a EventCodec,
    args: &'a ReplayArgs,
    out: &'a mut dyn Write,
    bar: &'a indicatif::ProgressBar,
    first_seq: u64,
    /// Read and not yet written.
    held: Vec<StoredMessage>,
    totals: &'a mut ReplayTotals,
    write_err: &'a mut Option<std::io::Error>,
}

impl ReplayOutput<'_> {
    /// Holds `stored`; writes what is held once there are [`DECODED_TOGETHER`].
    fn take(&mut self, stored: StoredMessage) -> ControlFlow<()> {
        self.held.push(stored);
        if self.held.len() < DECODED_TOGETHER {
            return ControlFlow::Continue(());
        }
        self.write_held()
    }

    /// Decodes what is held together and writes it in order; `Break` once `--until` is
    /// reached or the output failed.
    fn write_held(&mut self) -> ControlFlow<()> {
        let mut held = std::mem::take(&mut self.held);
        let mut flow = ControlFlow::Continue(());
        if let Some(until) = self.args.until
            && let Some(at) = held.iter().position(|s| s.stored_at >= until)
        {
            held.truncate(at);
            flow = ControlFlow::Break(());
        }
        let decoded = self.codec.decode_messages(held.iter().map(|s| &s.message));
        for (stored, decoded) in held.iter().zip(decoded) {
            self.bar
                .set_position(stored.sequence.saturating_sub(self.first_seq) + 1);
            let message = &stored.message;
            match decoded {
                Ok(mut ev) => {
                    ev.stream_sequence = Some(stored.sequence);
                    ev.stored_at = Some(stored.stored_at);
                    if self.args.ty.as_deref().is_some_and(|t| t != ev.record.ty) {
                        continue;
                    }
                    let line = match self.args.format {
                        Format::Jsonl => event_json(
                            Some(stored.sequence),
                            Some(stored.stored_at),
                            message.subject.as_str(),
                            &ev,
                        )
                        .to_string(),
                        Format::Pretty => describe(Some(stored.sequence), &ev),
                    };
                    if let Err(e) = writeln!(self.out, "{line}") {
                        *self.write_err = Some(e);
                        return ControlFlow::Break(());
                    }
                    self.totals.events += 1;
                    self.totals.first.get_or_insert(stored.sequence);
                    self.totals.last = Some(stored.sequence);
                }
                Err(e) => {
                    self.totals.invalid += 1;
                    tracing::warn!(sequence = stored.sequence, error = %e, "invalid stored message skipped");
                }
            }
        }
        flow
    }
}

/// `murmur replay`: writes every event in the range; returns the totals.
pub async fn run(settings: &Settings, args: ReplayArgs) -> Result<ReplayTotals> {
    let filter = filter_for(
        args.subject.as_deref(),
        args.ty.as_deref(),
        settings.read_realm(),
    )?;
    let start = match (args.from_seq, args.since) {
        (Some(s), _) => StartAt::Sequence(s),
        (None, Some(t)) => StartAt::Time(t),
        (None, None) => StartAt::Beginning,
    };
    let source = match &args.archive {
        Some(dir) => Source::Archive(Archive::existing(dir)?),
        None => Source::Log(Box::new(settings.open_log("murmur-replay").await?)),
    };
    let last = match &source {
        Source::Archive(archive) => archive.position()?,
        Source::Log(log) => log.last_sequence(&settings.log.history_stream).await?,
    };
    let end = args.to_seq.map_or(last, |e| e.min(last));
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let first_seq = match start {
        StartAt::Sequence(s) => s,
        _ => 1,
    };
    let bar = indicatif::ProgressBar::new(end.saturating_sub(first_seq) + 1);
    if args.output.is_none() || settings.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seq  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut totals = ReplayTotals::default();
    let started = Instant::now();
    let mut write_err = None;
    let default_codec = EventCodec::default();
    let codec = match &source {
        Source::Log(log) => log.codec(),
        Source::Archive(_) => &default_codec,
    };
    let mut output = ReplayOutput {
        codec,
        args: &args,
        out: &mut out,
        bar: &bar,
        first_seq,
        held: Vec::with_capacity(DECODED_TOGETHER),
        totals: &mut totals,
        write_err: &mut write_err,
    };
    match &source {
        Source::Log(log) => {
            log.read(&filter, start, Some(end), |stored| output.take(stored))
                .await?;
        }
        Source::Archive(archive) => {
            // The stream filters on the server; an archive holds every event, filtered here.
            archive.read(first_seq, end, |stored| {
                let wanted = Subject::parse(stored.message.subject.as_str())
                    .is_ok_and(|subject| filter.matches(&subject));
                let from_time = match start {
                    StartAt::Time(t) => stored.stored_at >= t,
                    _ => true,
                };
                if !wanted || !from_time {
                    return ControlFlow::Continue(());
                }
                output.take(stored)
            })?;
        }
    }
    let _ = output.write_held();
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if settings.json {
        eprintln!("{}", serde_json::to_string(&totals)?);
    } else {
        eprintln!(
            "replayed {} events ({} invalid skipped) from seq {} to {} in {:.2}s ({:.0} events/s)",
            totals.events,
            totals.invalid,
            totals.first.map_or("-".into(), |s| s.to_string()),
            totals.last.map_or("-".into(), |s| s.to_string()),
            secs,
            totals.events as f64 / secs.max(1e-9)
        );
    }
    Ok(totals)
}

//! `murmur kb ...`: knowledge spaces from the command line. Each command opens a replica of
//! the space (latest snapshot + the changes after it), acts, and publishes its edits.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use murmur_knowledge::replica;
use murmur_knowledge::rpc::{QueryRequest, query_remote};
use murmur_knowledge::{
    FactDraft, FactId, FactView, KnowledgeReplica, Query, ReplicaConfig, ResolutionPolicy, Value,
};
use murmur_subjects::EventLog;
use murmur_subjects::events::AccessRole;

use crate::settings::Settings;

/// `murmur kb ...`
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Create a space you own.
    Open {
        /// Space name ([a-z0-9_-], ≤ 56 characters).
        space: String,
        /// Documents the space is split into (fixed for its life).
        #[arg(long, default_value_t = 4)]
        shards: u16,
        /// Title.
        #[arg(long, default_value = "")]
        title: String,
        /// Largest fact in bytes of JSON.
        #[arg(long, default_value_t = replica::DEFAULT_MAX_FACT_BYTES)]
        max_fact_bytes: u32,
    },
    /// Grant an agent a role (owner only).
    Grant {
        /// Space.
        space: String,
        /// The agent's public key.
        agent: String,
        /// writer | replica.
        #[arg(long, default_value = "writer")]
        role: String,
    },
    /// Revoke an agent's role (owner only).
    Revoke {
        /// Space.
        space: String,
        /// The agent's public key.
        agent: String,
        /// writer | replica.
        #[arg(long, default_value = "writer")]
        role: String,
    },
    /// Assert a fact; prints its id.
    Put {
        /// Space.
        space: String,
        /// Subject.
        subject: String,
        /// Predicate.
        predicate: String,
        /// Object: 42, 4.5, true, @ref, an RFC 3339 time, or text.
        object: String,
        /// Confidence 0..1.
        #[arg(long, default_value_t = 1.0)]
        confidence: f64,
        /// Tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Valid from (RFC 3339).
        #[arg(long)]
        valid_from: Option<DateTime<Utc>>,
        /// Valid to (RFC 3339).
        #[arg(long)]
        valid_to: Option<DateTime<Utc>>,
        /// The event the fact was derived from.
        #[arg(long)]
        source_event: Option<String>,
    },
    /// Set a shared field of a fact.
    Set {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
        /// Field name.
        field: String,
        /// Value (as for `put`).
        value: String,
    },
    /// Retract a fact (kept, marked retracted).
    Retract {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Mark a fact superseded by another.
    Supersede {
        /// Space.
        space: String,
        /// The old fact.
        old: String,
        /// The new fact.
        new: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// One fact: who asserted it and how confident each agent is, its fields with every
    /// conflicting value and its author, its status and resolutions.
    Get {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
        /// Print the fact as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Facts matching conditions.
    Query(QueryArgs),
    /// Facts whose fields hold conflicting values, with the values and their authors.
    Conflicts {
        /// Space.
        space: String,
    },
    /// Resolve a field's conflict (the resolution is recorded).
    Resolve {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
        /// Field.
        field: String,
        /// highest-confidence | most-recent | manual.
        #[arg(long, default_value = "highest-confidence")]
        policy: String,
        /// The value, for `manual`.
        #[arg(long)]
        value: Option<String>,
    },
    /// A fact's history: its state after each change in the log that touched it.
    History {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
    },
    /// Save every document of the space to the Object Store and compact its change log
    /// (replica role or owner).
    Snapshot {
        /// Space.
        space: String,
    },
    /// Heads and fact counts per document (compare replicas).
    Heads {
        /// Space.
        space: String,
    },
    /// What an automerge-repo peer opens the space with: each document's `automerge:` URL
    /// and the memory agents (replica role) whose gateway serves it
    /// (`examples/automerge-repo`).
    Peers {
        /// Space.
        space: String,
    },
    /// Keep a replica of the space open and run commands read from standard input, one per
    /// line (the syntax of `murmur kb`, plus `flush` and `refresh`); edits made while the
    /// servers are unreachable are kept and published once they answer.
    Session {
        /// Space.
        space: String,
        /// How long a command waits for the servers (reading, publishing) before it answers
        /// from local state or leaves its edits pending. While disconnected it does not wait.
        #[arg(long, default_value_t = 10_000)]
        wait_ms: u64,
    },
}

impl KbCommand {
    /// The space the command is about.
    pub fn space(&self) -> &str {
        match self {
            Self::Open { space, .. }
            | Self::Grant { space, .. }
            | Self::Revoke { space, .. }
            | Self::Put { space, .. }
            | Self::Set { space, .. }
            | Self::Retract { space, .. }
            | Self::Supersede { space, .. }
            | Self::Get { space, .. }
            | Self::Conflicts { space }
            | Self::Resolve { space, .. }
            | Self::History { space, .. }
            | Self::Snapshot { space }
            | Self::Heads { space }
            | Self::Peers { space }
            | Self::Session { space, .. } => space,
            Self::Query(args) => &args.space,
        }
    }
}

/// `murmur kb query` arguments.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Space.
    pub space: String,
    /// Subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// Predicate.
    #[arg(long)]
    pub predicate: Option<String>,
    /// Object value (as for `put`).
    #[arg(long)]
    pub object: Option<String>,
    /// Tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Author's public key.
    #[arg(long)]
    pub author: Option<String>,
    /// Lowest mean confidence.
    #[arg(long)]
    pub min_confidence: Option<f64>,
    /// Asserted at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Valid at (RFC 3339).
    #[arg(long)]
    pub valid_at: Option<DateTime<Utc>>,
    /// Read the space as of this history sequence.
    #[arg(long)]
    pub as_of: Option<u64>,
    /// Include retracted and superseded facts.
    #[arg(long)]
    pub all: bool,
    /// Ask a memory agent instead of reading the log here.
    #[arg(long)]
    pub remote: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_role(text: &str) -> Result<AccessRole> {
    match text {
        "writer" => Ok(AccessRole::Writer),
        "replica" => Ok(AccessRole::Replica),
        _ => bail!("role must be writer or replica, not {text:?}"),
    }
}

async fn open(settings: &Settings, space: &str) -> Result<KnowledgeReplica> {
    open_with(settings, space, None).await
}

/// [`open`], keeping unacknowledged changes in `outbox` when given.
async fn open_with(
    settings: &Settings,
    space: &str,
    outbox: Option<std::path::PathBuf>,
) -> Result<KnowledgeReplica> {
    let log = settings.open_log("murmur-kb").await?;
    let mut config = ReplicaConfig::space(space).compacting(settings.may_purge());
    if let Some(dir) = outbox {
        config = config.outbox_dir(dir);
    }
    let replica = KnowledgeReplica::open(log, config).await?;
    if replica.base().space(space).is_none() {
        bail!("no knowledge space {space:?} (create it with `murmur kb open {space}`)");
    }
    Ok(replica)
}

fn fact_id(text: &str) -> Result<FactId> {
    Ok(FactId::parse(text)?)
}

/// `kb get`: the fact's line, then everything a reader may need to trust it or settle it.
fn fact_summary(f: &FactView) -> Vec<String> {
    let time = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
    let mut out = vec![line(f)];
    out.push(format!(
        "  asserted by {} at {}",
        f.core.author,
        time(&f.core.asserted_at)
    ));
    if !f.core.tags.is_empty() {
        let tags: Vec<&str> = f.core.tags.iter().map(String::as_str).collect();
        out.push(format!("  tags: {}", tags.join(", ")));
    }
    if f.core.valid_from.is_some() || f.core.valid_to.is_some() {
        let bound = |t: &Option<DateTime<Utc>>| t.as_ref().map_or("…".to_string(), time);
        out.push(format!(
            "  valid: {} to {}",
            bound(&f.core.valid_from),
            bound(&f.core.valid_to)
        ));
    }
    if let Some(source) = &f.core.source_event {
        out.push(format!("  source event: {source}"));
    }
    for (agent, c) in &f.confidences {
        out.push(format!("  confidence {c:.2} from {agent}"));
    }
    for (field, d) in &f.fields {
        out.push(format!(
            "  {field} = {} (by {}, {})",
            d.winner.value.value,
            d.winner.author,
            time(&d.winner.value.at)
        ));
        for other in &d.others {
            out.push(format!(
                "    CONFLICT: also {} (by {}, {}); settle it with `kb resolve`",
                other.value.value,
                other.author,
                time(&other.value.at)
            ));
        }
    }
    if let Some(status) = &f.status {
        for s in status.all() {
            let what = match (&s.value.state, &s.value.superseded_by) {
                (murmur_knowledge::document::FactState::Superseded, Some(by)) => {
                    format!("superseded by {by}")
                }
                (state, _) => format!("{state:?}").to_lowercase(),
            };
            let why = if s.value.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", s.value.reason)
            };
            out.push(format!(
                "  {what} by {} at {}{why}",
                s.author,
                time(&s.value.at)
            ));
        }
    }
    for (field, r) in &f.resolutions {
        let policy = match &r.winner.value.policy {
            ResolutionPolicy::HighestConfidence => "highest confidence".to_string(),
            ResolutionPolicy::MostRecent => "most recent".to_string(),
            ResolutionPolicy::Manual { .. } => "manual".to_string(),
        };
        out.push(format!(
            "  {field} resolved to {} ({policy}, from {} values) by {} at {}",
            r.winner.value.chosen,
            r.winner.value.candidates.len(),
            r.winner.author,
            time(&r.winner.value.at)
        ));
    }
    out
}

fn line(f: &FactView) -> String {
    let mut s = format!(
        "{}  {} {} {}  conf={:.2}",
        f.id,
        f.core.subject,
        f.core.predicate,
        f.core.object,
        f.confidence()
    );
    if let Some(status) = &f.status {
        s.push_str(&format!("  [{:?}]", status.winner.value.state).to_lowercase());
    }
    for field in f.conflicting_fields() {
        s.push_str(&format!("  CONFLICT:{field}"));
    }
    s
}

/// Runs one `murmur kb` command: commands on a space open a replica of it, act, and publish
/// their edits before returning (an edit that cannot be stored fails the command).
pub async fn run(settings: &Settings, command: KbCommand) -> Result<()> {
    match command {
        KbCommand::Open { .. } | KbCommand::Grant { .. } | KbCommand::Revoke { .. } => {
            let log = settings.open_log("murmur-kb").await?;
            administer(&log, command).await
        }
        KbCommand::Query(args) if args.remote => {
            let log = settings.open_log("murmur-kb").await?;
            remote_query(&log, args).await
        }
        KbCommand::Session { space, wait_ms } => {
            let identity = settings.identity()?;
            let outbox = settings
                .data_dir
                .join("kb-outbox")
                .join(settings.realm.as_str())
                .join(identity.public_key());
            let r = open_with(settings, &space, Some(outbox.clone())).await?;
            session(r, &space, Duration::from_millis(wait_ms), &outbox).await
        }
        command => {
            let space = command.space().to_string();
            let mut r = open(settings, &space).await?;
            act(&mut r, command).await?;
            r.flush()
                .await
                .context("publishing the edits (they were not stored)")?;
            Ok(())
        }
    }
}

/// Space creation and access: events written by the owner, no replica needed.
async fn administer(log: &EventLog, command: KbCommand) -> Result<()> {
    match command {
        KbCommand::Open {
            space,
            shards,
            title,
            max_fact_bytes,
        } => {
            let seq = replica::open_space(log, &space, &title, shards, max_fact_bytes).await?;
            out!(
                "space {space} opened at sequence {seq}; owner {}",
                log.identity().public_key()
            );
        }
        KbCommand::Grant { space, agent, role } => {
            replica::set_access(log, &space, &agent, parse_role(&role)?, true).await?;
            out!("granted {role} in {space} to {agent}");
        }
        KbCommand::Revoke { space, agent, role } => {
            replica::set_access(log, &space, &agent, parse_role(&role)?, false).await?;
            out!("revoked {role} in {space} from {agent}");
        }
        other => bail!("not an administrative command: {other:?}"),
    }
    Ok(())
}

/// Runs a command against an open replica. Edits stay local (in the documents and the
/// outbox); the caller publishes them.
async fn act(r: &mut KnowledgeReplica, command: KbCommand) -> Result<()> {
    match command {
        KbCommand::Put {
            space,
            subject,
            predicate,
            object,
            confidence,
            tags,
            valid_from,
            valid_to,
            source_event,
        } => {
            let mut draft = FactDraft::new(subject, predicate, Value::parse_loose(&object))
                .confidence(confidence)
                .valid(valid_from, valid_to);
            draft.tags = tags.into_iter().collect();
            draft.source_event = source_event;
            let id = r.put(&space, &draft)?;
            out!("{id}");
        }
        KbCommand::Set {
            space,
            fact,
            field,
            value,
        } => {
            r.set_field(&space, &fact_id(&fact)?, &field, Value::parse_loose(&value))?;
            out!("set {field} of {fact}");
        }
        KbCommand::Retract {
            space,
            fact,
            reason,
        } => {
            r.retract(&space, &fact_id(&fact)?, &reason)?;
            out!("retracted {fact}");
        }
        KbCommand::Supersede {
            space,
            old,
            new,
            reason,
        } => {
            r.supersede(&space, &fact_id(&old)?, &fact_id(&new)?, &reason)?;
            out!("{old} superseded by {new}");
        }
        KbCommand::Get { space, fact, json } => {
            let view = r
                .fact(&space, &fact_id(&fact)?)?
                .with_context(|| format!("no fact {fact} in {space}"))?;
            if json {
                out!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                for l in fact_summary(&view) {
                    out!("{l}");
                }
            }
        }
        KbCommand::Query(args) => local_query(r, args)?,
        KbCommand::Peers { space } => {
            let access = r
                .base()
                .space(&space)
                .with_context(|| format!("no space {space:?}: open it with `murmur kb open`"))?;
            // The owner holds every role but serves nothing; memory agents are granted it.
            let gateways: Vec<String> = access
                .holders(AccessRole::Replica)
                .into_iter()
                .filter(|key| *key != access.owner)
                .collect();
            let realm = r.log().realm().as_str().to_string();
            for document in r.base().documents_of(&space) {
                out!(
                    "{document}  {}",
                    murmur_knowledge::repo::automerge_url(&realm, &document)
                );
            }
            if gateways.is_empty() {
                out!(
                    "no memory agent holds the replica role of {space}: grant one with \
                     `murmur kb grant {space} KEY --role replica` to serve peers"
                );
            }
            for key in gateways {
                out!("gateway {key}");
            }
        }
        KbCommand::Conflicts { space } => {
            let q = Query {
                conflicts_only: true,
                include_inactive: true,
                ..Default::default()
            };
            let facts = r.query(&space, &q, None)?;
            if facts.is_empty() {
                out!("no conflicts in {space}");
            }
            for f in facts {
                out!("{}", line(&f));
                for field in f.conflicting_fields() {
                    if let Some(d) = f.fields.get(&field) {
                        for v in d.all() {
                            out!(
                                "    {field} = {}  (by {}, at {})",
                                v.value.value,
                                v.author,
                                v.value.at.to_rfc3339()
                            );
                        }
                    } else if let Some(status) = &f.status {
                        for v in status.all() {
                            out!("    status = {:?}  (by {})", v.value.state, v.author);
                        }
                    }
                }
            }
        }
        KbCommand::Resolve {
            space,
            fact,
            field,
            policy,
            value,
        } => {
            let policy = match (policy.as_str(), value) {
                ("highest-confidence", _) => ResolutionPolicy::HighestConfidence,
                ("most-recent", _) => ResolutionPolicy::MostRecent,
                ("manual", Some(v)) => ResolutionPolicy::Manual {
                    value: Value::parse_loose(&v),
                },
                ("manual", None) => bail!("--policy manual needs --value"),
                (other, _) => bail!("unknown policy {other:?}"),
            };
            let record = r.resolve(&space, &fact_id(&fact)?, &field, policy)?;
            out!(
                "{field} of {fact} resolved to {} ({} candidates)",
                record.chosen,
                record.candidates.len()
            );
        }
        KbCommand::History { space, fact } => {
            let history = r.fact_history(&space, &fact_id(&fact)?)?;
            if history.is_empty() {
                bail!("no fact {fact} in the retained history of {space}");
            }
            for (seq, f) in history {
                out!("@{seq}: {}", line(&f));
                for (field, d) in &f.fields {
                    out!(
                        "    {field} = {} (by {})",
                        d.winner.value.value,
                        d.winner.author
                    );
                }
            }
        }
        KbCommand::Snapshot { space } => {
            let written = r.snapshot(&space).await?;
            for s in &written {
                out!(
                    "{}: {} bytes at sequence {} ({})",
                    s.document,
                    s.size,
                    s.stream_sequence,
                    s.object
                );
            }
            if written.is_empty() {
                out!("nothing new to snapshot in {space}");
            }
        }
        KbCommand::Heads { space } => {
            out!("{}", serde_json::to_string_pretty(&r.summary(&space))?);
        }
        other => bail!("not a command on a space's replica: {other:?}"),
    }
    Ok(())
}

fn query_of(args: &QueryArgs) -> Query {
    Query {
        subject: args.subject.clone(),
        predicate: args.predicate.clone(),
        object: args.object.as_deref().map(Value::parse_loose),
        tag: args.tag.clone(),
        author: args.author.clone(),
        min_confidence: args.min_confidence,
        asserted_after: args.since,
        valid_at: args.valid_at,
        include_inactive: args.all,
        ..Default::default()
    }
}

fn local_query(r: &KnowledgeReplica, args: QueryArgs) -> Result<()> {
    let facts = r.query(&args.space, &query_of(&args), args.as_of)?;
    print_facts(&facts, args.json)
}

/// Asks a memory agent (any replica-role holder serving the space) instead of reading here.
async fn remote_query(log: &EventLog, args: QueryArgs) -> Result<()> {
    let request = QueryRequest {
        query: query_of(&args),
        as_of: args.as_of,
        ..Default::default()
    };
    let (reply, signer) = query_remote(log, &args.space, &request, Duration::from_secs(10)).await?;
    eprintln!(
        "answered by memory agent {signer} at position {}",
        reply.position
    );
    print_facts(&reply.facts, args.json)
}

fn print_facts(facts: &[FactView], json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(facts)?);
    } else {
        for f in facts {
            out!("{}", line(f));
        }
        eprintln!("{} facts", facts.len());
    }
    Ok(())
}

/// One line of a `kb session`: a `murmur kb` command, or a session-only one.
#[derive(Debug, clap::Parser)]
#[command(name = "kb", no_binary_name = true, disable_help_flag = true)]
struct SessionLine {
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(Debug, Subcommand)]
// One value per input line, parsed and consumed at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum SessionCommand {
    /// Publish the outbox now.
    Flush,
    /// Read what the log has beyond this replica's position.
    Refresh,
    #[command(flatten)]
    Kb(KbCommand),
}

/// `murmur kb session`: one replica kept open while commands arrive on standard input, one
/// per line. Every command ends with a status line, `-- ok pending=N position=P` or
/// `-- error pending=N position=P: why`. Edits are applied locally at once and published with a bounded wait;
/// while the servers are unreachable they stay in the outbox (`pending`) and go out with a
/// later command — the session never drops an edit. Pending changes are also kept in
/// `outbox` (one folder per realm and identity in the data dir) until acknowledged, so a
/// session that dies while cut off leaves them to the next one.
async fn session(
    mut r: KnowledgeReplica,
    space: &str,
    wait: Duration,
    outbox: &std::path::Path,
) -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let restored = r.unpublished();
    if restored > 0 {
        // What it could not publish stays pending, as any edit of this session would.
        let _ = flush_within(&mut r, wait).await;
    }
    let restored = match (restored, r.unpublished()) {
        (0, _) => String::new(),
        (n, 0) => format!(", {n} changes of an earlier session published"),
        (n, left) => format!(", {n} changes of an earlier session restored, {left} pending"),
    };
    out!(
        "-- session {space} as {} at position {}{restored}",
        r.log().identity().public_key(),
        r.position()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(text) = lines.next_line().await? {
        let words = match shlex::split(&text) {
            Some(w) if w.is_empty() => continue,
            Some(w) => w,
            None => {
                out!("-- error pending={}: unbalanced quotes", r.unpublished());
                continue;
            }
        };
        let result = match SessionLine::try_parse_from(words) {
            Ok(line) => session_step(&mut r, space, line.command, wait).await,
            Err(e) => Err(anyhow::anyhow!("{}", e.render().to_string().trim())),
        };
        match result {
            Ok(()) => out!(
                "-- ok pending={} position={}",
                r.unpublished(),
                r.position()
            ),
            Err(e) => out!(
                "-- error pending={} position={}: {}",
                r.unpublished(),
                r.position(),
                format!("{e:#}").replace('\n', " ")
            ),
        }
    }
    // End of input: one last attempt to publish what is pending; report what could not be.
    let _ = flush_within(&mut r, wait).await;
    if r.unpublished() > 0 {
        bail!(
            "{} changes were not acknowledged by the server; they are kept in {} and published by the next `murmur kb session` of this identity",
            r.unpublished(),
            outbox.display()
        );
    }
    Ok(())
}

/// Fails at once when the client is not connected: a session cut off from the servers does
/// not wait for answers that cannot come.
fn ensure_connected(r: &KnowledgeReplica) -> Result<()> {
    use async_nats::connection::State;
    let state = r.log().client().connection_state();
    if state != State::Connected {
        bail!("not connected to a server ({state})");
    }
    Ok(())
}

/// Reads what the log has beyond the replica's position, within `wait`.
async fn refresh_within(r: &mut KnowledgeReplica, wait: Duration) -> Result<()> {
    ensure_connected(r)?;
    tokio::time::timeout(wait, r.refresh())
        .await
        .context("no answer in time")??;
    Ok(())
}

/// Publishes the outbox, within `wait`; what is not acknowledged stays pending.
async fn flush_within(r: &mut KnowledgeReplica, wait: Duration) -> Result<()> {
    ensure_connected(r)?;
    tokio::time::timeout(wait, r.flush())
        .await
        .context("no answer in time")??;
    Ok(())
}

async fn session_step(
    r: &mut KnowledgeReplica,
    space: &str,
    command: SessionCommand,
    wait: Duration,
) -> Result<()> {
    let command = match command {
        SessionCommand::Flush => {
            r.commit_pending(space)?;
            let before = r.unpublished();
            flush_within(r, wait)
                .await
                .context("the edits stay pending")?;
            out!("published {before}");
            return Ok(());
        }
        SessionCommand::Refresh => {
            let report = r.refresh().await?;
            out!("{report:?}");
            return Ok(());
        }
        SessionCommand::Kb(command) => command,
    };
    match command {
        KbCommand::Open { .. } | KbCommand::Grant { .. } | KbCommand::Revoke { .. } => {
            administer(r.log(), command).await
        }
        KbCommand::Session { .. } => bail!("already in a session"),
        KbCommand::Query(args) if args.remote => remote_query(r.log(), args).await,
        command => {
            if command.space() != space {
                bail!(
                    "this session holds space {space:?}, not {:?}",
                    command.space()
                );
            }
            // Read the newest state when the servers answer; answer from local state when
            // they do not (and say so).
            if let Err(e) = refresh_within(r, wait).await {
                eprintln!("answering from local state ({e:#})");
            }
            act(r, command).await?;
            // Edits become changes in the outbox now, so `pending` counts them even when
            // the flush below cannot run.
            r.commit_pending(space)?;
            if let Err(e) = flush_within(r, wait).await {
                eprintln!("edits kept pending ({e:#})");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_shows_authors_confidences_conflicts_status_and_resolutions() {
        let at = "2026-11-24T08:58:58.476Z";
        let fact: FactView = serde_json::from_value(serde_json::json!({
            "id": "ba5a911a57453e4c4b66e7b2852f6d70",
            "core": {
                "subject": "svc:web", "predicate": "owner",
                "object": {"type": "text", "value": "alice"},
                "tags": ["infra"], "author": "UALICE", "asserted_at": at
            },
            "confidences": {"UALICE": 1.0, "UBOB": 0.5},
            "fields": {"team": {
                "winner": {"value": {"value": {"type": "text", "value": "payments"}, "at": at}, "author": "UBOB"},
                "others": [{"value": {"value": {"type": "text", "value": "platform"}, "at": at}, "author": "UALICE"}]
            }},
            "status": {"winner": {"value": {
                "state": "superseded", "superseded_by": "00000000000000000000000000000001",
                "reason": "moved", "at": at
            }, "author": "UALICE"}, "others": []},
            "resolutions": {"port": {"winner": {"value": {
                "field": "port", "policy": {"policy": "most_recent"},
                "chosen": {"type": "int", "value": 8080}, "candidates": [], "at": at
            }, "author": "UBOB"}, "others": []}}
        }))
        .expect("a fact view");
        let text = fact_summary(&fact).join("\n");
        for expected in [
            "svc:web owner \"alice\"  conf=0.75  [superseded]  CONFLICT:team",
            "asserted by UALICE at 2026-11-24 08:58:58.476 UTC",
            "tags: infra",
            "confidence 0.50 from UBOB",
            "team = \"payments\" (by UBOB,",
            "CONFLICT: also \"platform\" (by UALICE,",
            "superseded by 00000000000000000000000000000001 by UALICE at 2026-11-24 08:58:58.476 UTC: moved",
            "port resolved to 8080 (most recent, from 0 values) by UBOB",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
    }
}

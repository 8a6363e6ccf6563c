//! `murmur kb ...`: knowledge spaces from the command line. Each command opens a replica of
//! the space (latest snapshot + the changes after it), acts, and publishes its edits.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use murmur_knowledge::document::{FactView, ResolutionPolicy};
use murmur_knowledge::replica::{self, KnowledgeReplica, ReplicaConfig};
use murmur_knowledge::rpc::{QueryRequest, query_remote};
use murmur_knowledge::{FactDraft, FactId, Query, Value};
use murmur_subjects::events::AccessRole;

use crate::cli::Settings;

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
    /// One fact as JSON (fields with every conflicting value and its author).
    Get {
        /// Space.
        space: String,
        /// Fact id.
        fact: String,
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
    let log = settings.open_log("murmur-kb").await?;
    let replica = KnowledgeReplica::open(log, ReplicaConfig::space(space)).await?;
    if replica.base().space(space).is_none() {
        bail!("no knowledge space {space:?} (create it with `murmur kb open {space}`)");
    }
    Ok(replica)
}

fn fact_id(text: &str) -> Result<FactId> {
    Ok(FactId::parse(text)?)
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

/// Runs one `murmur kb` command.
pub async fn run(settings: &Settings, command: KbCommand) -> Result<()> {
    match command {
        KbCommand::Open {
            space,
            shards,
            title,
            max_fact_bytes,
        } => {
            let log = settings.open_log("murmur-kb").await?;
            let seq = replica::open_space(&log, &space, &title, shards, max_fact_bytes).await?;
            out!(
                "space {space} opened at sequence {seq}; owner {}",
                log.identity().public_key()
            );
        }
        KbCommand::Grant { space, agent, role } => {
            let log = settings.open_log("murmur-kb").await?;
            replica::set_access(&log, &space, &agent, parse_role(&role)?, true).await?;
            out!("granted {role} in {space} to {agent}");
        }
        KbCommand::Revoke { space, agent, role } => {
            let log = settings.open_log("murmur-kb").await?;
            replica::set_access(&log, &space, &agent, parse_role(&role)?, false).await?;
            out!("revoked {role} in {space} from {agent}");
        }
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
            let mut r = open(settings, &space).await?;
            let mut draft = FactDraft::new(subject, predicate, Value::parse_loose(&object))
                .confidence(confidence)
                .valid(valid_from, valid_to);
            draft.tags = tags.into_iter().collect();
            draft.source_event = source_event;
            let id = r.put(&space, &draft)?;
            r.flush().await?;
            out!("{id}");
        }
        KbCommand::Set {
            space,
            fact,
            field,
            value,
        } => {
            let mut r = open(settings, &space).await?;
            r.set_field(&space, &fact_id(&fact)?, &field, Value::parse_loose(&value))?;
            r.flush().await?;
            out!("set {field} of {fact}");
        }
        KbCommand::Retract {
            space,
            fact,
            reason,
        } => {
            let mut r = open(settings, &space).await?;
            r.retract(&space, &fact_id(&fact)?, &reason)?;
            r.flush().await?;
            out!("retracted {fact}");
        }
        KbCommand::Supersede {
            space,
            old,
            new,
            reason,
        } => {
            let mut r = open(settings, &space).await?;
            r.supersede(&space, &fact_id(&old)?, &fact_id(&new)?, &reason)?;
            r.flush().await?;
            out!("{old} superseded by {new}");
        }
        KbCommand::Get { space, fact } => {
            let r = open(settings, &space).await?;
            let view = r
                .fact(&space, &fact_id(&fact)?)?
                .with_context(|| format!("no fact {fact} in {space}"))?;
            out!("{}", serde_json::to_string_pretty(&view)?);
        }
        KbCommand::Query(args) => query(settings, args).await?,
        KbCommand::Conflicts { space } => {
            let r = open(settings, &space).await?;
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
            let mut r = open(settings, &space).await?;
            let record = r.resolve(&space, &fact_id(&fact)?, &field, policy)?;
            r.flush().await?;
            out!(
                "{field} of {fact} resolved to {} ({} candidates)",
                record.chosen,
                record.candidates.len()
            );
        }
        KbCommand::History { space, fact } => {
            let r = open(settings, &space).await?;
            let id = fact_id(&fact)?;
            let mut sequences: Vec<u64> = r
                .base()
                .documents_of(&space)
                .iter()
                .filter_map(|d| r.base().document(d))
                .flat_map(|d| d.applied.iter().map(|(seq, ..)| *seq))
                .collect();
            sequences.sort_unstable();
            sequences.dedup();
            let mut last: Option<String> = None;
            for seq in sequences {
                let facts = r.base().facts(&space, Some(seq))?;
                let now = facts
                    .iter()
                    .find(|f| f.id == id)
                    .map(|f| serde_json::to_string(f).unwrap_or_default());
                if now.is_some() && now != last {
                    if let Some(f) = facts.iter().find(|f| f.id == id) {
                        out!("@{seq}: {}", line(f));
                        for (field, d) in &f.fields {
                            out!(
                                "    {field} = {} (by {})",
                                d.winner.value.value,
                                d.winner.author
                            );
                        }
                    }
                    last = now;
                }
            }
            if last.is_none() {
                bail!("no fact {fact} in the retained history of {space}");
            }
        }
        KbCommand::Snapshot { space } => {
            let mut r = open(settings, &space).await?;
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
            let mut r = open(settings, &space).await?;
            out!("{}", serde_json::to_string_pretty(&r.summary(&space))?);
        }
    }
    Ok(())
}

async fn query(settings: &Settings, args: QueryArgs) -> Result<()> {
    let q = Query {
        subject: args.subject,
        predicate: args.predicate,
        object: args.object.as_deref().map(Value::parse_loose),
        tag: args.tag,
        author: args.author,
        min_confidence: args.min_confidence,
        asserted_after: args.since,
        valid_at: args.valid_at,
        include_inactive: args.all,
        ..Default::default()
    };
    let facts = if args.remote {
        let log = settings.open_log("murmur-kb").await?;
        let request = QueryRequest {
            query: q,
            as_of: args.as_of,
        };
        let (reply, signer) = query_remote(
            log.client(),
            log.realm(),
            &args.space,
            &request,
            Duration::from_secs(10),
        )
        .await?;
        eprintln!(
            "answered by memory agent {signer} at position {}",
            reply.position
        );
        reply.facts
    } else {
        open(settings, &args.space)
            .await?
            .query(&args.space, &q, args.as_of)?
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&facts)?);
    } else {
        for f in &facts {
            out!("{}", line(f));
        }
        eprintln!("{} facts", facts.len());
    }
    Ok(())
}

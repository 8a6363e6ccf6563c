//! `murmur vote propose|ls|show|cast` and `murmur voter run`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use murmur_agents::voter::{PolicyVoter, run_voter};
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_subjects::events::{AgentJoined, Choice, ProposalOpened, Protocol, VoteCast};
use murmur_subjects::{Draft, Identity, Payload as _, Projector, Token};

use crate::cli::Settings;
use crate::config::load_or_create_identity;

/// `murmur vote propose` arguments.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// The question.
    #[arg(long)]
    pub question: String,
    /// A voter's public key (repeatable); `KEY=WEIGHT` for weighted voting.
    #[arg(long = "voter")]
    pub voters: Vec<String>,
    /// Also every online agent offering this capability (weight 1).
    #[arg(long)]
    pub capability: Option<String>,
    /// simple | qualified:N/D | weighted | unanimous | adaptive:simple:MIN | adaptive:qualified:N/D:MIN
    #[arg(long, default_value = "simple")]
    pub protocol: String,
    /// Fewest votes for a decision.
    #[arg(long, default_value_t = 1)]
    pub quorum: u32,
    /// Seconds until the deadline.
    #[arg(long, default_value_t = 60)]
    pub deadline_s: u64,
    /// Payload (JSON) the voters' policies read.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Category (adaptive thresholds are per category).
    #[arg(long, default_value = "general")]
    pub category: String,
    /// Stimulus 0..1 (adaptive protocol).
    #[arg(long, default_value_t = 1.0)]
    pub stimulus: f64,
    /// Weighted protocol: take each voter's weight from its reputation (1 + tasks it
    /// completed, from the task log), snapshotted into the proposal.
    #[arg(long)]
    pub weights_from_reputation: bool,
}

/// Parses a protocol argument.
pub fn parse_protocol(text: &str) -> Result<Protocol> {
    let fraction = |f: &str| -> Result<(u32, u32)> {
        let (n, d) = f.split_once('/').context("fraction must be N/D")?;
        let (n, d): (u32, u32) = (n.parse()?, d.parse()?);
        if d == 0 || n > d {
            bail!("fraction {f} must be between 0 and 1");
        }
        Ok((n, d))
    };
    let parts: Vec<&str> = text.split(':').collect();
    Ok(match parts.as_slice() {
        ["simple"] => Protocol::SimpleMajority,
        ["weighted"] => Protocol::Weighted,
        ["unanimous"] => Protocol::Unanimous,
        ["qualified", f] => {
            let (numerator, denominator) = fraction(f)?;
            Protocol::Qualified {
                numerator,
                denominator,
            }
        }
        ["adaptive", "simple", min] => Protocol::AdaptiveThreshold {
            rule: Box::new(Protocol::SimpleMajority),
            min_responders: min.parse()?,
        },
        ["adaptive", "qualified", f, min] => {
            let (numerator, denominator) = fraction(f)?;
            Protocol::AdaptiveThreshold {
                rule: Box::new(Protocol::Qualified {
                    numerator,
                    denominator,
                }),
                min_responders: min.parse()?,
            }
        }
        _ => bail!("unknown protocol {text:?}"),
    })
}

/// The `--protocol` text that [`parse_protocol`] reads back as `protocol`.
pub fn protocol_text(protocol: &Protocol) -> String {
    match protocol {
        Protocol::SimpleMajority => "simple".into(),
        Protocol::Weighted => "weighted".into(),
        Protocol::Unanimous => "unanimous".into(),
        Protocol::Qualified {
            numerator,
            denominator,
        } => format!("qualified:{numerator}/{denominator}"),
        Protocol::AdaptiveThreshold {
            rule,
            min_responders,
        } => format!("adaptive:{}:{min_responders}", protocol_text(rule)),
    }
}

/// `murmur vote propose`: prints the proposal id.
pub async fn propose(settings: &Settings, args: ProposeArgs) -> Result<()> {
    let protocol = parse_protocol(&args.protocol)?;
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("--payload is not JSON")?;
    let log = settings.open_log("murmur-vote").await?;
    let mut voters = BTreeMap::new();
    for v in &args.voters {
        let (key, weight) = match v.split_once('=') {
            Some((k, w)) => (k.to_string(), w.parse::<u32>().context("weight")?),
            None => (v.clone(), 1),
        };
        voters.insert(key, weight);
    }
    if let Some(capability) = &args.capability {
        let mut registry = Projector::new(
            log.clone(),
            RegistryProjection {
                realm: settings.realm.clone(),
            },
        );
        registry.catch_up().await?;
        for (id, a) in &registry.state().agents {
            if a.status == AgentStatus::Online && a.capabilities.contains(capability) {
                voters.entry(id.clone()).or_insert(1);
            }
        }
    }
    if voters.is_empty() {
        bail!("no voters: give --voter KEY or --capability C with online agents");
    }
    if args.weights_from_reputation {
        if !matches!(protocol, Protocol::Weighted) {
            bail!("--weights-from-reputation needs --protocol weighted");
        }
        let mut tasks = Projector::new(
            log.clone(),
            murmur_coordination::tasks::TaskProjection {
                realm: settings.realm.clone(),
                coordinators: settings.coordinators.clone(),
            },
        );
        tasks.catch_up().await?;
        let rep = murmur_coordination::consensus::reputation(tasks.state());
        for (voter, weight) in voters.iter_mut() {
            *weight = rep.get(voter).copied().unwrap_or(1);
        }
    }
    let id = Token::new(format!(
        "prop-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    ))?;
    let opened = ProposalOpened {
        question: args.question,
        payload,
        protocol,
        voters,
        quorum: args.quorum,
        deadline: chrono::Utc::now() + chrono::Duration::seconds(args.deadline_s as i64),
        category: args.category,
        stimulus: args.stimulus,
    };
    log.append_expected(
        Draft::new(id.clone(), &opened)?,
        murmur_subjects::log::Expected::NoEvents,
    )
    .await?;
    out!("{id}");
    Ok(())
}

async fn consensus(settings: &Settings) -> Result<murmur_coordination::consensus::Consensus> {
    let log = settings.open_log("murmur-vote").await?;
    consensus_from(settings, &log).await
}

async fn consensus_from(
    settings: &Settings,
    log: &murmur_subjects::EventLog,
) -> Result<murmur_coordination::consensus::Consensus> {
    let log = log.clone();
    let mut p = Projector::new(
        log,
        ConsensusProjection {
            realm: settings.realm.clone(),
            talliers: settings.coordinators.clone(),
        },
    );
    p.catch_up().await?;
    Ok(p.state().clone())
}

/// `murmur vote ls`.
pub async fn ls(settings: &Settings) -> Result<()> {
    let c = consensus(settings).await?;
    if settings.json {
        out!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    for (id, p) in &c.proposals {
        let state = p.decided.as_ref().map_or("open", |d| d.outcome.as_str());
        out!(
            "{id}  {state:<10} votes {}/{}  {}",
            p.votes.len(),
            p.opened.voters.len(),
            p.opened.question
        );
    }
    Ok(())
}

/// `murmur vote show ID`: the proposal as the log has it (question, rule, each voter's vote,
/// refused votes, the decision and its tally), then its events; `--json` prints the state.
pub async fn show(settings: &Settings, id: &str) -> Result<()> {
    let log = settings.open_log("murmur-vote").await?;
    let c = consensus_from(settings, &log).await?;
    let p = c
        .proposals
        .get(id)
        .with_context(|| format!("no proposal {id} in realm {}", settings.realm))?;
    if settings.json {
        out!("{}", serde_json::to_string_pretty(p)?);
        return Ok(());
    }
    for line in describe_proposal(id, p) {
        out!("{line}");
    }
    out!("events:");
    let timeline =
        crate::cli::aggregate_timeline(&log, murmur_subjects::Domain::Proposal, id).await?;
    for line in timeline {
        out!("{line}");
    }
    Ok(())
}

/// The human form of one proposal's state (no I/O).
fn describe_proposal(id: &str, p: &murmur_coordination::consensus::Proposal) -> Vec<String> {
    let o = &p.opened;
    let state = match (&p.decided, &p.withdrawn) {
        (Some(d), _) => format!(
            "{} (approve {} · reject {} · abstain {} · {} votes counted)",
            d.outcome, d.approve, d.reject, d.abstain, d.votes
        ),
        (None, Some(reason)) => format!("withdrawn: {reason}"),
        (None, None) if p.deadline_passed => "deadline passed, not decided yet".into(),
        (None, None) => "open".into(),
    };
    let protocol = protocol_text(&o.protocol);
    let mut lines = vec![
        format!("{id}  {state}"),
        format!("question  {}", o.question),
        format!(
            "rule      {protocol} · quorum {} · deadline {} · category {} · stimulus {}",
            o.quorum,
            o.deadline.format("%Y-%m-%d %H:%M:%S UTC"),
            o.category,
            o.stimulus
        ),
        format!("proposer  {}", p.proposer),
        format!("payload   {}", o.payload),
    ];
    let counted = p.decided.as_ref().and_then(|d| d.participants.as_ref());
    lines.push(match counted {
        Some(_) => "voters    (key, weight, vote; * counted in the decision)".into(),
        None => "voters    (key, weight, vote)".into(),
    });
    for (voter, weight) in &o.voters {
        let vote = p
            .votes
            .get(voter)
            .map_or("-".to_string(), |c| format!("{c:?}").to_lowercase());
        let mark = if counted.is_some_and(|c| c.contains(voter)) {
            " *"
        } else {
            ""
        };
        lines.push(format!("  {voter}  {weight}  {vote}{mark}"));
    }
    if !p.refused.is_empty() {
        lines.push("refused votes (voter, reason):".into());
        for (voter, reason) in &p.refused {
            lines.push(format!("  {voter}  {reason}"));
        }
    }
    lines
}

/// `murmur vote withdraw ID`: only the proposer's withdrawal counts.
pub async fn withdraw(settings: &Settings, id: &str, reason: String) -> Result<()> {
    let log = settings.open_log("murmur-vote").await?;
    let draft = Draft::new(
        Token::new(id)?,
        &murmur_subjects::events::ProposalWithdrawn { reason },
    )?;
    log.append(continue_flow(&log, id, draft).await?).await?;
    out!("withdrew {id}");
    Ok(())
}

/// `draft` as the next event of proposal `id`'s flow (its correlation id, caused by `opened`);
/// unchanged for a proposal the log does not have (the event is refused and recorded anyway).
/// Reads only that proposal's events, not every proposal's.
async fn continue_flow(log: &murmur_subjects::EventLog, id: &str, draft: Draft) -> Result<Draft> {
    let events = murmur_subjects::projection::read_aggregate(
        log,
        murmur_subjects::Domain::Proposal,
        &Token::new(id)?,
    )
    .await?;
    // The first `opened` counts, as in the fold.
    let opened = events
        .into_iter()
        .filter_map(|(_, event)| event.ok())
        .find(|e| e.record.ty == ProposalOpened::TYPE);
    Ok(match opened {
        Some(opened) => draft.caused_by(&opened.record),
        None => draft,
    })
}

/// `murmur vote cast ID CHOICE`.
pub async fn cast(settings: &Settings, id: &str, choice: &str, reason: String) -> Result<()> {
    let choice = match choice {
        "approve" => Choice::Approve,
        "reject" => Choice::Reject,
        "abstain" => Choice::Abstain,
        other => bail!("choice {other:?} is not approve, reject or abstain"),
    };
    let log = settings.open_log("murmur-vote").await?;
    let draft = Draft::new(Token::new(id)?, &VoteCast { choice, reason })?;
    log.append(continue_flow(&log, id, draft).await?).await?;
    out!(
        "voted {choice:?} on {id} as {}",
        log.identity().public_key()
    );
    Ok(())
}

/// `murmur voter run` arguments.
#[derive(Debug, clap::Args)]
pub struct VoterRunArgs {
    /// Policy file (TOML; see `murmur_agents::voter::PolicyVoter`).
    #[arg(long)]
    pub policy: std::path::PathBuf,
    /// Name shown in listings.
    #[arg(long, default_value = "voter")]
    pub name: String,
    /// Use a fresh identity instead of the identity file.
    #[arg(long)]
    pub ephemeral_identity: bool,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
}

/// `murmur voter run`: a policy voter agent until ctrl-c / SIGTERM.
pub async fn voter_run(settings: &Settings, args: VoterRunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let policy: PolicyVoter =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.policy.display()))?;
    let identity = if args.ephemeral_identity {
        Identity::generate()
    } else {
        load_or_create_identity(&settings.identity_file)?
    };
    let log = settings.open_log_as("murmur-voter", identity).await?;
    let agent = Agent::join(
        log,
        AgentSpec {
            manifest: AgentJoined {
                name: args.name.clone(),
                kind: "voter".into(),
                capabilities: vec!["vote".into()],
                labels: Default::default(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                hardware: crate::agent_cli::hardware(),
                slots: 1,
                handles: Some(murmur_agents::voter::handled_types()),
            },
            heartbeat: Duration::from_millis(args.heartbeat_ms),
        },
    )
    .await?;
    eprintln!("voter {} joined as {}", args.name, agent.id());
    out!("{}", agent.id());
    let stop = crate::agent_cli::shutdown_signal()?;
    let cast = run_voter(&agent, &policy, settings.coordinators.clone(), stop).await?;
    agent.enter_lame_duck();
    agent.leave("shutdown").await?;
    eprintln!("voter left after {cast} votes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse() {
        assert_eq!(
            parse_protocol("simple").expect("ok"),
            Protocol::SimpleMajority
        );
        assert_eq!(
            parse_protocol("qualified:2/3").expect("ok"),
            Protocol::Qualified {
                numerator: 2,
                denominator: 3
            }
        );
        assert!(matches!(
            parse_protocol("adaptive:simple:2").expect("ok"),
            Protocol::AdaptiveThreshold {
                min_responders: 2,
                ..
            }
        ));
        assert!(parse_protocol("qualified:3/2").is_err());
        assert!(parse_protocol("dictator").is_err());
    }

    #[test]
    fn the_example_policy_parses_and_votes_by_its_rules() {
        use murmur_agents::voter::Voter as _;
        let policy: PolicyVoter =
            toml::from_str(include_str!("../../examples/voter-policy.toml")).expect("parses");
        let opened = |payload: serde_json::Value| ProposalOpened {
            question: "release?".into(),
            payload,
            protocol: Protocol::SimpleMajority,
            voters: BTreeMap::new(),
            quorum: 1,
            deadline: chrono::DateTime::from_timestamp(1_000, 0).expect("time"),
            category: "general".into(),
            stimulus: 1.0,
        };
        let choice = |payload| policy.vote(&opened(payload)).map(|v| v.choice);
        assert_eq!(
            choice(serde_json::json!({"tests_passed": true, "risk": 0.9})),
            Some(Choice::Reject)
        );
        assert_eq!(
            choice(serde_json::json!({"tests_passed": true, "risk": 0.2})),
            Some(Choice::Approve)
        );
        assert_eq!(choice(serde_json::json!({})), Some(Choice::Abstain));
    }

    #[test]
    fn protocol_text_reads_back_as_the_same_protocol() {
        for text in [
            "simple",
            "weighted",
            "unanimous",
            "qualified:2/3",
            "adaptive:simple:2",
            "adaptive:qualified:3/4:5",
        ] {
            let protocol = parse_protocol(text).expect("parses");
            assert_eq!(protocol_text(&protocol), text);
        }
    }

    #[test]
    fn a_decided_proposal_shows_its_tally_votes_and_refusals() {
        use murmur_coordination::consensus::{Proposal, VoteRefusal};
        use murmur_subjects::events::ProposalDecided;
        let p = Proposal {
            opened: ProposalOpened {
                question: "ship it?".into(),
                payload: serde_json::json!({"risk": 0.2}),
                protocol: Protocol::Qualified {
                    numerator: 2,
                    denominator: 3,
                },
                voters: [("UA", 1), ("UB", 2), ("UC", 1)]
                    .map(|(k, w)| (k.to_string(), w))
                    .into(),
                quorum: 2,
                deadline: chrono::DateTime::from_timestamp(1_000, 0).expect("time"),
                category: "release".into(),
                stimulus: 0.5,
            },
            electorate: ["UA", "UB", "UC"].map(String::from).into(),
            votes: [("UA", Choice::Approve), ("UB", Choice::Approve)]
                .map(|(k, c)| (k.to_string(), c))
                .into(),
            refused: vec![("UX".into(), VoteRefusal::NotAVoter)],
            decided: Some(ProposalDecided {
                outcome: "approved".into(),
                approve: 3,
                reject: 0,
                abstain: 0,
                votes: 2,
                participants: Some(["UA", "UB"].map(String::from).into()),
            }),
            deadline_passed: false,
            deadline_checks: 0,
            proposer: "UP".into(),
            withdrawn: None,
            opened_event: Default::default(),
            last_cause: None,
        };
        let lines = describe_proposal("prop-1", &p);
        assert_eq!(
            lines[0],
            "prop-1  approved (approve 3 · reject 0 · abstain 0 · 2 votes counted)"
        );
        assert!(
            lines[2].starts_with(
                "rule      qualified:2/3 · quorum 2 · deadline 1970-01-01 00:16:40 UTC"
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"  UA  1  approve *".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"  UB  2  approve *".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"  UC  1  -".to_string()), "{lines:?}");
        let refused = lines
            .iter()
            .position(|l| l.starts_with("refused votes"))
            .expect("refusals listed");
        assert!(lines[refused + 1].starts_with("  UX  "), "{lines:?}");
    }
}

//! `murmur vote`: open, list, show, watch, withdraw and cast on proposals; the adaptive
//! protocol's thresholds.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_subjects::events::{Choice, ProposalOpened, Protocol, VoteCast};
use murmur_subjects::{Draft, Projector, Token};

use crate::settings::Settings;

/// `murmur vote ...`
#[derive(Debug, Subcommand)]
pub enum VoteCommand {
    /// Open a proposal; prints its id.
    Propose(crate::cli::vote::ProposeArgs),
    /// List proposals.
    Ls {
        /// Only proposals in this state (repeatable).
        #[arg(long = "state", value_parser = clap::builder::PossibleValuesParser::new(
            murmur_coordination::consensus::Proposal::STATE_NAMES
        ))]
        states: Vec<String>,
    },
    /// One proposal: votes, refused votes, decision.
    Show {
        /// Proposal id.
        id: String,
    },
    /// Follow a proposal until it is decided or withdrawn: each vote as it is stored
    /// (voter, choice, reason), then the outcome and tally (`--json`: the proposal's state).
    /// Exit 0 only when it is approved.
    Watch {
        /// Proposal id.
        id: String,
        /// Give up after this many seconds (default: until 10 s after its deadline).
        #[arg(long)]
        timeout_s: Option<u64>,
    },
    /// Withdraw a proposal you opened.
    Withdraw {
        /// Proposal id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Adaptive protocol: each voter's response threshold per category (a voter answers a
    /// proposal whose stimulus reaches its threshold; voters not listed have the initial one).
    Thresholds {
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
    },
    /// Cast a vote as this participant; fails (the vote stays recorded as refused) when it
    /// does not count.
    Cast {
        /// Proposal id.
        id: String,
        /// approve | reject | abstain.
        #[arg(value_parser = ["approve", "reject", "abstain"])]
        choice: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `murmur vote propose` arguments.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// The question.
    #[arg(long)]
    pub question: String,
    /// A voter's public key (repeatable); `KEY=WEIGHT` for weighted voting.
    #[arg(long = "voter")]
    pub voters: Vec<String>,
    /// Also every online agent offering this capability (weight 1); with `--label`, only
    /// those that also carry the labels.
    #[arg(long)]
    pub capability: Option<String>,
    /// Also every online agent carrying this label, `key=value` (repeatable: all must
    /// match; weight 1).
    #[arg(long = "label")]
    pub labels: Vec<String>,
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
    /// Then follow it as `murmur vote watch` does, until it is decided (exit 0 only when
    /// approved).
    #[arg(long)]
    pub wait: bool,
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

/// The online agents offering `capability` (if given) and carrying every label (pure).
pub(crate) fn electorate_by<'a>(
    agents: &'a BTreeMap<String, murmur_coordination::registry::AgentEntry>,
    capability: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> impl Iterator<Item = &'a String> {
    agents.iter().filter_map(move |(id, a)| {
        let matches = a.status == AgentStatus::Online
            && capability.is_none_or(|c| a.capabilities.contains(c))
            && labels.iter().all(|(k, v)| a.labels.get(k) == Some(v));
        matches.then_some(id)
    })
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
    let labels = crate::cli::task::parse_labels(&args.labels)?;
    if args.capability.is_some() || !labels.is_empty() {
        let mut registry = Projector::new(
            log.clone(),
            RegistryProjection {
                realm: settings.realm.clone(),
            },
        );
        registry.catch_up().await?;
        for id in electorate_by(
            &registry.state().agents,
            args.capability.as_deref(),
            &labels,
        ) {
            voters.entry(id.clone()).or_insert(1);
        }
    }
    if voters.is_empty() {
        if args.capability.is_some() || !labels.is_empty() {
            bail!(
                "no voters: no online agent matches{}{}, and no --voter KEY was given",
                args.capability
                    .as_ref()
                    .map_or(String::new(), |c| format!(" capability {c:?}")),
                if labels.is_empty() {
                    String::new()
                } else {
                    format!(" labels {labels:?}")
                }
            );
        }
        bail!(
            "no voters: give --voter KEY, or --capability C / --label K=V matching online agents"
        );
    }
    if args.weights_from_reputation {
        if !matches!(protocol, Protocol::Weighted) {
            bail!("--weights-from-reputation needs --protocol weighted");
        }
        let mut tasks = Projector::new(
            log.clone(),
            murmur_coordination::tasks::TaskProjection {
                realm: settings.realm.clone(),
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
    murmur_coordination::consensus::check_proposal(&opened)
        .context("the proposal cannot be opened")?;
    log.append_expected(
        Draft::new(id.clone(), &opened)?,
        murmur_subjects::log::Expected::NoEvents,
    )
    .await?;
    out!("{id}");
    if args.wait {
        return watch(settings, id.as_str(), None).await;
    }
    Ok(())
}

/// How long `vote watch` waits past a proposal's deadline by default: a tallier closes an
/// expired proposal when it next looks.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// `murmur vote watch ID`: follows a proposal until it is decided or withdrawn, printing each
/// vote as it is stored (voter, choice, reason) and then the outcome with its tally; `--json`
/// prints the proposal's final state instead. Fails unless the proposal is approved.
pub async fn watch(settings: &Settings, id: &str, timeout_s: Option<u64>) -> Result<()> {
    let log = settings.open_log("murmur-vote").await?;
    let mut fold = consensus_projector(settings, &log).await?;
    let Some(proposal) = fold.state().proposals.get(id) else {
        bail!("{}", not_open(fold.state(), id).unwrap_or_default());
    };
    let limit = match timeout_s {
        Some(s) => Duration::from_secs(s),
        None => {
            (proposal.opened.deadline - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                + WATCH_GRACE
        }
    };
    let until = tokio::time::Instant::now() + limit;
    // The votes' reasons are in their events, not in the fold: the proposal's `vote_cast`
    // events are read when the fold shows a vote (counted or refused) it had not, each
    // read starting after the last vote shown.
    use murmur_subjects::Payload as _;
    let votes = murmur_subjects::SubjectFilter::plane(murmur_subjects::Plane::Evt)
        .realm(settings.realm.clone())
        .domain(murmur_subjects::Domain::Proposal)
        .aggregate(Token::new(id)?)
        .verb(Token::new(VoteCast::VERB)?);
    let mut next_vote = 1;
    let mut seen_votes = None;
    loop {
        let p = &fold.state().proposals[id];
        let votes_now = (p.votes.len(), p.refused.len());
        if !settings.json && seen_votes != Some(votes_now) {
            seen_votes = Some(votes_now);
            log.read(
                &votes,
                murmur_subjects::StartAt::Sequence(next_vote),
                None,
                |stored| {
                    next_vote = stored.sequence + 1;
                    let event =
                        log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at));
                    if let Ok(event) = event
                        && let Ok(vote) = event.payload::<VoteCast>()
                    {
                        let voter = event.emitter();
                        let choice = format!("{:?}", vote.choice).to_lowercase();
                        out!("vote  {voter}  {choice:<7}  {}", vote.reason);
                    }
                    std::ops::ControlFlow::Continue(())
                },
            )
            .await?;
        }
        if p.decided.is_some() || p.withdrawn.is_some() {
            break;
        }
        if tokio::time::Instant::now() >= until {
            bail!(
                "{id} is still open after {} s (deadline {}); proposals are decided by a tallier: is one running (`murmur tallier`, or `murmur up`)?",
                limit.as_secs(),
                p.opened.deadline.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if let Err(e) = fold.poll(Duration::from_millis(200)).await {
            e.wait_out_if_transient("the log", Duration::from_millis(250))
                .await?;
        }
    }
    let p = &fold.state().proposals[id];
    if settings.json {
        out!("{}", serde_json::to_string(p)?);
    } else {
        for line in describe_proposal(id, p) {
            out!("{line}");
        }
    }
    match (&p.decided, &p.withdrawn) {
        (Some(d), _) if d.outcome == "approved" => Ok(()),
        (Some(d), _) => bail!("{id} ended {}", d.outcome),
        (None, Some(reason)) => bail!("{id} was withdrawn: {reason}"),
        (None, None) => bail!("{id} is still open"),
    }
}

async fn consensus(settings: &Settings) -> Result<murmur_coordination::consensus::Consensus> {
    let log = settings.open_log("murmur-vote").await?;
    consensus_from(settings, &log).await
}

async fn consensus_from(
    settings: &Settings,
    log: &murmur_subjects::EventLog,
) -> Result<murmur_coordination::consensus::Consensus> {
    Ok(consensus_projector(settings, log).await?.take_state())
}

/// `murmur vote ls`.
pub async fn ls(settings: &Settings, states: &[String]) -> Result<()> {
    let c = consensus(settings).await?;
    let wanted = |state: &str| states.is_empty() || states.iter().any(|s| s == state);
    if settings.json {
        let listed: BTreeMap<&String, &murmur_coordination::consensus::Proposal> = c
            .proposals
            .iter()
            .filter(|(_, p)| wanted(p.state_name()))
            .collect();
        let refused: BTreeMap<&String, _> = c
            .refused_proposals
            .iter()
            .filter(|_| wanted("refused"))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "proposals": listed,
                "refused": refused,
            }))?
        );
        return Ok(());
    }
    if wanted("refused") {
        for (id, e) in &c.refused_proposals {
            out!("{id}  refused    {e}");
        }
    }
    for (id, p) in c.proposals.iter().filter(|(_, p)| wanted(p.state_name())) {
        out!(
            "{id}  {:<10} votes {}/{}  {}",
            p.state_name(),
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
    match (c.proposals.get(id), c.refused_proposals.get(id)) {
        (Some(p), _) if settings.json => out!("{}", serde_json::to_string_pretty(p)?),
        (Some(p), _) => {
            for line in describe_proposal(id, p) {
                out!("{line}");
            }
        }
        (None, Some(e)) if settings.json => {
            out!("{}", serde_json::json!({ "refused": e }));
        }
        (None, Some(e)) => out!("{id}  refused when opened: {e}"),
        (None, None) => bail!("no proposal {id} in realm {}", settings.realm),
    }
    if settings.json {
        return Ok(());
    }
    out!("events:");
    let timeline =
        crate::cli::events::aggregate_timeline(&log, murmur_subjects::Domain::Proposal, id).await?;
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
    let adaptive = match &o.protocol {
        Protocol::AdaptiveThreshold { min_responders, .. } => Some(*min_responders),
        _ => None,
    };
    if let Some(min) = adaptive {
        lines.push(format!(
            "responds  {} of {} voters (their threshold for {:?} was at most the stimulus {}); at least {} needed",
            p.electorate.len(),
            o.voters.len(),
            o.category,
            o.stimulus,
            min.max(o.quorum)
        ));
    }
    let counted = p.decided.as_ref().and_then(|d| d.participants.as_ref());
    lines.push(match counted {
        Some(_) => "voters    (key, weight, vote; * counted in the decision)".into(),
        None => "voters    (key, weight, vote)".into(),
    });
    for (voter, weight) in &o.voters {
        let vote = match p.votes.get(voter) {
            Some(c) => format!("{c:?}").to_lowercase(),
            None if adaptive.is_some() && !p.electorate.contains(voter) => {
                "- (does not respond: threshold above the stimulus)".into()
            }
            None => "-".into(),
        };
        let mark = if counted.is_some_and(|c| c.contains(voter)) {
            " *"
        } else {
            ""
        };
        let why = p
            .reasons
            .get(voter)
            .map(|r| format!(" — {r}"))
            .unwrap_or_default();
        lines.push(format!("  {voter}  {weight}  {vote}{mark}{why}"));
    }
    if !p.refused.is_empty() {
        lines.push("refused votes (voter, reason):".into());
        for (voter, reason) in &p.refused {
            lines.push(format!("  {voter}  {reason}"));
        }
    }
    lines
}

/// `murmur vote thresholds [--category C]`: the adaptive protocol's thresholds as the log
/// has moved them.
pub async fn thresholds(settings: &Settings, category: Option<&str>) -> Result<()> {
    let c = consensus(settings).await?;
    let entries: Vec<(&str, &str, f64)> = c
        .thresholds
        .entries()
        .filter(|(cat, _, _)| category.is_none_or(|want| want == *cat))
        .collect();
    if settings.json {
        let rows: Vec<_> = entries
            .iter()
            .map(|(category, voter, threshold)| {
                serde_json::json!({"category": category, "voter": voter, "threshold": threshold})
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for (category, voter, threshold) in &entries {
        out!("{category:<16} {voter}  {threshold:.2}");
    }
    out!(
        "({} moved; every other voter and category starts at {:.2}. Responding lowers a threshold by {:.2}, staying silent raises it by {:.2})",
        entries.len(),
        murmur_coordination::consensus::Thresholds::INITIAL,
        murmur_coordination::consensus::Thresholds::LEARN,
        murmur_coordination::consensus::Thresholds::FORGET,
    );
    Ok(())
}

/// The consensus fold over the whole log, kept to read again after a write.
async fn consensus_projector(
    settings: &Settings,
    log: &murmur_subjects::EventLog,
) -> Result<Projector<ConsensusProjection>> {
    let mut p = Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: settings.realm.clone(),
        },
    );
    p.catch_up().await?;
    Ok(p)
}

/// Why `id` is not an open proposal in `c`, if it is not.
fn not_open(c: &murmur_coordination::consensus::Consensus, id: &str) -> Option<String> {
    match c.proposals.get(id) {
        None => Some(match c.refused_proposals.get(id) {
            Some(e) => format!("proposal {id} was refused when it was opened: {e}"),
            None => format!("no proposal {id} in this realm"),
        }),
        Some(p) => match (&p.decided, &p.withdrawn) {
            (Some(d), _) => Some(format!("proposal {id} is already decided: {}", d.outcome)),
            (None, Some(reason)) => Some(format!("proposal {id} was withdrawn: {reason}")),
            (None, None) => None,
        },
    }
}

/// `murmur vote withdraw ID`: only the proposer's withdrawal counts, and only while the
/// proposal is open; checked before writing, and confirmed from the log after.
pub async fn withdraw(settings: &Settings, id: &str, reason: String) -> Result<()> {
    let log = settings.open_log("murmur-vote").await?;
    let me = log.identity().public_key().to_string();
    let mut fold = consensus_projector(settings, &log).await?;
    if let Some(why) = not_open(fold.state(), id) {
        bail!("nothing to withdraw: {why}");
    }
    let proposal = &fold.state().proposals[id];
    if proposal.proposer != me {
        bail!(
            "only the proposer ({}) can withdraw {id}; this identity is {me}",
            proposal.proposer
        );
    }
    let draft = Draft::new(
        Token::new(id)?,
        &murmur_subjects::events::ProposalWithdrawn { reason },
    )?;
    log.append(proposal.continue_flow(draft, None)).await?;
    fold.catch_up().await?;
    match &fold.state().proposals[id] {
        p if p.withdrawn.is_some() => out!("withdrew {id}"),
        // A tallier decided it before the withdrawal was stored.
        p => bail!(
            "{id} was decided before the withdrawal was stored: {}",
            p.decided.as_ref().map_or("?", |d| d.outcome.as_str())
        ),
    }
    Ok(())
}

/// `murmur vote cast ID CHOICE`: writes the vote, then reads the log again and says whether
/// it counts; a refused vote stays recorded (with its reason, in `vote show`) and the command
/// fails with that reason.
pub async fn cast(settings: &Settings, id: &str, choice: &str, reason: String) -> Result<()> {
    let log = settings.open_log("murmur-vote").await?;
    out!("{}", cast_on(&log, id, choice, reason).await?);
    Ok(())
}

/// Casts a vote on `log` as its identity and says whether it counts (an error says why not).
pub async fn cast_on(
    log: &murmur_subjects::EventLog,
    id: &str,
    choice: &str,
    reason: String,
) -> Result<String> {
    let choice = match choice {
        "approve" => Choice::Approve,
        "reject" => Choice::Reject,
        "abstain" => Choice::Abstain,
        other => bail!("choice {other:?} is not approve, reject or abstain"),
    };
    let me = log.identity().public_key().to_string();
    let mut fold = Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: log.realm().clone(),
        },
    );
    fold.catch_up().await?;
    let refused_before = |c: &murmur_coordination::consensus::Consensus| {
        c.proposals
            .get(id)
            .map_or(0, |p| p.refused.iter().filter(|(v, _)| *v == me).count())
    };
    let before = refused_before(fold.state());
    let draft = Draft::new(Token::new(id)?, &VoteCast { choice, reason })?;
    let draft = match fold.state().proposals.get(id) {
        Some(p) => p.continue_flow(draft, None),
        None => draft,
    };
    log.append(draft).await?;
    fold.catch_up().await?;
    let state = fold.state();
    let choice_text = format!("{choice:?}").to_lowercase();
    let Some(p) = state.proposals.get(id) else {
        bail!(
            "the vote does not count ({}); it is recorded as refused",
            not_open(state, id).unwrap_or_default()
        );
    };
    if refused_before(state) > before {
        let why = p
            .refused
            .iter()
            .rev()
            .find(|(v, _)| *v == me)
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        bail!(
            "the vote on {id} does not count: {why}; it is recorded as refused (`murmur vote show {id}`)"
        );
    }
    match p.decided.as_ref() {
        None => Ok(format!(
            "voted {choice_text} on {id} as {me}: counted (the proposal is open)"
        )),
        Some(d) if d.participants.as_ref().is_none_or(|c| c.contains(&me)) => Ok(format!(
            "voted {choice_text} on {id} as {me}: counted in the decision: {}",
            d.outcome
        )),
        // Stored before the decision was, after the votes that fixed it.
        Some(d) => bail!(
            "the vote on {id} came too late to count: the votes before it had already fixed the outcome ({}); it is recorded",
            d.outcome
        ),
    }
}

/// Runs `murmur vote ...`.
pub async fn run(settings: &Settings, command: VoteCommand) -> Result<()> {
    match command {
        VoteCommand::Propose(args) => propose(settings, args).await,
        VoteCommand::Ls { states } => ls(settings, &states).await,
        VoteCommand::Show { id } => show(settings, &id).await,
        VoteCommand::Watch { id, timeout_s } => watch(settings, &id, timeout_s).await,
        VoteCommand::Withdraw { id, reason } => withdraw(settings, &id, reason).await,
        VoteCommand::Thresholds { category } => thresholds(settings, category.as_deref()).await,
        VoteCommand::Cast { id, choice, reason } => cast(settings, &id, &choice, reason).await,
    }
}

#[cfg(test)]
mod tests;

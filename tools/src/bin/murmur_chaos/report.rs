//! What one run found: the faults as they happened, every workload's outcome, and the
//! checker's verdict, written as the report JSON.

use serde::Serialize;

use crate::check::{LogCheck, ReplicaCheck};
use crate::faults::Fault;

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Which.
    pub fault: Fault,
    /// Seconds into the run it was injected.
    pub at_s: f64,
    /// Seconds from injecting it until healing it was done (the hold, then restarting a
    /// node, handing it the lead…).
    pub healed_s: f64,
    /// Seconds from healing it until a workload write was acknowledged again (`None`: not
    /// within the deadline).
    pub recovered_s: Option<f64>,
    /// The longest stretch, in seconds, with no write of any workload acknowledged between
    /// injecting the fault and recovering from it: how long it stopped the platform.
    pub outage_s: f64,
    /// What healing it took beyond undoing it, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Tasks whose life (submitted → completed, the log's stored times) overlapped the fault
    /// or its recovery: p50 and p99 in ms.
    pub task_latency_ms: Option<(f64, f64)>,
    /// Proposals whose life (opened → decided) overlapped it: p50 and p99 in ms.
    pub decision_latency_ms: Option<(f64, f64)>,
}

/// Tasks: submitted → completed or dead-lettered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskOutcome {
    /// Submissions acknowledged.
    pub acked: usize,
    /// Submissions sent and never acknowledged (not accepted; they may or may not be in the
    /// log).
    pub unacknowledged: usize,
    /// Completed (once, per the fold).
    pub completed: usize,
    /// Dead-lettered.
    pub dead_lettered: usize,
    /// Neither, after the quiet period.
    pub unresolved: Vec<String>,
    /// Tasks with more than one `completed` event stored (the fold counts the first).
    pub completions_stored_twice: usize,
}

/// Proposals and votes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProposalOutcome {
    /// Openings acknowledged.
    pub acked: usize,
    /// Decided.
    pub decided: usize,
    /// Not decided after the quiet period.
    pub undecided: Vec<String>,
    /// Vote events stored.
    pub votes_stored: usize,
    /// (proposal, voter) pairs with more than one vote stored.
    pub votes_stored_twice: usize,
    /// Decisions counting more votes than distinct voters of the electorate voted: a vote
    /// counted twice.
    pub tally_mismatches: Vec<String>,
}

/// Knowledge writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KnowledgeOutcome {
    /// Facts whose change was acknowledged.
    pub acked: usize,
    /// Acknowledged facts a fresh replica does not hold.
    pub missing: usize,
    /// Whether the three writers and a fresh replica ended with equal heads.
    pub converged: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The faults, as listed.
    pub schedule: String,
    /// `always` or `default` (2 min).
    pub sync: &'static str,
    /// nats-server's version.
    pub server_version: String,
    /// Seconds the workloads ran.
    pub workload_s: f64,
    /// Faults as injected.
    pub faults: Vec<FaultRecord>,
    /// The log against every acknowledged submission and opening.
    pub log: LogCheck,
    /// Tasks.
    pub tasks: TaskOutcome,
    /// Proposals.
    pub proposals: ProposalOutcome,
    /// Knowledge.
    pub knowledge: KnowledgeOutcome,
    /// Whether the projections followed live through the faults equal a replay from
    /// sequence 1 (coordinator: registry and tasks; consensus).
    pub live_equals_replay: bool,
    /// Every stream's replicas on the three nodes once nothing writes: equal, and as many
    /// as asked for.
    pub replicas: ReplicaCheck,
    /// The platform's processes that ended on their own during the run.
    pub processes_exited: Vec<String>,
    /// Where the live projections differ from the replay (JSON paths), when they do.
    pub live_replay_differences: Vec<String>,
    /// Messages the live projections were delivered again at or below what they had
    /// folded, and skipped.
    pub live_redelivered: u64,
    /// Seconds from the workloads' end until every task and proposal was final.
    pub settle_s: f64,
    /// Events stamped 30 s or more ahead of the log's clock and accepted: the clock-skew
    /// fault at work.
    pub events_stamped_ahead: usize,
    /// Tasks whose life overlapped no fault nor its recovery: p50 and p99 in ms.
    pub calm_task_latency_ms: Option<(f64, f64)>,
    /// Proposals whose life overlapped no fault: opened → decided, p50 / p99 ms.
    pub calm_decision_latency_ms: Option<(f64, f64)>,
}

impl RunReport {
    /// Whether the run found nothing lost, duplicated or wrong.
    pub fn clean(&self) -> bool {
        self.log.clean()
            && self.tasks.unresolved.is_empty()
            && self.proposals.undecided.is_empty()
            && self.proposals.tally_mismatches.is_empty()
            && self.knowledge.missing == 0
            && self.knowledge.converged
            && self.live_equals_replay
            && self.replicas.differing.is_empty()
            && self.replicas.history_differing.is_empty()
            && self.processes_exited.is_empty()
    }
}

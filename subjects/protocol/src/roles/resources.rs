//! The names murmur keeps on the server — streams, buckets, request/reply endpoints — and who serves and calls the service and agent-protocol subjects.

use serde::{Deserialize, Serialize};

use super::*;
use crate::subject::{Domain, Plane, Token};

/// Where a permission subject puts the connecting participant's own public key: the server
/// fills it in from the user's credentials (a scoped signing key template), so each
/// participant may use only its own aggregate, inbox and endpoints.
pub const SELF_KEY: &str = "{{subject()}}";

/// The JetStream resources murmur keeps, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceNames {
    /// The history stream.
    pub history: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// The agent presence KV bucket.
    pub presence: String,
    /// The projection checkpoint KV bucket.
    pub checkpoints: String,
    /// The artifact Object Store bucket.
    pub artifacts: String,
    /// The knowledge snapshot Object Store bucket.
    pub knowledge: String,
}

/// The agent presence KV bucket.
pub const PRESENCE_BUCKET: &str = "MURMUR_PRESENCE";
/// The projection checkpoint KV bucket.
pub const CHECKPOINT_BUCKET: &str = "MURMUR_CHECKPOINTS";
/// The artifact Object Store bucket (objects named by SHA-256).
pub const ARTIFACT_BUCKET: &str = "MURMUR_ARTIFACTS";
/// The knowledge snapshot Object Store bucket.
pub const KNOWLEDGE_BUCKET: &str = "MURMUR_KNOWLEDGE";

impl Default for ResourceNames {
    fn default() -> Self {
        Self::for_streams("MURMUR_HISTORY", "MURMUR_DLQ")
    }
}

impl ResourceNames {
    /// The names with these history and dead-letter streams (a `murmur_subjects::LogConfig`'s).
    pub fn for_streams(history: &str, dlq: &str) -> Self {
        Self {
            history: history.into(),
            dlq: dlq.into(),
            presence: PRESENCE_BUCKET.into(),
            checkpoints: CHECKPOINT_BUCKET.into(),
            artifacts: ARTIFACT_BUCKET.into(),
            knowledge: KNOWLEDGE_BUCKET.into(),
        }
    }
}

/// A request/reply endpoint on the `rpc` plane.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// What it is called in the matrix.
    pub name: &'static str,
    /// Subject domain.
    pub domain: Domain,
    /// Subject verb.
    pub verb: &'static str,
    /// Roles that serve it (subscribe).
    pub served_by: &'static [Role],
    /// Whether a server answers only on its own aggregate (its own key).
    pub own_aggregate: bool,
    /// Roles that may call it (publish requests).
    pub called_by: &'static [Role],
    /// One line.
    pub description: &'static str,
}

impl Endpoint {
    /// The endpoint's subject for `aggregate` in `realm`.
    pub fn subject(&self, realm: &Token, aggregate: &Token) -> crate::Subject {
        crate::Subject::new(
            realm.clone(),
            Plane::Rpc,
            self.domain,
            aggregate.clone(),
            // Declared verbs are valid tokens (checked by a unit test).
            Token::new(self.verb).unwrap_or_else(|_| Token::new("invalid").expect("literal")),
        )
    }

    pub(super) fn pattern(&self, realm: &str, own: bool) -> String {
        let aggregate = if own { SELF_KEY } else { "*" };
        format!(
            "murmur.v1.{realm}.rpc.{}.{aggregate}.{}",
            self.domain, self.verb
        )
    }
}

/// An agent's status: its counters (`murmur status`, tests).
pub const AGENT_STATUS: Endpoint = Endpoint {
    name: "agent status",
    domain: Domain::Agent,
    verb: "status",
    served_by: Role::AGENTS,
    own_aggregate: true,
    called_by: &[
        Role::Coordinator,
        Role::Monitor,
        Role::Submitter,
        Role::Observer,
    ],
    description: "an agent's counters",
};

/// A knowledge space query answered by a memory agent (`kb query --remote`).
pub const SPACE_QUERY: Endpoint = Endpoint {
    name: "space query",
    domain: Domain::Space,
    verb: "query",
    served_by: &[Role::Memory],
    own_aggregate: false,
    called_by: &[
        Role::Submitter,
        Role::Orchestrator,
        Role::Inference,
        Role::Memory,
        Role::Worker,
        Role::Observer,
    ],
    description: "facts of a space, answered by a memory agent (read-only)",
};

/// The Automerge sync protocol for one knowledge document, served by a memory agent.
pub const KNOWLEDGE_SYNC: Endpoint = Endpoint {
    name: "knowledge sync",
    domain: Domain::Knowledge,
    verb: "sync",
    served_by: &[Role::Memory],
    own_aggregate: false,
    called_by: &[
        Role::Submitter,
        Role::Orchestrator,
        Role::Inference,
        Role::Memory,
        Role::Observer,
    ],
    description: "catch a replica up on one document (read-only, signed replies)",
};

/// automerge-repo peers' frames to one memory agent's gateway (its own key as aggregate):
/// each frame is signed by the peer, and the gateway answers on the peer's inbox
/// ([`repo_inbox`]).
pub const KNOWLEDGE_REPO: Endpoint = Endpoint {
    name: "knowledge repo",
    domain: Domain::Knowledge,
    verb: "repo",
    served_by: &[Role::Memory],
    own_aggregate: true,
    called_by: &[
        Role::Submitter,
        Role::Orchestrator,
        Role::Inference,
        Role::Memory,
        Role::Worker,
        Role::Observer,
    ],
    description: "an automerge-repo peer's connection to a memory agent (signed frames)",
};

/// Where a gateway sends its frames to the automerge-repo peer with key `peer` on connection
/// `session`: under the peer's inbox, which only that peer may subscribe to.
pub fn repo_inbox(peer: &str, session: &str) -> String {
    format!("{}.repo.{session}", inbox_prefix(peer))
}

/// Every declared endpoint.
pub const ENDPOINTS: [Endpoint; 4] = [AGENT_STATUS, SPACE_QUERY, KNOWLEDGE_SYNC, KNOWLEDGE_REPO];

/// Roles that answer `$SRV.PING|INFO|STATS` (NATS micro services).
pub const SERVICE_RESPONDERS: &[Role] = Role::AGENTS;
/// Roles that may ask `$SRV.PING|INFO|STATS`.
pub const SERVICE_CALLERS: &[Role] = &[
    Role::Coordinator,
    Role::Monitor,
    Role::Submitter,
    Role::Observer,
];

/// Roles that may host Synadia Agent Protocol agents: murmur's prompt gateway submits each
/// prompt as a task, so it needs what a submitter has.
pub const AGENT_PROTOCOL_HOSTS: &[Role] = &[Role::Submitter];
/// Roles that may discover and prompt protocol agents: submitters (a prompt to murmur's
/// gateway becomes a task) and workers (a bridge agent runs its tasks by prompting an
/// outside protocol agent). The SDKs' shared reply prefix means a caller can also read other
/// callers' answers (the protocol's choice), so no other role gets it.
pub const AGENT_PROTOCOL_CALLERS: &[Role] = &[Role::Submitter, Role::Worker];

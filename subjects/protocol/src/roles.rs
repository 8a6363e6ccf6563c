//! Roles and what each may do, declared once next to the subjects.
//!
//! Every participant holds a role. Each declared event type names the roles that may emit
//! it ([`crate::Payload::EMITTED_BY`]); the request/reply endpoints below name who serves and
//! who calls them; the JetStream resources name who reads and who writes them. From these
//! declarations [`permissions`] derives what the NATS server enforces for each role (the
//! scoped signing key templates of `murmur up`'s accounts), and the folds use the same
//! declarations for decisions ([`crate::Payload::ROLE_CHECKED`]): authority is enforced by
//! the server and again by the log. No permission subject is written by hand anywhere else.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::subject::{Domain, Plane, Token};

/// A participant's role in a realm.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Administers the realm: everything, including stream configuration, purges and
    /// granting roles.
    Operator,
    /// Assigns tasks, expires leases, dead-letters tasks.
    Coordinator,
    /// Decides proposals from the votes in the log.
    Tallier,
    /// Dead-letters what the log holds but no fold can accept.
    Auditor,
    /// Records agents offline when their heartbeats stop, and resumed when heard again.
    Monitor,
    /// Runs tasks of any capability.
    Worker,
    /// Turns workspaces into task graphs and submits them.
    Planner,
    /// Compiles workspaces (a task runner).
    Compiler,
    /// Runs test binaries (a task runner).
    Executor,
    /// Runs tool tasks (`tool.fs`); never submits tasks, so it cannot reach a language model.
    Tool,
    /// Runs language-model tasks; never submits tasks (so it executes no tool) and never
    /// writes knowledge (memory is read-only for it).
    Inference,
    /// Holds knowledge replicas: answers queries and sync, records snapshots.
    Memory,
    /// Casts votes on proposals.
    Voter,
    /// A person or program using the platform: submits tasks, opens proposals, writes
    /// knowledge.
    Submitter,
    /// Reads the log, the live plane and `$SRV`; writes nothing.
    Observer,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 15] = [
        Role::Operator,
        Role::Coordinator,
        Role::Tallier,
        Role::Auditor,
        Role::Monitor,
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
        Role::Memory,
        Role::Voter,
        Role::Submitter,
        Role::Observer,
    ];

    /// The roles that join as agents (manifest, heartbeats, `$SRV` discovery).
    pub const AGENTS: &'static [Role] = &[
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
        Role::Memory,
        Role::Voter,
    ];

    /// The roles that run tasks: they are assigned work and report its results.
    pub const TASK_RUNNERS: &'static [Role] = &[
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
    ];

    /// The role's name, as on the command line and in credentials.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Coordinator => "coordinator",
            Role::Tallier => "tallier",
            Role::Auditor => "auditor",
            Role::Monitor => "monitor",
            Role::Worker => "worker",
            Role::Planner => "planner",
            Role::Compiler => "compiler",
            Role::Executor => "executor",
            Role::Tool => "tool",
            Role::Inference => "inference",
            Role::Memory => "memory",
            Role::Voter => "voter",
            Role::Submitter => "submitter",
            Role::Observer => "observer",
        }
    }

    /// One line on what the role is for.
    pub const fn description(self) -> &'static str {
        match self {
            Role::Operator => "administers the realm: streams, purges, roles, everything",
            Role::Coordinator => "assigns tasks, expires leases, dead-letters tasks",
            Role::Tallier => "decides proposals from the votes in the log",
            Role::Auditor => "dead-letters what no fold can accept",
            Role::Monitor => "records agents offline and resumed",
            Role::Worker => "runs tasks of any capability",
            Role::Planner => "turns workspaces into task graphs and submits them",
            Role::Compiler => "compiles workspaces",
            Role::Executor => "runs test binaries",
            Role::Tool => "runs tool tasks; submits none (no model access)",
            Role::Inference => "runs model tasks; submits none (no tools), writes no knowledge",
            Role::Memory => "holds knowledge replicas, answers queries and sync",
            Role::Voter => "casts votes on proposals",
            Role::Submitter => "submits tasks, opens proposals, writes knowledge",
            Role::Observer => "reads the log, the live plane and $SRV; writes nothing",
        }
    }

    /// Whether the folds judge some decision by this role (a type with
    /// [`crate::Payload::ROLE_CHECKED`] names it): then a participant needs the role granted
    /// in the log, not only in its credentials, for its decisions to count.
    pub fn decides(self) -> bool {
        Catalog::standard()
            .iter()
            .any(|t| t.role_checked && t.emitted_by.contains(&self))
    }

    /// Whether the role joins as an agent.
    pub fn is_agent(self) -> bool {
        Role::AGENTS.contains(&self)
    }

    /// Whether the role runs tasks.
    pub fn runs_tasks(self) -> bool {
        Role::TASK_RUNNERS.contains(&self)
    }

    /// The role an agent of `kind` (`murmur agent run --kind`) runs as: the kinds named
    /// after a role map to it, any other kind is a generic worker.
    pub fn for_agent_kind(kind: &str) -> Role {
        match kind {
            "planner" => Role::Planner,
            "compiler" => Role::Compiler,
            "executor" => Role::Executor,
            "tool" => Role::Tool,
            "inference" => Role::Inference,
            "memory" => Role::Memory,
            "voter" => Role::Voter,
            _ => Role::Worker,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; roles: {roles}", roles = Role::ALL.map(Role::as_str).join(", "))]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}

/// A set of roles (what one identity holds at one log position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleSet(u32);

impl RoleSet {
    /// No role.
    pub const EMPTY: RoleSet = RoleSet(0);

    /// The set holding `roles`.
    pub fn of(roles: &[Role]) -> Self {
        roles.iter().fold(Self::EMPTY, |s, r| s.with(*r))
    }

    /// This set plus `role`.
    pub fn with(self, role: Role) -> Self {
        RoleSet(self.0 | (1 << role as u32))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & (1 << role as u32) != 0
    }

    /// Whether any of `roles` is in the set.
    pub fn any_of(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.contains(*r))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no role");
        }
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

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

    fn pattern(&self, realm: &str, own: bool) -> String {
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
        Role::Inference,
        Role::Memory,
        Role::Observer,
    ],
    description: "catch a replica up on one document (read-only, signed replies)",
};

/// Every declared endpoint.
pub const ENDPOINTS: [Endpoint; 3] = [AGENT_STATUS, SPACE_QUERY, KNOWLEDGE_SYNC];

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

/// How a role may use a JetStream resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read: stream info, consumers, direct and message gets.
    Read,
    /// Read, and write entries (KV keys, objects); never configure, purge or delete.
    Write,
}

/// What kind of JetStream resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResourceKind {
    Stream,
    KeyValue { own_key: bool },
    Objects,
}

struct ResourceGrant {
    kind: ResourceKind,
    name: fn(&ResourceNames) -> &str,
    readers: &'static [Role],
    writers: &'static [Role],
}

const EVERY_ROLE_BUT_OPERATOR: &[Role] = &[
    Role::Coordinator,
    Role::Tallier,
    Role::Auditor,
    Role::Monitor,
    Role::Worker,
    Role::Planner,
    Role::Compiler,
    Role::Executor,
    Role::Tool,
    Role::Inference,
    Role::Memory,
    Role::Voter,
    Role::Submitter,
    Role::Observer,
];

/// Who reads and writes each resource (the operator does everything). Stream events are
/// written through their subjects (the catalog's `EMITTED_BY`), so streams list readers only.
const RESOURCES: [ResourceGrant; 6] = [
    ResourceGrant {
        kind: ResourceKind::Stream,
        name: |n| &n.history,
        readers: EVERY_ROLE_BUT_OPERATOR,
        writers: &[],
    },
    ResourceGrant {
        kind: ResourceKind::Stream,
        name: |n| &n.dlq,
        readers: &[Role::Auditor, Role::Observer],
        writers: &[],
    },
    ResourceGrant {
        kind: ResourceKind::KeyValue { own_key: true },
        name: |n| &n.presence,
        readers: &[
            Role::Coordinator,
            Role::Monitor,
            Role::Submitter,
            Role::Observer,
        ],
        writers: Role::AGENTS,
    },
    ResourceGrant {
        kind: ResourceKind::KeyValue { own_key: false },
        name: |n| &n.checkpoints,
        readers: &[Role::Observer],
        writers: &[
            Role::Coordinator,
            Role::Tallier,
            Role::Auditor,
            Role::Monitor,
            Role::Memory,
        ],
    },
    ResourceGrant {
        kind: ResourceKind::Objects,
        name: |n| &n.artifacts,
        readers: EVERY_ROLE_BUT_OPERATOR,
        writers: &[
            Role::Worker,
            Role::Planner,
            Role::Compiler,
            Role::Executor,
            Role::Tool,
            Role::Inference,
            Role::Submitter,
        ],
    },
    ResourceGrant {
        kind: ResourceKind::Objects,
        name: |n| &n.knowledge,
        readers: EVERY_ROLE_BUT_OPERATOR,
        writers: &[Role::Memory, Role::Submitter],
    },
];

/// What the server lets one role do: subjects it may publish and subscribe, whether it
/// may answer requests it received (one reply each), and how much of the server one of its
/// connections may take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Subjects it may publish (requests included).
    pub publish: BTreeSet<String>,
    /// Subjects it may subscribe to.
    pub subscribe: BTreeSet<String>,
    /// Whether it may reply to requests it received (NATS `allow_responses`, one reply).
    pub responses: bool,
    /// Largest message (headers and body) one connection may publish; `None`: the server's
    /// `max_payload` (1 MiB). A larger publish closes the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<i64>,
    /// Subscriptions one connection may hold; `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<i64>,
}

/// Subscriptions one connection of a role other than the operator may hold. A worker holds
/// a few dozen (its inbox, a live consumer per projection it follows, its `$SRV`
/// endpoints); the cap keeps a runaway or hostile participant from making every server
/// keep millions of interests.
pub const MAX_SUBSCRIPTIONS: i64 = 1_000;

/// Largest message an observer or a voter may publish: they write no task data, only
/// requests, heartbeats and votes, so a flood of large messages from one is refused at the
/// server.
pub const SMALL_PAYLOAD: i64 = 64 * 1024;

impl Permissions {
    fn stream_read(&mut self, stream: &str) {
        for api in [
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.FC.{stream}.>"),
        ] {
            self.publish.insert(api);
        }
    }
}

/// The inbox prefix of the participant with public key `key`: replies to its requests
/// arrive under `{prefix}.>`, which only it may subscribe to.
pub fn inbox_prefix(key: &str) -> String {
    format!("_INBOX.{key}")
}

/// What the server enforces for `role` in `realm`, derived from the declarations: the
/// catalog's emitters, the endpoints and the resources. Subjects holding [`SELF_KEY`]
/// are templates the server fills with the connecting participant's key.
pub fn permissions(role: Role, realm: &Token, names: &ResourceNames) -> Permissions {
    permissions_in(Catalog::standard(), role, realm.as_str(), names)
}

/// [`permissions`] over another catalog, with `realm` possibly a wildcard (the matrix).
pub fn permissions_in(
    catalog: &Catalog,
    role: Role,
    realm: &str,
    names: &ResourceNames,
) -> Permissions {
    let mut p = Permissions::default();
    if role == Role::Operator {
        p.publish.insert(">".into());
        p.subscribe.insert(">".into());
        p.responses = true;
        return p;
    }
    p.max_subscriptions = Some(MAX_SUBSCRIPTIONS);
    if matches!(role, Role::Observer | Role::Voter) {
        p.max_payload = Some(SMALL_PAYLOAD);
    }
    // Its own inbox: replies to its requests, JetStream API answers, consumer deliveries.
    p.subscribe.insert(format!("{}.>", inbox_prefix(SELF_KEY)));
    p.publish.insert("$JS.API.INFO".into());
    for t in catalog.iter() {
        let aggregate = if t.own_aggregate { SELF_KEY } else { "*" };
        let subject = format!(
            "murmur.v1.{realm}.{}.{}.{aggregate}.{}",
            t.plane, t.domain, t.verb
        );
        if t.emitted_by.contains(&role) {
            p.publish.insert(subject);
        }
        if t.subscribed_by.contains(&role) {
            p.subscribe.insert(format!(
                "murmur.v1.{realm}.{}.{}.*.{}",
                t.plane, t.domain, t.verb
            ));
        }
    }
    for endpoint in ENDPOINTS {
        if endpoint.served_by.contains(&role) {
            p.subscribe
                .insert(endpoint.pattern(realm, endpoint.own_aggregate));
            p.responses = true;
        }
        if endpoint.called_by.contains(&role) {
            p.publish.insert(endpoint.pattern(realm, false));
        }
    }
    if SERVICE_RESPONDERS.contains(&role) {
        for verb in ["PING", "INFO", "STATS"] {
            p.subscribe.insert(format!("$SRV.{verb}"));
            p.subscribe.insert(format!("$SRV.{verb}.>"));
        }
        p.responses = true;
    }
    if SERVICE_CALLERS.contains(&role) {
        p.publish.insert("$SRV.>".into());
    }
    // The Synadia Agent Protocol (`crate::agent_protocol`): its subjects are the protocol's,
    // and its SDKs take every caller's replies under one inbox prefix.
    if AGENT_PROTOCOL_HOSTS.contains(&role) {
        use crate::agent_protocol as sap;
        p.subscribe.insert(sap::PROMPTS.into());
        p.subscribe.insert(sap::STATUSES.into());
        for verb in ["PING", "INFO", "STATS"] {
            p.subscribe.insert(format!("$SRV.{verb}"));
            p.subscribe
                .insert(format!("$SRV.{verb}.{}", sap::SERVICE_NAME));
            p.subscribe
                .insert(format!("$SRV.{verb}.{}.>", sap::SERVICE_NAME));
        }
        p.publish.insert(sap::HEARTBEATS.into());
        // A prompt's answer is a stream of replies, more than `allow_responses` grants.
        p.publish.insert(sap::SDK_INBOXES.into());
        p.responses = true;
    }
    if AGENT_PROTOCOL_CALLERS.contains(&role) {
        use crate::agent_protocol as sap;
        p.publish.insert(sap::PROMPTS.into());
        p.publish.insert(sap::STATUSES.into());
        p.publish.insert("$SRV.>".into());
        // The SDKs learn the account and user key they sign `Agent-Sender` with from the
        // server (`crate::agent_sender`).
        p.publish.insert("$SYS.REQ.USER.INFO".into());
        p.subscribe.insert(sap::HEARTBEATS.into());
        p.subscribe.insert(sap::SDK_INBOXES.into());
    }
    // Every participant opening the log checks that both streams exist (their
    // configuration and counts, nothing of their content).
    p.publish
        .insert(format!("$JS.API.STREAM.INFO.{}", names.dlq));
    for r in RESOURCES {
        let name = (r.name)(names);
        let writes = r.writers.contains(&role);
        if !writes && !r.readers.contains(&role) {
            continue;
        }
        match r.kind {
            ResourceKind::Stream => p.stream_read(name),
            ResourceKind::KeyValue { own_key } => {
                p.stream_read(&format!("KV_{name}"));
                if writes {
                    let key = if own_key {
                        format!("{realm}.{SELF_KEY}")
                    } else {
                        ">".into()
                    };
                    p.publish.insert(format!("$KV.{name}.{key}"));
                }
            }
            ResourceKind::Objects => {
                p.stream_read(&format!("OBJ_{name}"));
                if writes {
                    p.publish.insert(format!("$O.{name}.>"));
                }
            }
        }
    }
    p
}

/// One row of the role matrix: a subject or API pattern and, per role, whether it may
/// publish and subscribe.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// The subject pattern (`{self}`: the participant's own key).
    pub subject: String,
    /// Per role: `"pub"`, `"sub"` or `"pub+sub"`.
    pub roles: BTreeMap<Role, &'static str>,
}

/// The whole matrix: every subject or API pattern any non-operator role may use, with who
/// may publish and subscribe it (the operator may do everything), plus which roles may
/// answer requests.
#[derive(Debug, Clone, Serialize)]
pub struct RoleMatrix {
    /// Rows, sorted by subject.
    pub rows: Vec<MatrixRow>,
    /// Roles that may reply to requests they received.
    pub responders: Vec<Role>,
    /// One line per role.
    pub roles: BTreeMap<Role, &'static str>,
}

impl RoleMatrix {
    /// The matrix for realm pattern `realm` (e.g. `{realm}`).
    pub fn derive(realm: &str, names: &ResourceNames) -> Self {
        let mut rows: BTreeMap<String, BTreeMap<Role, (bool, bool)>> = BTreeMap::new();
        let mut responders = Vec::new();
        for role in Role::ALL {
            let p = permissions_in(Catalog::standard(), role, realm, names);
            if p.responses {
                responders.push(role);
            }
            if role == Role::Operator {
                continue;
            }
            for s in &p.publish {
                rows.entry(s.replace(SELF_KEY, "{self}"))
                    .or_default()
                    .entry(role)
                    .or_default()
                    .0 = true;
            }
            for s in &p.subscribe {
                rows.entry(s.replace(SELF_KEY, "{self}"))
                    .or_default()
                    .entry(role)
                    .or_default()
                    .1 = true;
            }
        }
        let rows = rows
            .into_iter()
            .map(|(subject, roles)| MatrixRow {
                subject,
                roles: roles
                    .into_iter()
                    .map(|(r, access)| {
                        (
                            r,
                            match access {
                                (true, true) => "pub+sub",
                                (true, false) => "pub",
                                _ => "sub",
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        Self {
            rows,
            responders,
            roles: Role::ALL
                .map(|r| (r, r.description()))
                .into_iter()
                .collect(),
        }
    }

    /// The matrix as a table: one row per subject or API pattern, one column per role
    /// (`P` publish, `S` subscribe, `PS` both, `.` neither; the operator's column is all
    /// `PS`), after a legend of the roles.
    pub fn text(&self) -> String {
        let mut out = String::from("roles:\n");
        for (role, what) in &self.roles {
            out.push_str(&format!(
                "  {:<4} {:<12} {what}\n",
                abbreviation(*role),
                role.as_str()
            ));
        }
        out.push_str(&format!(
            "may reply to requests they receive: {}\n\n",
            self.responders
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let width = self.rows.iter().map(|r| r.subject.len()).max().unwrap_or(0);
        out.push_str(&format!(
            "{:<width$}",
            "subject or API (P publish, S subscribe)"
        ));
        for role in Role::ALL {
            out.push_str(&format!(" {:>4}", abbreviation(role)));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("{:<width$}", row.subject));
            for role in Role::ALL {
                let cell = if role == Role::Operator {
                    "PS"
                } else {
                    match row.roles.get(&role).copied() {
                        Some("pub+sub") => "PS",
                        Some("pub") => "P",
                        Some("sub") => "S",
                        _ => ".",
                    }
                };
                out.push_str(&format!(" {cell:>4}"));
            }
            out.push('\n');
        }
        out
    }
}

/// The role's column heading in [`RoleMatrix::text`].
fn abbreviation(role: Role) -> &'static str {
    match role {
        Role::Operator => "oper",
        Role::Coordinator => "coor",
        Role::Tallier => "tall",
        Role::Auditor => "audi",
        Role::Monitor => "moni",
        Role::Worker => "work",
        Role::Planner => "plan",
        Role::Compiler => "comp",
        Role::Executor => "exec",
        Role::Tool => "tool",
        Role::Inference => "infr",
        Role::Memory => "memo",
        Role::Voter => "vote",
        Role::Submitter => "subm",
        Role::Observer => "obsv",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Token {
        Token::new("acme").expect("token")
    }

    fn can_publish(p: &Permissions, subject: &str) -> bool {
        p.publish.iter().any(|pattern| matches(pattern, subject))
    }

    fn can_subscribe(p: &Permissions, subject: &str) -> bool {
        p.subscribe.iter().any(|pattern| matches(pattern, subject))
    }

    /// NATS wildcard matching of a concrete subject against a pattern.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut s = subject.split('.');
        for token in pattern.split('.') {
            match (token, s.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (t, Some(x)) if t == x => {}
                _ => return false,
            }
        }
        s.next().is_none()
    }

    #[test]
    fn role_names_round_trip_and_unknown_ones_are_refused() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        let e = "admin".parse::<Role>().expect_err("not a role");
        assert!(e.to_string().contains("operator, coordinator"), "{e}");
    }

    #[test]
    fn the_deciding_roles_are_those_whose_decisions_folds_check() {
        let deciding: Vec<Role> = Role::ALL.into_iter().filter(|r| r.decides()).collect();
        assert_eq!(
            deciding,
            vec![Role::Coordinator, Role::Tallier, Role::Monitor]
        );
    }

    #[test]
    fn role_sets_hold_what_was_put_in() {
        let s = RoleSet::of(&[Role::Coordinator, Role::Tallier]);
        assert!(s.contains(Role::Coordinator) && s.contains(Role::Tallier));
        assert!(!s.contains(Role::Worker));
        assert!(s.any_of(&[Role::Worker, Role::Tallier]));
        assert_eq!(s.to_string(), "coordinator,tallier");
        assert_eq!(RoleSet::EMPTY.to_string(), "no role");
    }

    #[test]
    fn a_worker_reports_results_but_cannot_decide_or_configure() {
        let p = permissions(Role::Worker, &acme(), &ResourceNames::default());
        assert!(can_publish(&p, "murmur.v1.acme.evt.task.t1.completed"));
        assert!(can_publish(&p, "murmur.v1.acme.evt.task.t1.started"));
        assert!(can_publish(&p, "murmur.v1.acme.live.task.t1.progress"));
        assert!(!can_publish(&p, "murmur.v1.acme.evt.task.t1.assigned"));
        assert!(!can_publish(&p, "murmur.v1.acme.evt.task.t1.lease_expired"));
        assert!(!can_publish(&p, "murmur.v1.acme.evt.proposal.p.decided"));
        assert!(!can_publish(&p, "murmur.v1.acme.evt.role.k.granted"));
        assert!(!can_publish(&p, "$JS.API.STREAM.DELETE.MURMUR_HISTORY"));
        assert!(!can_publish(&p, "$JS.API.STREAM.PURGE.MURMUR_HISTORY"));
        assert!(!can_publish(&p, "$JS.API.STREAM.UPDATE.MURMUR_HISTORY"));
        assert!(!can_publish(
            &p,
            "$JS.API.CONSUMER.DELETE.MURMUR_HISTORY.murmur-auditor"
        ));
        assert!(can_publish(
            &p,
            "$JS.API.CONSUMER.CREATE.MURMUR_HISTORY.x.murmur.v1.acme.evt.>"
        ));
        assert!(can_publish(&p, "$JS.API.DIRECT.GET.MURMUR_HISTORY"));
        // Its own agent events only: the aggregate is its key.
        assert!(can_publish(
            &p,
            &format!("murmur.v1.acme.evt.agent.{SELF_KEY}.joined")
        ));
        assert!(!can_publish(&p, "murmur.v1.acme.evt.agent.UOTHER.joined"));
        // Its own inbox only.
        assert!(can_subscribe(&p, &format!("_INBOX.{SELF_KEY}.x.y")));
        assert!(!can_subscribe(&p, "_INBOX.UOTHER.x"));
        assert!(!can_subscribe(&p, "_INBOX.>"));
        assert!(p.responses);
    }

    #[test]
    fn the_kamil_rule_holds_for_inference_and_tool_roles() {
        let names = ResourceNames::default();
        for role in [Role::Inference, Role::Tool] {
            let p = permissions(role, &acme(), &names);
            // Neither submits a task: an LLM executes no tool, a tool reaches no LLM.
            assert!(
                !can_publish(&p, "murmur.v1.acme.evt.task.t1.submitted"),
                "{role}"
            );
            // Neither core-subscribes to task traffic or another agent's endpoint.
            assert!(
                !can_subscribe(&p, "murmur.v1.acme.live.task.t1.progress"),
                "{role}"
            );
            assert!(
                !can_subscribe(&p, "murmur.v1.acme.rpc.agent.UOTHER.status"),
                "{role}"
            );
            assert!(
                !can_subscribe(&p, "murmur.v1.acme.evt.task.t1.assigned"),
                "{role}"
            );
        }
        let inference = permissions(Role::Inference, &acme(), &names);
        // Memory is read-only for a language model: it queries, never writes.
        assert!(can_publish(&inference, "murmur.v1.acme.rpc.space.s.query"));
        assert!(!can_publish(
            &inference,
            "murmur.v1.acme.evt.knowledge.d.changed"
        ));
        assert!(!can_publish(
            &inference,
            "murmur.v1.acme.evt.space.s.opened"
        ));
        assert!(!can_publish(&inference, "$O.MURMUR_KNOWLEDGE.M.x"));
        // The orchestrator's side (submitter) writes knowledge.
        let submitter = permissions(Role::Submitter, &acme(), &names);
        assert!(can_publish(
            &submitter,
            "murmur.v1.acme.evt.knowledge.d.changed"
        ));
        assert!(can_publish(
            &submitter,
            "murmur.v1.acme.evt.task.t1.submitted"
        ));
    }

    #[test]
    fn an_observer_reads_everything_and_writes_nothing() {
        let p = permissions(Role::Observer, &acme(), &ResourceNames::default());
        for s in &p.publish {
            assert!(
                s.starts_with("$JS.API.")
                    || s.starts_with("$JS.FC.")
                    || s == "$SRV.>"
                    || s.contains(".rpc."),
                "observer publishes {s}"
            );
            assert!(
                !s.contains("STREAM.CREATE") && !s.contains("PURGE") && !s.contains("DELETE"),
                "{s}"
            );
        }
        assert!(!p.responses);
        assert!(can_publish(&p, "$JS.API.CONSUMER.CREATE.MURMUR_DLQ"));
        assert!(can_subscribe(&p, "murmur.v1.acme.live.agent.U1.heartbeat"));
    }

    #[test]
    fn decisions_are_emitted_only_by_their_roles() {
        let names = ResourceNames::default();
        let who = |subject: &str| -> Vec<Role> {
            Role::ALL
                .into_iter()
                .filter(|r| can_publish(&permissions(*r, &acme(), &names), subject))
                .collect()
        };
        assert_eq!(
            who("murmur.v1.acme.evt.task.t.assigned"),
            vec![Role::Operator, Role::Coordinator]
        );
        assert_eq!(
            who("murmur.v1.acme.evt.proposal.p.decided"),
            vec![Role::Operator, Role::Tallier]
        );
        assert_eq!(
            who("murmur.v1.acme.evt.agent.a.offline"),
            vec![Role::Operator, Role::Monitor]
        );
        assert_eq!(
            who("murmur.v1.acme.evt.role.k.granted"),
            vec![Role::Operator]
        );
    }

    #[test]
    fn endpoints_declare_valid_verbs() {
        for e in ENDPOINTS {
            Token::new(e.verb).expect("verb is a token");
        }
        assert_eq!(
            AGENT_STATUS
                .subject(&acme(), &Token::new("U1").expect("token"))
                .as_str(),
            "murmur.v1.acme.rpc.agent.U1.status"
        );
    }

    #[test]
    fn the_matrix_lists_every_role_and_subject() {
        let m = RoleMatrix::derive("{realm}", &ResourceNames::default());
        let text = m.text();
        for r in Role::ALL {
            assert!(text.contains(r.as_str()), "{r}");
        }
        let row = |subject: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(subject))
                .unwrap_or_else(|| panic!("no row for {subject}:\n{text}"))
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
        };
        // operator, coordinator, then nobody else.
        let assigned = row("murmur.v1.{realm}.evt.task.*.assigned");
        assert_eq!(assigned[..2], ["PS", "P"]);
        assert!(assigned[2..].iter().all(|c| *c == "."), "{assigned:?}");
        let inbox = row("_INBOX.{self}.>");
        assert!(inbox[1..].iter().all(|c| *c == "S"), "{inbox:?}");
        assert!(m.responders.contains(&Role::Memory));
    }
}

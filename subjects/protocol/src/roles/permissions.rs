//! What the server lets each role do, derived from the declarations: `permissions`.

use std::collections::BTreeSet;

use serde::Serialize;

use super::*;
use crate::catalog::Catalog;
use crate::subject::Token;

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

/// `Role::ALL` but its first, the operator.
const EVERY_ROLE_BUT_OPERATOR: &[Role] = match Role::ALL.split_first() {
    Some((Role::Operator, rest)) => rest,
    _ => panic!("Role::ALL starts with the operator"),
};

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
            Role::Memory,
            Role::Submitter,
            Role::Orchestrator,
        ],
    },
    ResourceGrant {
        kind: ResourceKind::Objects,
        name: |n| &n.knowledge,
        readers: EVERY_ROLE_BUT_OPERATOR,
        writers: &[Role::Memory, Role::Submitter, Role::Orchestrator],
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
    /// Whether it may reply to requests it received (NATS `allow_responses`: one reply,
    /// within [`RESPONSE_WINDOW_SECS`]).
    pub responses: bool,
    /// Largest message (headers and body) one connection may publish; `None`: the server's
    /// `max_payload` (1 MiB). A larger publish closes the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<i64>,
    /// Subscriptions one connection may hold; `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<i64>,
}

/// How long after a request reached a responder its one reply is still allowed (NATS
/// `allow_responses` `expires`): the longest any murmur caller waits for an answer
/// (`kb query --remote`). The server keeps, per connection of a role that answers
/// requests, an entry for every message it delivered with a reply subject until this long
/// has passed, and sweeps them every 4,096 deliveries; every JetStream delivery has a reply
/// subject (its `$JS.ACK`). So the window bounds what an agent reading the log costs the
/// server: with the server's default of two minutes, that cost grew for two minutes of
/// reading, in CPU per delivery and in memory (docs/benchmarks.md, "Replies the server
/// tracks").
pub const RESPONSE_WINDOW_SECS: u64 = 10;

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
        // A repo gateway speaks first too (changes from the log), so it may publish to
        // peers' repo inboxes; peers check each frame's signature.
        if endpoint.verb == KNOWLEDGE_REPO.verb && endpoint.served_by.contains(&role) {
            p.publish.insert(repo_inbox("*", "*"));
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
        // A mid-stream question's reply comes back on an inbox under the same prefix.
        p.subscribe.insert(sap::SDK_INBOXES.into());
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
        // Replies to an agent's mid-stream questions go to its inbox under that prefix.
        p.publish.insert(sap::SDK_INBOXES.into());
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

//! Validation: every problem at once, each naming the nodes involved. Pure.

use std::collections::{BTreeMap, BTreeSet};

use murmur_protocol::{Catalog, SubjectFilter};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{BusAuth, DeploymentSpec, EdgeKind, NodeKind, NodeSpec};

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A node or host name unusable as a systemd unit / Nix attribute name.
    #[error("{what} name {name:?} is invalid: {reason}")]
    InvalidName {
        /// `node` or `host`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Two nodes share a name.
    #[error("node name {0:?} is used more than once")]
    DuplicateNode(String),
    /// A node is placed on a host that is not declared.
    #[error("node {node:?} is placed on host {host:?}, which is not declared in [hosts]")]
    UnknownHost {
        /// The node.
        node: String,
        /// The host.
        host: String,
    },
    /// An edge names a node that does not exist.
    #[error("{edge} edge {from:?} → {to:?}: node {missing:?} does not exist")]
    DanglingReference {
        /// Edge type.
        edge: &'static str,
        /// Source.
        from: String,
        /// Target.
        to: String,
        /// The missing end.
        missing: String,
    },
    /// An edge connects node types it cannot.
    #[error("{edge} edge {from:?} ({from_type}) → {to:?} ({to_type}): {expected}")]
    WrongEndpoint {
        /// Edge type.
        edge: &'static str,
        /// Source.
        from: String,
        /// Source type.
        from_type: &'static str,
        /// Target.
        to: String,
        /// Target type.
        to_type: &'static str,
        /// What it needs.
        expected: &'static str,
    },
    /// A DependsOn cycle.
    #[error("dependency cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    /// Two nodes on one host listen on one port.
    #[error("nodes {first:?} and {second:?} both use port {port} on host {host:?}")]
    PortClash {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// One node.
        first: String,
        /// The other.
        second: String,
    },
    /// A ConnectsTo names a database the target does not have.
    #[error("{from:?} connects to database {database:?} on {to:?}, which has no such database")]
    UnknownDatabase {
        /// Source.
        from: String,
        /// Database node.
        to: String,
        /// Database name.
        database: String,
    },
    /// A subject that is not well formed or not declared by murmur's catalog.
    #[error("{node:?} uses subject {subject:?}: {reason}")]
    UndeclaredSubject {
        /// The node.
        node: String,
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A backup points at a node that is not Storage.
    #[error(
        "database {database:?} backs up to {storage:?}, which is not a storage node on its host"
    )]
    BadBackupTarget {
        /// Database node.
        database: String,
        /// Named storage.
        storage: String,
    },
    /// A message bus cluster's declared size does not match its nodes.
    #[error("message bus cluster {cluster:?} declares {declared} nodes but has {actual}: {}", .nodes.join(", "))]
    ClusterSize {
        /// Cluster name.
        cluster: String,
        /// Declared.
        declared: u32,
        /// Found.
        actual: usize,
        /// Its nodes.
        nodes: Vec<String>,
    },
    /// Two nodes of a type NixOS runs once per host (one PostgreSQL, one NATS server).
    #[error(
        "host {host:?} carries two {kind} nodes ({first:?}, {second:?}); NixOS runs one per host"
    )]
    OnePerHost {
        /// Host.
        host: String,
        /// Node type.
        kind: &'static str,
        /// One node.
        first: String,
        /// The other.
        second: String,
    },
    /// A field value the generator cannot emit safely.
    #[error("node {node:?}: {reason}")]
    InvalidValue {
        /// Node.
        node: String,
        /// What is wrong.
        reason: String,
    },
}

impl Problem {
    /// The nodes the problem is about, to show it next to them (an editor marking each
    /// node's problems); empty for a problem about a host's name alone.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Problem::InvalidName { what, name, .. } if *what == "node" => vec![name],
            Problem::InvalidName { .. } => vec![],
            Problem::DuplicateNode(name) => vec![name],
            Problem::UnknownHost { node, .. }
            | Problem::UndeclaredSubject { node, .. }
            | Problem::InvalidValue { node, .. } => vec![node],
            Problem::DanglingReference {
                from, to, missing, ..
            } => [from, to]
                .into_iter()
                .filter(|n| *n != missing)
                .map(String::as_str)
                .collect(),
            Problem::WrongEndpoint { from, to, .. } | Problem::UnknownDatabase { from, to, .. } => {
                vec![from, to]
            }
            Problem::Cycle(nodes) => nodes.iter().map(String::as_str).collect(),
            Problem::PortClash { first, second, .. }
            | Problem::OnePerHost { first, second, .. } => {
                vec![first, second]
            }
            Problem::BadBackupTarget { database, .. } => vec![database],
            Problem::ClusterSize { nodes, .. } => nodes.iter().map(String::as_str).collect(),
        }
    }
}

/// What nats-server takes as `sync_interval`: `always`, or a positive whole number of
/// milliseconds, seconds, minutes or hours (`500ms`, `30s`, `2m`, `1h`).
pub fn is_sync_interval(value: &str) -> bool {
    if value == "always" {
        return true;
    }
    let digits = value.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    !number.is_empty() && number.chars().any(|c| c != '0') && matches!(unit, "ms" | "s" | "m" | "h")
}

/// Whether `key` is written as an nkey account public key: `A` and 55 more base32
/// characters.
fn is_account_key(key: &str) -> bool {
    key.len() == 56
        && key.starts_with('A')
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// What is wrong with `path` as a file on a host that holds credentials or JWTs: it must be
/// absolute, and outside the world-readable Nix store.
fn host_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("{path:?} is not an absolute path on the host"))
    } else if path.starts_with("/nix/store") {
        Some(format!(
            "{path:?} is in the Nix store, which every user of the host can read"
        ))
    } else {
        None
    }
}

/// All problems of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s):\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct ValidationErrors(pub Vec<Problem>);

/// A validated deployment: the spec and its graph (edges from `from` to `to`).
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The spec as given.
    pub spec: DeploymentSpec,
    /// Node index by name.
    pub index: BTreeMap<String, usize>,
    /// The graph (node weights index `spec.nodes`, edge weights index `spec.edges`).
    pub graph: DiGraph<usize, usize>,
}

/// Names usable as systemd unit names and bare Nix attribute names: a letter, then letters,
/// digits, `-` or `_`, at most 63 characters.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > 63 {
        return Some("longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("must start with a letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some("only letters, digits, '-' and '_' are allowed");
    }
    None
}

fn node_ports(node: &NodeSpec) -> Vec<u16> {
    match &node.kind {
        NodeKind::Service(s) => s.port.into_iter().collect(),
        NodeKind::Database(d) => vec![d.port],
        NodeKind::MessageBus(b) => vec![b.port, b.cluster_port],
        NodeKind::LoadBalancer(l) => vec![l.port],
        NodeKind::Agent(_) | NodeKind::Storage(_) => vec![],
    }
}

fn check_subject(node: &str, subject: &str, problems: &mut Vec<Problem>) {
    let reason = match SubjectFilter::parse(subject) {
        Err(e) => Some(e.to_string()),
        Ok(f) if Catalog::standard().declared_by(&f).is_empty() => {
            Some("no declared murmur event type travels on it (see `murmur subjects`)".into())
        }
        Ok(_) => None,
    };
    if let Some(reason) = reason {
        problems.push(Problem::UndeclaredSubject {
            node: node.into(),
            subject: subject.into(),
            reason,
        });
    }
}

/// Free-form strings that end up in unit names or paths must not smuggle newlines in.
fn check_values(node: &NodeSpec, problems: &mut Vec<Problem>) {
    let mut bad = |reason: String| {
        problems.push(Problem::InvalidValue {
            node: node.name.clone(),
            reason,
        })
    };
    let env = match &node.kind {
        NodeKind::Service(s) => Some(&s.environment),
        NodeKind::Agent(a) => Some(&a.environment),
        _ => None,
    };
    for key in env.into_iter().flat_map(|e| e.keys()) {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bad(format!("environment variable name {key:?} is invalid"));
        }
    }
    match &node.kind {
        NodeKind::Storage(s)
            if !s.mount_path.starts_with('/')
                || (s.mount_path.len() > 1 && s.mount_path.ends_with('/')) =>
        {
            bad(format!(
                "mount path {:?} must be absolute without a trailing slash",
                s.mount_path
            ));
        }
        NodeKind::Service(s) if s.command.trim().is_empty() => bad("command is empty".into()),
        NodeKind::Agent(a) if name_problem(&a.kind).is_some() => {
            bad(format!("agent kind {:?} is not a valid name", a.kind))
        }
        NodeKind::Agent(a) if a.slots == Some(0) => {
            bad("slots must be at least 1 (it is how many tasks the agent runs at once)".into())
        }
        NodeKind::Database(d) => {
            for db in d.databases.iter().chain(d.users.iter().map(|u| &u.name)) {
                if name_problem(db).is_some() {
                    bad(format!("database or user name {db:?} is invalid"));
                }
            }
            for u in &d.users {
                if u.owns_database && !d.databases.contains(&u.name) {
                    bad(format!(
                        "user {:?} owns a database of its name, which is not in databases",
                        u.name
                    ));
                }
            }
        }
        _ => {}
    }
}

impl Deployment {
    /// Validates `spec`, reporting every problem.
    pub fn new(spec: DeploymentSpec) -> Result<Self, ValidationErrors> {
        let mut problems = Vec::new();
        for host in spec.hosts.keys() {
            if let Some(reason) = name_problem(host) {
                problems.push(Problem::InvalidName {
                    what: "host",
                    name: host.clone(),
                    reason,
                });
            }
        }
        let mut index = BTreeMap::new();
        let mut graph = DiGraph::with_capacity(spec.nodes.len(), spec.edges.len());
        let mut nodes_ix: Vec<NodeIndex> = Vec::with_capacity(spec.nodes.len());
        for (i, node) in spec.nodes.iter().enumerate() {
            if let Some(reason) = name_problem(&node.name) {
                problems.push(Problem::InvalidName {
                    what: "node",
                    name: node.name.clone(),
                    reason,
                });
            }
            if index.insert(node.name.clone(), i).is_some() {
                problems.push(Problem::DuplicateNode(node.name.clone()));
            }
            if !spec.hosts.contains_key(&node.host) {
                problems.push(Problem::UnknownHost {
                    node: node.name.clone(),
                    host: node.host.clone(),
                });
            }
            check_values(node, &mut problems);
            if let NodeKind::Agent(a) = &node.kind {
                for s in &a.subscriptions {
                    check_subject(&node.name, s, &mut problems);
                }
            }
            nodes_ix.push(graph.add_node(i));
        }

        // Ports per host.
        let mut ports: BTreeMap<(&str, u16), &str> = BTreeMap::new();
        for node in &spec.nodes {
            for port in node_ports(node) {
                if let Some(first) = ports.insert((node.host.as_str(), port), node.name.as_str())
                    && first != node.name
                {
                    problems.push(Problem::PortClash {
                        host: node.host.clone(),
                        port,
                        first: first.to_string(),
                        second: node.name.clone(),
                    });
                }
            }
        }

        // One PostgreSQL and one NATS per host.
        let mut singletons: BTreeMap<(&str, &'static str), &str> = BTreeMap::new();
        for node in &spec.nodes {
            if matches!(node.kind, NodeKind::Database(_) | NodeKind::MessageBus(_))
                && let Some(first) = singletons.insert(
                    (node.host.as_str(), node.kind.type_name()),
                    node.name.as_str(),
                )
            {
                problems.push(Problem::OnePerHost {
                    host: node.host.clone(),
                    kind: node.kind.type_name(),
                    first: first.to_string(),
                    second: node.name.clone(),
                });
            }
        }

        // Message bus clusters.
        let mut clusters: BTreeMap<&str, (Option<u32>, Vec<String>)> = BTreeMap::new();
        for node in &spec.nodes {
            if let NodeKind::MessageBus(b) = &node.kind {
                let entry = clusters.entry(b.cluster.as_str()).or_default();
                entry.0 = entry.0.or(b.cluster_size);
                entry.1.push(node.name.clone());
            }
        }
        for (cluster, (declared, nodes)) in clusters {
            if let Some(declared) = declared
                && declared as usize != nodes.len()
            {
                problems.push(Problem::ClusterSize {
                    cluster: cluster.into(),
                    declared,
                    actual: nodes.len(),
                    nodes,
                });
            }
        }

        // JetStream's flush interval: "always" or a duration nats-server reads.
        for node in &spec.nodes {
            if let NodeKind::MessageBus(b) = &node.kind
                && let Some(sync) = &b.sync_interval
                && !is_sync_interval(sync)
            {
                problems.push(Problem::InvalidValue {
                    node: node.name.clone(),
                    reason: format!(
                        "sync_interval {sync:?} is neither \"always\" nor a duration such as \"30s\", \"2m\" or \"1h\""
                    ),
                });
            }
        }

        // Authentication: an operator-mode bus names its system account; every agent of a
        // deployment with one connects with credentials from a file on its host.
        let mut secure_bus = None;
        for node in &spec.nodes {
            if let NodeKind::MessageBus(b) = &node.kind
                && let BusAuth::Operator {
                    system_account,
                    operator_jwt_file,
                    resolver_dir,
                } = &b.auth
            {
                secure_bus.get_or_insert(node.name.clone());
                if !is_account_key(system_account) {
                    problems.push(Problem::InvalidValue {
                        node: node.name.clone(),
                        reason: if system_account.is_empty() {
                            "the message bus runs in operator mode but names no auth.system_account: `murmur creds server-files DIR` (where `murmur up` keeps the operator's keys) writes the server's files and prints it; or set auth = { mode = \"none\" } for a bus open to anyone".into()
                        } else {
                            format!("auth.system_account {system_account:?} is not an account public key (A…, 56 characters)")
                        },
                    });
                }
                for (field, path) in [
                    ("operator_jwt_file", operator_jwt_file),
                    ("resolver_dir", resolver_dir),
                ] {
                    if let Some(reason) = host_path_problem(path) {
                        problems.push(Problem::InvalidValue {
                            node: node.name.clone(),
                            reason: format!("auth.{field}: {reason}"),
                        });
                    }
                }
            }
        }
        for node in &spec.nodes {
            if let NodeKind::Agent(a) = &node.kind {
                match (&a.credentials_file, &secure_bus) {
                    (None, Some(bus)) => problems.push(Problem::InvalidValue {
                        node: node.name.clone(),
                        reason: format!(
                            "the agent has no credentials_file, and message bus {bus:?} runs in operator mode: issue them with `murmur creds issue --role {} --name {} -o FILE`, copy FILE to host {:?}, and set credentials_file to its path there",
                            murmur_protocol::roles::Role::for_agent_kind(&a.kind),
                            node.name,
                            node.host
                        ),
                    }),
                    (Some(path), _) => {
                        if let Some(reason) = host_path_problem(path) {
                            problems.push(Problem::InvalidValue {
                                node: node.name.clone(),
                                reason: format!("credentials_file: {reason}"),
                            });
                        }
                    }
                    (None, None) => {}
                }
            }
        }

        // Backups.
        for node in &spec.nodes {
            if let NodeKind::Database(d) = &node.kind
                && let Some(b) = &d.backup
                && !index.get(&b.storage).is_some_and(|&i| {
                    matches!(spec.nodes[i].kind, NodeKind::Storage(_))
                        && spec.nodes[i].host == node.host
                })
            {
                problems.push(Problem::BadBackupTarget {
                    database: node.name.clone(),
                    storage: b.storage.clone(),
                });
            }
        }

        // Edges.
        for (e, edge) in spec.edges.iter().enumerate() {
            let name = edge.kind.type_name();
            let (Some(&from), Some(&to)) = (index.get(&edge.from), index.get(&edge.to)) else {
                for end in [&edge.from, &edge.to] {
                    if !index.contains_key(end) {
                        problems.push(Problem::DanglingReference {
                            edge: name,
                            from: edge.from.clone(),
                            to: edge.to.clone(),
                            missing: end.clone(),
                        });
                    }
                }
                continue;
            };
            let (a, b) = (&spec.nodes[from].kind, &spec.nodes[to].kind);
            let wrong = |expected| Problem::WrongEndpoint {
                edge: name,
                from: edge.from.clone(),
                from_type: a.type_name(),
                to: edge.to.clone(),
                to_type: b.type_name(),
                expected,
            };
            match &edge.kind {
                EdgeKind::Mounts if !matches!(b, NodeKind::Storage(_)) => {
                    problems.push(wrong("mounts must point at a storage node"))
                }
                EdgeKind::BalancesTo if !matches!(a, NodeKind::LoadBalancer(_)) => {
                    problems.push(wrong("balances_to must start at a load balancer"))
                }
                EdgeKind::BalancesTo if !matches!(b, NodeKind::Service(_)) => {
                    problems.push(wrong("balances_to must point at a service"))
                }
                EdgeKind::PublishesTo { subject } | EdgeKind::SubscribesTo { subject } => {
                    if !matches!(b, NodeKind::MessageBus(_)) {
                        problems.push(wrong(
                            "publishes_to / subscribes_to must point at a message bus",
                        ));
                    }
                    check_subject(&edge.from, subject, &mut problems);
                }
                EdgeKind::ConnectsTo {
                    database: Some(db), ..
                } => match b {
                    NodeKind::Database(d) if !d.databases.contains(db) => {
                        problems.push(Problem::UnknownDatabase {
                            from: edge.from.clone(),
                            to: edge.to.clone(),
                            database: db.clone(),
                        })
                    }
                    NodeKind::Database(_) => {}
                    _ => problems.push(wrong(
                        "a connection naming a database must point at a database node",
                    )),
                },
                _ => {}
            }
            graph.add_edge(nodes_ix[from], nodes_ix[to], e);
        }

        // DependsOn cycles (self-loops included), each reported with its path.
        let mut deps: DiGraph<usize, ()> = DiGraph::with_capacity(spec.nodes.len(), 0);
        let dep_ix: Vec<NodeIndex> = (0..spec.nodes.len()).map(|i| deps.add_node(i)).collect();
        for edge in graph.raw_edges() {
            if matches!(spec.edges[edge.weight].kind, EdgeKind::DependsOn) {
                deps.add_edge(
                    dep_ix[graph[edge.source()]],
                    dep_ix[graph[edge.target()]],
                    (),
                );
            }
        }
        for scc in tarjan_scc(&deps) {
            let looped =
                scc.len() > 1 || scc.first().is_some_and(|&n| deps.find_edge(n, n).is_some());
            if looped {
                problems.push(Problem::Cycle(cycle_path(&deps, &scc, &spec)));
            }
        }

        if problems.is_empty() {
            Ok(Self { spec, index, graph })
        } else {
            Err(ValidationErrors(problems))
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.index.get(name).map(|&i| &self.spec.nodes[i])
    }

    /// Graphviz DOT of the deployment: nodes grouped by host, edges labelled by type.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph deployment {\n  rankdir=LR;\n");
        let mut by_host: BTreeMap<&str, Vec<&NodeSpec>> = BTreeMap::new();
        for n in &self.spec.nodes {
            by_host.entry(n.host.as_str()).or_default().push(n);
        }
        for (host, nodes) in by_host {
            out.push_str(&format!(
                "  subgraph \"cluster_{host}\" {{\n    label=\"{host}\";\n"
            ));
            for n in nodes {
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n{}\"];\n",
                    n.name,
                    n.name,
                    n.kind.type_name()
                ));
            }
            out.push_str("  }\n");
        }
        for e in &self.spec.edges {
            let label = match &e.kind {
                EdgeKind::ConnectsTo { port, .. } => format!("connects_to :{port}"),
                EdgeKind::PublishesTo { subject } | EdgeKind::SubscribesTo { subject } => {
                    format!("{} {}", e.kind.type_name(), subject.replace('"', "'"))
                }
                k => k.type_name().to_string(),
            };
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{label}\"];\n",
                e.from, e.to
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// A readable cycle through the nodes of one strongly connected component: start at the
/// smallest name, follow DependsOn edges inside the component, back to the start.
fn cycle_path(deps: &DiGraph<usize, ()>, scc: &[NodeIndex], spec: &DeploymentSpec) -> Vec<String> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let name = |n: NodeIndex| spec.nodes[deps[n]].name.clone();
    let Some(&start) = scc.iter().min_by_key(|&&n| name(n)) else {
        return vec![];
    };
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    let mut at = start;
    loop {
        let mut next: Vec<NodeIndex> = deps.neighbors(at).filter(|n| members.contains(n)).collect();
        next.sort_by_key(|&n| name(n));
        if next.contains(&start) {
            path.push(start);
            break;
        }
        match next.into_iter().find(|n| !seen.contains(n)) {
            Some(n) => {
                seen.insert(n);
                path.push(n);
                at = n;
            }
            None => {
                path.push(start);
                break;
            }
        }
    }
    path.into_iter().map(name).collect()
}

#[cfg(test)]
mod tests;

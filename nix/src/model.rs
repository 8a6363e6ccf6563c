//! The deployment graph as users write it (JSON or TOML) or build it in Rust.
//!
//! ```toml
//! name = "shop"
//! [hosts.web-1]
//! address = "10.0.0.11"
//!
//! [[nodes]]
//! name = "api"
//! host = "web-1"
//! type = "service"
//! command = "/run/current-system/sw/bin/api"
//! port = 8080
//!
//! [[edges]]
//! from = "api"
//! to = "orders-db"
//! type = "connects_to"
//! port = 5432
//! database = "orders"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NixError;

/// A whole deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Name, used in the flake description.
    pub name: String,
    /// nixpkgs branch the flake pins, e.g. `nixos-26.05`.
    #[serde(default = "default_nixpkgs")]
    pub nixpkgs: String,
    /// Flake reference of murmur (its package and agent module).
    #[serde(default = "default_murmur_input")]
    pub murmur_input: String,
    /// Nix system of the hosts.
    #[serde(default = "default_system")]
    pub system: String,
    /// `system.stateVersion` of every host.
    #[serde(default = "default_state_version")]
    pub state_version: String,
    /// Hosts by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSpec>,
    /// Nodes.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Edges.
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

fn default_nixpkgs() -> String {
    "nixos-26.05".into()
}
fn default_murmur_input() -> String {
    "github:murmur-dev/murmur".into()
}
fn default_system() -> String {
    "x86_64-linux".into()
}
fn default_state_version() -> String {
    "26.05".into()
}

/// A machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Address other hosts reach it at (IP or DNS name).
    pub address: String,
}

/// A node placed on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name; becomes a systemd unit and Nix attribute name.
    pub name: String,
    /// Host it runs on.
    pub host: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: NodeKind,
}

/// Node types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    /// A long-running program.
    Service(ServiceSpec),
    /// A murmur agent (`murmur agent run`).
    Agent(AgentSpec),
    /// PostgreSQL.
    Database(DatabaseSpec),
    /// NATS.
    MessageBus(MessageBusSpec),
    /// nginx in front of services.
    LoadBalancer(LoadBalancerSpec),
    /// A mounted file system.
    Storage(StorageSpec),
}

impl NodeKind {
    /// The type's name as written in files.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Service(_) => "service",
            NodeKind::Agent(_) => "agent",
            NodeKind::Database(_) => "database",
            NodeKind::MessageBus(_) => "message_bus",
            NodeKind::LoadBalancer(_) => "load_balancer",
            NodeKind::Storage(_) => "storage",
        }
    }
}

/// systemd resource limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `MemoryMax`, in MiB.
    pub memory_mib: Option<u64>,
    /// `CPUQuota`, in percent of one core (200 = two cores).
    pub cpu_percent: Option<u32>,
}

/// How a service's health is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// HTTP path probed on the service's port.
    pub path: String,
    /// Seconds between probes.
    #[serde(default = "default_interval")]
    pub interval_s: u32,
}

fn default_interval() -> u32 {
    10
}

/// A service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Executable.
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment (string values).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// TCP port it listens on.
    pub port: Option<u16>,
    /// Health check.
    pub health_check: Option<HealthCheck>,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
}

/// A murmur agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Agent kind (`murmur agent run KIND`).
    pub kind: String,
    /// Capabilities (`--capability`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Subjects it subscribes to (documentation and validation; SubscribesTo edges add more).
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// Tasks per second it should take at most. Validated and recorded; not enforced yet.
    pub rate_limit: Option<u32>,
    /// Tasks it runs at once (`--slots`, announced in its manifest; coordinators assign it at
    /// most this many). Absent: the agent's default, one.
    pub slots: Option<u32>,
    /// Realm.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The agent's credentials file on the host (`murmur creds issue --role ROLE --name
    /// NAME -o FILE`, copied there by the operator; never in the Nix store). Needed when its
    /// message bus runs in operator mode.
    pub credentials_file: Option<String>,
    /// Environment (string values).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
}

fn default_realm() -> String {
    "default".into()
}

/// A PostgreSQL user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseUser {
    /// User name.
    pub name: String,
    /// Owns the database of the same name.
    #[serde(default)]
    pub owns_database: bool,
}

/// Backups of a database into a Storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// systemd `OnCalendar` expression, e.g. `daily` or `*-*-* 03:00:00`.
    pub schedule: String,
    /// Storage node the dumps go to (its mount path).
    pub storage: String,
}

/// PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Major version, e.g. 16.
    pub version: u32,
    /// Databases to ensure.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Users to ensure.
    #[serde(default)]
    pub users: Vec<DatabaseUser>,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Backup schedule.
    pub backup: Option<Backup>,
}

fn default_pg_port() -> u16 {
    5432
}

/// NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBusSpec {
    /// Nodes with the same cluster name are routed together.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Expected number of nodes in the cluster (checked when given).
    pub cluster_size: Option<u32>,
    /// JetStream on.
    #[serde(default = "yes")]
    pub jetstream: bool,
    /// Client port.
    #[serde(default = "default_nats_port")]
    pub port: u16,
    /// Route port.
    #[serde(default = "default_route_port")]
    pub cluster_port: u16,
    /// Streams the deployment expects (documentation; murmur creates its own).
    #[serde(default)]
    pub streams: Vec<String>,
    /// How clients authenticate: operator mode unless `mode = "none"`.
    #[serde(default)]
    pub auth: BusAuth,
    /// JetStream's `sync_interval`: how often the server flushes stored messages to disk,
    /// `"always"` (after every write; what the generated configuration sets when unset) or
    /// a duration such as `"2m"` (the server's own default). With a duration, the writes
    /// acknowledged within it are lost when every node of the cluster loses power at once:
    /// 100 of 100 in the test kit's power failure (docs/reliability.md), while `always`
    /// kept all 100 and cut a single server's publish rate on this project's VM from about
    /// 79,000 to 3,700 events/s.
    #[serde(default)]
    pub sync_interval: Option<String>,
}

/// How a NATS server authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum BusAuth {
    /// Operator mode (decentralized JWT): every client connects with credentials issued by
    /// the realm's operator (`murmur creds issue`). The operator's JWT and the account JWTs
    /// are files on the host, put there by the operator (`murmur creds server-files DIR`
    /// writes them); the server's full resolver keeps the accounts in `resolver_dir`, where
    /// revocations pushed at run time persist. No key or seed is in the Nix store.
    Operator {
        /// The system account's public key (`A...`; `murmur creds server-files` prints it).
        system_account: String,
        /// The operator JWT on the host.
        #[serde(default = "default_operator_jwt")]
        operator_jwt_file: String,
        /// The resolver's directory on the host: the account JWTs (`<key>.jwt`) go there.
        #[serde(default = "default_resolver_dir")]
        resolver_dir: String,
    },
    /// No authentication: anyone who reaches the port may do anything. Experiments only.
    None,
}

impl Default for BusAuth {
    /// Operator mode, with no system account named yet (validation asks for one).
    fn default() -> Self {
        BusAuth::Operator {
            system_account: String::new(),
            operator_jwt_file: default_operator_jwt(),
            resolver_dir: default_resolver_dir(),
        }
    }
}

/// Under the NixOS nats module's `dataDir`, which its service may read and write.
fn default_operator_jwt() -> String {
    "/var/lib/nats/operator.jwt".into()
}

fn default_resolver_dir() -> String {
    "/var/lib/nats/jwt".into()
}

fn default_cluster() -> String {
    "murmur".into()
}
fn yes() -> bool {
    true
}
fn default_nats_port() -> u16 {
    4222
}
fn default_route_port() -> u16 {
    6222
}

/// Balancing strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// nginx's default.
    #[default]
    RoundRobin,
    /// `least_conn`.
    LeastConnections,
    /// `ip_hash`.
    IpHash,
}

/// nginx load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Seconds a failed backend stays out (`fail_timeout`); probes are passive in stock nginx.
    #[serde(default = "default_interval")]
    pub health_check_interval_s: u32,
    /// Port it listens on.
    #[serde(default = "default_http_port")]
    pub port: u16,
}

fn default_http_port() -> u16 {
    80
}

/// Access mode of a mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// `rw`.
    #[default]
    ReadWrite,
    /// `ro`.
    ReadOnly,
}

/// A file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Device, e.g. `/dev/disk/by-label/data` or `nfs:/export`.
    pub device: String,
    /// File system type.
    #[serde(default = "default_fs")]
    pub fs_type: String,
    /// Size in GiB (documentation; the device decides).
    pub size_gib: Option<u64>,
    /// Mount path.
    pub mount_path: String,
    /// Access mode.
    #[serde(default)]
    pub access: AccessMode,
}

fn default_fs() -> String {
    "auto".into()
}

/// An edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// Source node.
    pub from: String,
    /// Target node.
    pub to: String,
    /// What it means.
    #[serde(flatten)]
    pub kind: EdgeKind,
}

/// Edge types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EdgeKind {
    /// `from` starts after `to` and needs it.
    DependsOn,
    /// `from` connects to `to` on a port (opened on `to`'s host).
    ConnectsTo {
        /// Port.
        port: u16,
        /// For a database target: the database used (must exist there).
        #[serde(default)]
        database: Option<String>,
    },
    /// `from` publishes on a declared murmur subject via the bus `to`.
    PublishesTo {
        /// Subject or filter.
        subject: String,
    },
    /// `from` subscribes to a declared murmur subject via the bus `to`.
    SubscribesTo {
        /// Subject or filter.
        subject: String,
    },
    /// `from` mounts the Storage node `to`.
    Mounts,
    /// The LoadBalancer `from` balances to the Service `to`.
    BalancesTo,
}

impl EdgeKind {
    /// The type's name as written in files.
    pub fn type_name(&self) -> &'static str {
        match self {
            EdgeKind::DependsOn => "depends_on",
            EdgeKind::ConnectsTo { .. } => "connects_to",
            EdgeKind::PublishesTo { .. } => "publishes_to",
            EdgeKind::SubscribesTo { .. } => "subscribes_to",
            EdgeKind::Mounts => "mounts",
            EdgeKind::BalancesTo => "balances_to",
        }
    }
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// TOML.
    Toml,
}

impl Format {
    /// By file extension (`.toml` is TOML, everything else JSON).
    pub fn from_path(path: &std::path::Path) -> Self {
        if path.extension().is_some_and(|e| e == "toml") {
            Format::Toml
        } else {
            Format::Json
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl DeploymentSpec {
    /// Parses a deployment file; errors name the line and column.
    pub fn parse(text: &str, format: Format) -> Result<Self, NixError> {
        match format {
            Format::Json => serde_json::from_str(text).map_err(|e| NixError::Parse {
                format: "JSON",
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            }),
            Format::Toml => toml::from_str(text).map_err(|e| {
                let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
                NixError::Parse {
                    format: "TOML",
                    line,
                    column,
                    message: e.message().to_string(),
                }
            }),
        }
    }

    /// An empty deployment (builder API).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nixpkgs: default_nixpkgs(),
            murmur_input: default_murmur_input(),
            system: default_system(),
            state_version: default_state_version(),
            hosts: BTreeMap::new(),
            nodes: vec![],
            edges: vec![],
        }
    }

    /// Adds a host.
    pub fn host(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.hosts.insert(
            name.into(),
            HostSpec {
                address: address.into(),
            },
        );
        self
    }

    /// Adds a node.
    pub fn node(
        mut self,
        name: impl Into<String>,
        host: impl Into<String>,
        kind: NodeKind,
    ) -> Self {
        self.nodes.push(NodeSpec {
            name: name.into(),
            host: host.into(),
            kind,
        });
        self
    }

    /// Adds an edge.
    pub fn edge(mut self, from: impl Into<String>, to: impl Into<String>, kind: EdgeKind) -> Self {
        self.edges.push(EdgeSpec {
            from: from.into(),
            to: to.into(),
            kind,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_line_and_column() {
        let err =
            DeploymentSpec::parse("{\n  \"name\": \"x\",\n  \"nodes\": [ 1 ]\n}", Format::Json)
                .expect_err("bad node");
        assert!(matches!(err, NixError::Parse { line: 3, .. }), "{err}");
        let err = DeploymentSpec::parse("name = \"x\"\n[[nodes]]\nname = 5\n", Format::Toml)
            .expect_err("bad name");
        assert!(
            matches!(
                err,
                NixError::Parse {
                    line: 3,
                    column: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3:8"), "{err}");
    }

    #[test]
    fn toml_and_json_give_the_same_spec() {
        let toml_text = "name = \"x\"\n[hosts.h1]\naddress = \"10.0.0.1\"\n[[nodes]]\nname = \"api\"\nhost = \"h1\"\ntype = \"service\"\ncommand = \"/bin/api\"\nport = 8080\n";
        let json_text = r#"{"name":"x","hosts":{"h1":{"address":"10.0.0.1"}},"nodes":[{"name":"api","host":"h1","type":"service","command":"/bin/api","port":8080}]}"#;
        assert_eq!(
            DeploymentSpec::parse(toml_text, Format::Toml).expect("toml"),
            DeploymentSpec::parse(json_text, Format::Json).expect("json")
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_reads_the_same_in_toml_and_json() {
        let toml_spec =
            DeploymentSpec::parse(include_str!("../../examples/shop.toml"), Format::Toml)
                .expect("toml");
        let json_spec =
            DeploymentSpec::parse(include_str!("../../examples/shop.json"), Format::Json)
                .expect("json");
        assert_eq!(toml_spec, json_spec);
        let services = toml_spec
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Service(_)))
            .count();
        assert_eq!(services, 5, "the example is a 5-service application");
    }

    #[test]
    fn a_spec_written_as_json_reads_back_the_same() {
        // The console's form edits the spec the server parsed and sends it back as JSON.
        let spec = DeploymentSpec::parse(include_str!("../../examples/shop.toml"), Format::Toml)
            .expect("toml");
        let json = serde_json::to_string(&spec).expect("serializes");
        assert_eq!(
            DeploymentSpec::parse(&json, Format::Json).expect("json"),
            spec
        );
    }
}

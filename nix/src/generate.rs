//! Deployment → flake files. Pure: the same deployment gives byte-identical files.
//!
//! Output: `flake.nix` (pinned nixpkgs, the murmur input, one `nixosConfigurations.<host>`
//! per host, `nixosModules.murmur-agent`, `formatter`), `hosts/<host>.nix` (that host's
//! options) and `modules/murmur-agent.nix` (the agent module, the same file this
//! repository's own flake exports).

use std::collections::{BTreeMap, BTreeSet};

use crate::expr::{Nix, Part};
use crate::model::{AccessMode, EdgeKind, NodeKind, NodeSpec, Strategy};
use crate::validate::Deployment;

/// The `sync_interval` a message bus gets when its node sets none: every write synced
/// before its acknowledgement, so a power failure of every node at once loses nothing
/// acknowledged (the server's own default, every 2 minutes, lost every event acknowledged
/// in the test kit's power failure: docs/reliability.md).
pub const DEFAULT_SYNC_INTERVAL: &str = "always";

/// The agent module (also `nixosModules.default` of this repository's flake).
pub const AGENT_MODULE: &str = include_str!("../module/murmur-agent.nix");

/// Generated files by relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flake {
    /// Path → content.
    pub files: BTreeMap<String, String>,
}

/// The systemd unit a node runs as, for ordering (`None`: nothing to order after).
fn unit_of(node: &NodeSpec) -> Option<String> {
    match &node.kind {
        NodeKind::Service(_) => Some(format!("{}.service", node.name)),
        NodeKind::Agent(_) => Some(format!("murmur-agent-{}.service", node.name)),
        // The ensure* work runs in postgresql-setup.service under postgresql.target.
        NodeKind::Database(_) => Some("postgresql.target".into()),
        NodeKind::MessageBus(_) => Some("nats.service".into()),
        NodeKind::LoadBalancer(_) => Some("nginx.service".into()),
        NodeKind::Storage(_) => None,
    }
}

/// One argument of a systemd `ExecStart` line, quoted when it needs to be.
fn exec_arg(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,@+%".contains(c))
    {
        arg.to_string()
    } else {
        format!(
            "\"{}\"",
            arg.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

struct Ctx<'a> {
    d: &'a Deployment,
    nodes_by_name: BTreeMap<&'a str, &'a NodeSpec>,
    /// Edge indexes by source and by target node name, so per-node lookups stay linear.
    out_edges: BTreeMap<&'a str, Vec<usize>>,
    in_edges: BTreeMap<&'a str, Vec<usize>>,
    /// Edge indexes per target host.
    edges_into_host: BTreeMap<&'a str, Vec<usize>>,
    /// Nodes per host, sorted by name.
    by_host: BTreeMap<&'a str, Vec<&'a NodeSpec>>,
}

impl<'a> Ctx<'a> {
    fn new(d: &'a Deployment) -> Self {
        let nodes_by_name: BTreeMap<&str, &NodeSpec> =
            d.spec.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut out_edges: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut in_edges: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut edges_into_host: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, e) in d.spec.edges.iter().enumerate() {
            out_edges.entry(e.from.as_str()).or_default().push(i);
            in_edges.entry(e.to.as_str()).or_default().push(i);
            if let Some(to) = nodes_by_name.get(e.to.as_str()) {
                edges_into_host.entry(to.host.as_str()).or_default().push(i);
            }
        }
        let mut by_host: BTreeMap<&str, Vec<&NodeSpec>> = BTreeMap::new();
        for n in &d.spec.nodes {
            by_host.entry(n.host.as_str()).or_default().push(n);
        }
        for nodes in by_host.values_mut() {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Self {
            d,
            nodes_by_name,
            out_edges,
            in_edges,
            edges_into_host,
            by_host,
        }
    }

    fn host_of(&self, name: &str) -> &'a str {
        self.nodes_by_name.get(name).map_or("", |n| n.host.as_str())
    }

    fn address(&self, host: &str) -> String {
        self.d
            .spec
            .hosts
            .get(host)
            .map_or_else(|| host.to_string(), |h| h.address.clone())
    }

    fn edges_from(&self, name: &str) -> Vec<(&'a EdgeKind, &'a NodeSpec)> {
        let d = self.d;
        self.out_edges
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &d.spec.edges[i])
            .filter_map(|e| self.nodes_by_name.get(e.to.as_str()).map(|n| (&e.kind, *n)))
            .collect()
    }

    /// `after` / `requires` units from DependsOn edges to nodes on the same host (a unit on
    /// another host cannot be ordered by this host's systemd), plus the database of a
    /// same-host ConnectsTo.
    fn ordering(&self, node: &NodeSpec) -> (Vec<String>, Vec<String>, Vec<String>) {
        let mut after = BTreeSet::new();
        let mut requires = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        for (kind, to) in self.edges_from(&node.name) {
            let same_host = to.host == node.host;
            match kind {
                EdgeKind::DependsOn if same_host => {
                    if let Some(u) = unit_of(to) {
                        after.insert(u.clone());
                        requires.insert(u);
                    }
                    if let NodeKind::Storage(s) = &to.kind {
                        mounts.insert(s.mount_path.clone());
                    }
                }
                EdgeKind::ConnectsTo { .. } if same_host => {
                    if let NodeKind::Database(_) | NodeKind::MessageBus(_) = to.kind
                        && let Some(u) = unit_of(to)
                    {
                        after.insert(u.clone());
                        requires.insert(u);
                    }
                }
                EdgeKind::Mounts => {
                    if let NodeKind::Storage(s) = &to.kind {
                        mounts.insert(s.mount_path.clone());
                    }
                }
                _ => {}
            }
        }
        (
            after.into_iter().collect(),
            requires.into_iter().collect(),
            mounts.into_iter().collect(),
        )
    }

    /// NATS URLs an agent uses: the buses it has edges to, else every bus.
    fn nats_urls(&self, node: &NodeSpec) -> Vec<String> {
        let mut urls: BTreeSet<String> = self
            .edges_from(&node.name)
            .into_iter()
            .filter_map(|(_, to)| match &to.kind {
                NodeKind::MessageBus(b) => {
                    Some(format!("nats://{}:{}", self.address(&to.host), b.port))
                }
                _ => None,
            })
            .collect();
        if urls.is_empty() {
            urls = self
                .d
                .spec
                .nodes
                .iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::MessageBus(b) => {
                        Some(format!("nats://{}:{}", self.address(&n.host), b.port))
                    }
                    _ => None,
                })
                .collect();
        }
        urls.into_iter().collect()
    }

    /// Ports this host must open: targets of edges from other hosts, load balancer front
    /// ports, routes of multi-host NATS clusters, buses used by agents on other hosts.
    fn firewall(&self, host: &str) -> Vec<i64> {
        let mut ports = BTreeSet::new();
        let d = self.d;
        for e in self
            .edges_into_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|&i| &d.spec.edges[i])
        {
            let (Some(from), Some(to)) = (
                self.nodes_by_name.get(e.from.as_str()),
                self.nodes_by_name.get(e.to.as_str()),
            ) else {
                continue;
            };
            if to.host != host || from.host == host {
                continue;
            }
            match (&e.kind, &to.kind) {
                (EdgeKind::ConnectsTo { port, .. }, _) => {
                    ports.insert(*port);
                }
                (EdgeKind::BalancesTo, NodeKind::Service(s)) => {
                    ports.extend(s.port);
                }
                (
                    EdgeKind::PublishesTo { .. } | EdgeKind::SubscribesTo { .. },
                    NodeKind::MessageBus(b),
                ) => {
                    ports.insert(b.port);
                }
                _ => {}
            }
        }
        for n in self.by_host.get(host).into_iter().flatten() {
            match &n.kind {
                NodeKind::LoadBalancer(lb) => {
                    ports.insert(lb.port);
                }
                NodeKind::MessageBus(b) => {
                    if self.bus_peers(n).next().is_some() {
                        ports.insert(b.cluster_port);
                    }
                    let used_remotely = self.d.spec.nodes.iter().any(|a| {
                        matches!(a.kind, NodeKind::Agent(_))
                            && a.host != host
                            && self.nats_urls(a).contains(&format!(
                                "nats://{}:{}",
                                self.address(host),
                                b.port
                            ))
                    });
                    if used_remotely {
                        ports.insert(b.port);
                    }
                }
                _ => {}
            }
        }
        ports.into_iter().map(i64::from).collect()
    }

    /// Other nodes of a bus's cluster.
    fn bus_peers<'b>(&'b self, bus: &'b NodeSpec) -> impl Iterator<Item = &'a NodeSpec> + 'b {
        let cluster = match &bus.kind {
            NodeKind::MessageBus(b) => b.cluster.as_str(),
            _ => "",
        };
        self.d.spec.nodes.iter().filter(move |n| {
            n.name != bus.name && matches!(&n.kind, NodeKind::MessageBus(b) if b.cluster == cluster)
        })
    }
}

fn limits(service_config: &mut Nix, r: &crate::model::Resources) {
    if let Some(m) = r.memory_mib {
        service_config.set(&["MemoryMax"], format!("{m}M").into());
    }
    if let Some(c) = r.cpu_percent {
        service_config.set(&["CPUQuota"], format!("{c}%").into());
    }
}

/// The options of one host.
pub fn host_config(d: &Deployment, host: &str) -> Nix {
    host_config_in(&Ctx::new(d), host)
}

fn host_config_in(ctx: &Ctx<'_>, host: &str) -> Nix {
    let d = ctx.d;
    let mut c = Nix::attrs();
    c.set(&["networking", "hostName"], host.into());
    c.set(
        &["system", "stateVersion"],
        d.spec.state_version.as_str().into(),
    );
    c.set(
        &["networking", "firewall", "allowedTCPPorts"],
        Nix::List(ctx.firewall(host).into_iter().map(Nix::Int).collect()),
    );
    let description = |what: &str, name: &str| format!("{} {what} {name}", d.spec.name);
    for node in ctx.by_host.get(host).into_iter().flatten().copied() {
        let (after, requires, mounts) = ctx.ordering(node);
        match &node.kind {
            NodeKind::Service(s) => {
                let mut unit = Nix::attrs();
                unit.set(&["description"], description("service", &node.name).into());
                unit.set(&["wantedBy"], Nix::strs(["multi-user.target"]));
                let mut after_all = vec!["network-online.target".to_string()];
                after_all.extend(after);
                unit.set(&["after"], Nix::strs(after_all));
                unit.set(&["wants"], Nix::strs(["network-online.target"]));
                unit.set(&["requires"], Nix::strs(requires));
                let env: BTreeMap<String, Nix> = s
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), Nix::Str(v.clone())))
                    .collect();
                unit.set(&["environment"], Nix::Attrs(env));
                let exec: Vec<String> = std::iter::once(s.command.as_str())
                    .chain(s.args.iter().map(String::as_str))
                    .map(exec_arg)
                    .collect();
                let mut sc = Nix::attrs();
                sc.set(&["ExecStart"], exec.join(" ").into());
                sc.set(&["DynamicUser"], true.into());
                sc.set(&["Restart"], "on-failure".into());
                sc.set(&["StateDirectory"], node.name.as_str().into());
                limits(&mut sc, &s.resources);
                unit.set(&["serviceConfig"], sc);
                if !mounts.is_empty() {
                    unit.set(&["unitConfig", "RequiresMountsFor"], Nix::strs(mounts));
                }
                c.set(&["systemd", "services", node.name.as_str()], unit);
                if let (Some(h), Some(port)) = (&s.health_check, s.port) {
                    let probe = format!("{}-health", node.name);
                    let mut unit = Nix::attrs();
                    unit.set(
                        &["description"],
                        description("health probe of", &node.name).into(),
                    );
                    unit.set(&["after"], Nix::strs([format!("{}.service", node.name)]));
                    unit.set(&["serviceConfig", "Type"], "oneshot".into());
                    unit.set(&["serviceConfig", "DynamicUser"], true.into());
                    unit.set(
                        &["serviceConfig", "ExecStart"],
                        Nix::Interp(vec![
                            Part::Expr("pkgs.curl".into()),
                            Part::Lit(format!(
                                "/bin/curl --fail --silent --max-time 5 {}",
                                exec_arg(&format!("http://127.0.0.1:{port}{}", h.path))
                            )),
                        ]),
                    );
                    c.set(&["systemd", "services", probe.as_str()], unit);
                    let mut timer = Nix::attrs();
                    timer.set(&["wantedBy"], Nix::strs(["timers.target"]));
                    timer.set(
                        &["timerConfig", "OnActiveSec"],
                        format!("{}s", h.interval_s).into(),
                    );
                    timer.set(
                        &["timerConfig", "OnUnitActiveSec"],
                        format!("{}s", h.interval_s).into(),
                    );
                    c.set(&["systemd", "timers", probe.as_str()], timer);
                }
            }
            NodeKind::Agent(a) => {
                let mut agent = Nix::attrs();
                agent.set(&["kind"], a.kind.as_str().into());
                agent.set(&["capabilities"], Nix::strs(a.capabilities.clone()));
                agent.set(&["natsUrls"], Nix::strs(ctx.nats_urls(node)));
                agent.set(&["realm"], a.realm.as_str().into());
                agent.set(&["package"], Nix::Expr("murmurPackage".into()));
                agent.set(&["after"], Nix::strs(after));
                agent.set(&["requires"], Nix::strs(requires));
                let env: BTreeMap<String, Nix> = a
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), Nix::Str(v.clone())))
                    .collect();
                agent.set(&["environment"], Nix::Attrs(env));
                if let Some(f) = &a.credentials_file {
                    agent.set(&["credentialsFile"], f.as_str().into());
                }
                if let Some(n) = a.slots {
                    agent.set(&["slots"], i64::from(n).into());
                }
                if let Some(m) = a.resources.memory_mib {
                    agent.set(&["memoryMax"], format!("{m}M").into());
                }
                if let Some(q) = a.resources.cpu_percent {
                    agent.set(&["cpuQuota"], format!("{q}%").into());
                }
                c.set(&["services", "murmur-agents", node.name.as_str()], agent);
            }
            NodeKind::Database(db) => {
                let mut pg = Nix::attrs();
                pg.set(&["enable"], true.into());
                pg.set(
                    &["package"],
                    Nix::Expr(format!("pkgs.postgresql_{}", db.version)),
                );
                let mut databases = db.databases.clone();
                databases.sort();
                pg.set(&["ensureDatabases"], Nix::strs(databases));
                let mut users = db.users.clone();
                users.sort_by(|a, b| a.name.cmp(&b.name));
                pg.set(
                    &["ensureUsers"],
                    Nix::List(
                        users
                            .iter()
                            .map(|u| {
                                let mut v = Nix::attrs();
                                v.set(&["name"], u.name.as_str().into());
                                v.set(&["ensureDBOwnership"], u.owns_database.into());
                                v
                            })
                            .collect(),
                    ),
                );
                pg.set(&["settings", "port"], Nix::Int(i64::from(db.port)));
                // Remote clients: TCP on, one pg_hba line per connecting host.
                let mut remote: BTreeSet<(String, String)> = BTreeSet::new();
                for e in ctx
                    .in_edges
                    .get(node.name.as_str())
                    .into_iter()
                    .flatten()
                    .map(|&i| &d.spec.edges[i])
                {
                    if let EdgeKind::ConnectsTo { database, .. } = &e.kind {
                        let from_host = ctx.host_of(&e.from);
                        if from_host != host {
                            remote.insert((
                                database.clone().unwrap_or_else(|| "all".into()),
                                ctx.address(from_host),
                            ));
                        }
                    }
                }
                pg.set(&["enableTCPIP"], (!remote.is_empty()).into());
                if !remote.is_empty() {
                    let lines: Vec<String> = remote
                        .iter()
                        .map(|(db, addr)| {
                            let cidr = if addr.contains('/') {
                                addr.clone()
                            } else if addr.contains(':') {
                                format!("{addr}/128")
                            } else {
                                format!("{addr}/32")
                            };
                            format!("host {db} all {cidr} scram-sha-256")
                        })
                        .collect();
                    pg.set(
                        &["authentication"],
                        format!("{}\n", lines.join("\n")).into(),
                    );
                }
                c.set(&["services", "postgresql"], pg);
                if let Some(b) = &db.backup
                    && let Some(NodeKind::Storage(st)) =
                        ctx.nodes_by_name.get(b.storage.as_str()).map(|n| &n.kind)
                {
                    let name = format!("{}-backup", node.name);
                    let mut unit = Nix::attrs();
                    unit.set(
                        &["description"],
                        description("backup of", &node.name).into(),
                    );
                    unit.set(&["after"], Nix::strs(["postgresql.target"]));
                    unit.set(&["requires"], Nix::strs(["postgresql.target"]));
                    unit.set(
                        &["unitConfig", "RequiresMountsFor"],
                        Nix::strs([st.mount_path.clone()]),
                    );
                    unit.set(&["serviceConfig", "Type"], "oneshot".into());
                    unit.set(&["serviceConfig", "User"], "postgres".into());
                    unit.set(
                        &["script"],
                        Nix::Interp(vec![
                            Part::Expr("config.services.postgresql.package".into()),
                            Part::Lit(format!(
                                "/bin/pg_dumpall --port {} > '{}/{}-'$(date +%Y%m%dT%H%M%S).sql\n",
                                db.port, st.mount_path, node.name
                            )),
                        ]),
                    );
                    c.set(&["systemd", "services", name.as_str()], unit);
                    let mut timer = Nix::attrs();
                    timer.set(&["wantedBy"], Nix::strs(["timers.target"]));
                    timer.set(&["timerConfig", "OnCalendar"], b.schedule.as_str().into());
                    timer.set(&["timerConfig", "Persistent"], true.into());
                    c.set(&["systemd", "timers", name.as_str()], timer);
                }
            }
            NodeKind::MessageBus(b) => {
                let mut nats = Nix::attrs();
                nats.set(&["enable"], true.into());
                nats.set(&["jetstream"], b.jetstream.into());
                if b.jetstream {
                    let sync = b.sync_interval.as_deref().unwrap_or(DEFAULT_SYNC_INTERVAL);
                    nats.set(&["settings", "jetstream", "sync_interval"], sync.into());
                }
                nats.set(&["serverName"], node.name.as_str().into());
                nats.set(&["port"], Nix::Int(i64::from(b.port)));
                nats.set(&["settings", "host"], "0.0.0.0".into());
                if let crate::model::BusAuth::Operator {
                    system_account,
                    operator_jwt_file,
                    resolver_dir,
                } = &b.auth
                {
                    // Operator mode: JWTs from files the operator put on the host (no key
                    // or seed in the store); accounts resolved, and revocations kept, in a
                    // directory the server writes.
                    nats.set(&["settings", "operator"], operator_jwt_file.as_str().into());
                    nats.set(
                        &["settings", "system_account"],
                        system_account.as_str().into(),
                    );
                    nats.set(&["settings", "resolver", "type"], "full".into());
                    nats.set(
                        &["settings", "resolver", "dir"],
                        resolver_dir.as_str().into(),
                    );
                    nats.set(&["settings", "resolver", "allow_delete"], false.into());
                    nats.set(&["settings", "resolver", "interval"], "2m".into());
                }
                let mut routes: Vec<String> = ctx
                    .bus_peers(node)
                    .filter_map(|p| match &p.kind {
                        NodeKind::MessageBus(pb) => Some(format!(
                            "nats://{}:{}",
                            ctx.address(&p.host),
                            pb.cluster_port
                        )),
                        _ => None,
                    })
                    .collect();
                routes.sort();
                if !routes.is_empty() {
                    nats.set(&["settings", "cluster", "name"], b.cluster.as_str().into());
                    nats.set(
                        &["settings", "cluster", "listen"],
                        format!("0.0.0.0:{}", b.cluster_port).into(),
                    );
                    nats.set(&["settings", "cluster", "routes"], Nix::strs(routes));
                }
                c.set(&["services", "nats"], nats);
            }
            NodeKind::LoadBalancer(lb) => {
                let mut servers = Nix::attrs();
                for (kind, to) in ctx.edges_from(&node.name) {
                    if let (EdgeKind::BalancesTo, NodeKind::Service(s)) = (kind, &to.kind) {
                        let addr = if to.host == host {
                            "127.0.0.1".to_string()
                        } else {
                            ctx.address(&to.host)
                        };
                        let mut server = Nix::attrs();
                        server.set(&["max_fails"], Nix::Int(3));
                        server.set(
                            &["fail_timeout"],
                            format!("{}s", lb.health_check_interval_s).into(),
                        );
                        servers.set(
                            &[format!("{addr}:{}", s.port.unwrap_or(80)).as_str()],
                            server,
                        );
                    }
                }
                let upstream = node.name.as_str();
                c.set(&["services", "nginx", "enable"], true.into());
                c.set(
                    &["services", "nginx", "upstreams", upstream, "servers"],
                    servers,
                );
                let strategy = match lb.strategy {
                    Strategy::RoundRobin => "",
                    Strategy::LeastConnections => "least_conn;",
                    Strategy::IpHash => "ip_hash;",
                };
                if !strategy.is_empty() {
                    c.set(
                        &["services", "nginx", "upstreams", upstream, "extraConfig"],
                        strategy.into(),
                    );
                }
                let mut listen = Nix::attrs();
                listen.set(&["addr"], "0.0.0.0".into());
                listen.set(&["port"], Nix::Int(i64::from(lb.port)));
                c.set(
                    &["services", "nginx", "virtualHosts", upstream, "listen"],
                    Nix::List(vec![listen]),
                );
                c.set(
                    &[
                        "services",
                        "nginx",
                        "virtualHosts",
                        upstream,
                        "locations",
                        "/",
                        "proxyPass",
                    ],
                    format!("http://{upstream}").into(),
                );
            }
            NodeKind::Storage(st) => {
                let mut fs = Nix::attrs();
                fs.set(&["device"], st.device.as_str().into());
                fs.set(&["fsType"], st.fs_type.as_str().into());
                fs.set(
                    &["options"],
                    Nix::strs([match st.access {
                        AccessMode::ReadWrite => "rw",
                        AccessMode::ReadOnly => "ro",
                    }]),
                );
                c.set(&["fileSystems", st.mount_path.as_str()], fs);
            }
        }
    }
    c
}

fn flake_nix(d: &Deployment, hosts: &[&str]) -> String {
    let s = |v: &str| Nix::Str(v.to_string()).render();
    let mut out = String::new();
    out.push_str(
        "# Generated by `murmur flake generate`; edit the deployment graph, not this file.\n{\n",
    );
    out.push_str(&format!(
        "  description = {};\n\n",
        s(&format!("murmur deployment {}", d.spec.name))
    ));
    out.push_str("  inputs = {\n");
    out.push_str(&format!(
        "    nixpkgs.url = {};\n",
        s(&format!("github:NixOS/nixpkgs/{}", d.spec.nixpkgs))
    ));
    out.push_str(&format!("    murmur.url = {};\n", s(&d.spec.murmur_input)));
    out.push_str("    murmur.inputs.nixpkgs.follows = \"nixpkgs\";\n  };\n\n");
    out.push_str("  outputs =\n    { self, nixpkgs, murmur }:\n    let\n");
    out.push_str(&format!("      system = {};\n", s(&d.spec.system)));
    out.push_str("      pkgs = nixpkgs.legacyPackages.${system};\n");
    out.push_str("      murmurPackage = murmur.packages.${system}.default;\n");
    out.push_str("      host =\n        name:\n        nixpkgs.lib.nixosSystem {\n          inherit system;\n");
    out.push_str("          specialArgs = { inherit murmurPackage; };\n");
    out.push_str("          modules = [\n            self.nixosModules.murmur-agent\n            (./hosts + \"/${name}.nix\")\n          ];\n        };\n");
    out.push_str("    in\n    {\n");
    out.push_str("      nixosModules.murmur-agent = import ./modules/murmur-agent.nix;\n");
    out.push_str("      nixosModules.default = self.nixosModules.murmur-agent;\n");
    out.push_str("      formatter.${system} = pkgs.nixfmt;\n");
    out.push_str("      nixosConfigurations = {\n");
    for h in hosts {
        out.push_str(&format!(
            "        {} = host {};\n",
            crate::expr::attr_name(h),
            s(h)
        ));
    }
    out.push_str("      };\n    };\n}\n");
    out
}

/// Generates the flake of a validated deployment.
pub fn generate(d: &Deployment) -> Flake {
    let hosts: Vec<&str> = d.spec.hosts.keys().map(String::as_str).collect();
    let mut files = BTreeMap::new();
    files.insert("flake.nix".to_string(), flake_nix(d, &hosts));
    files.insert(
        "modules/murmur-agent.nix".to_string(),
        AGENT_MODULE.to_string(),
    );
    let ctx = Ctx::new(d);
    for h in &hosts {
        let mut text = String::from(
            "# Generated by `murmur flake generate`; edit the deployment graph, not this file.\n{ config, lib, pkgs, murmurPackage, ... }:\n",
        );
        text.push_str(&host_config_in(&ctx, h).render());
        text.push('\n');
        files.insert(format!("hosts/{h}.nix"), text);
    }
    Flake { files }
}

#[cfg(test)]
mod tests;

//! Unit tests of `validate`.

use super::*;
use crate::model::*;

fn service(port: u16) -> NodeKind {
    NodeKind::Service(ServiceSpec {
        command: "/bin/app".into(),
        port: Some(port),
        ..Default::default()
    })
}

#[test]
fn each_problem_names_the_nodes_an_editor_shows_it_next_to() {
    let spec = DeploymentSpec::new("bad")
        .host("h1", "10.0.0.1")
        .node("a", "h1", service(8080))
        .node("b", "h1", service(8080))
        .node("d", "nowhere", service(9001))
        .edge("a", "ghost", EdgeKind::DependsOn)
        .edge("a", "d", EdgeKind::DependsOn)
        .edge("d", "a", EdgeKind::DependsOn);
    let errors = Deployment::new(spec).expect_err("invalid");
    let nodes_of = |wanted: fn(&Problem) -> bool| -> Vec<Vec<&str>> {
        errors
            .0
            .iter()
            .filter(|p| wanted(p))
            .map(Problem::nodes)
            .collect()
    };
    assert_eq!(
        nodes_of(|p| matches!(p, Problem::UnknownHost { .. })),
        [vec!["d"]]
    );
    // The missing node is not one to show a problem next to; the node that names it is.
    assert_eq!(
        nodes_of(|p| matches!(p, Problem::DanglingReference { .. })),
        [vec!["a"]]
    );
    assert_eq!(
        nodes_of(|p| matches!(p, Problem::PortClash { .. })),
        [vec!["a", "b"]]
    );
    let cycle = nodes_of(|p| matches!(p, Problem::Cycle(_)));
    assert_eq!(cycle.len(), 1, "{errors}");
    assert!(
        cycle[0].contains(&"a") && cycle[0].contains(&"d"),
        "{cycle:?}"
    );
    let host_name = Problem::InvalidName {
        what: "host",
        name: "1bad".into(),
        reason: "starts with a digit",
    };
    assert!(host_name.nodes().is_empty());
}

#[test]
fn every_problem_is_reported_at_once_with_the_nodes_involved() {
    let spec = DeploymentSpec::new("bad")
        .host("h1", "10.0.0.1")
        .host("1bad", "10.0.0.2")
        .node("a", "h1", service(8080))
        .node("b", "h1", service(8080))
        .node("c", "h1", service(9000))
        .node("d", "nowhere", service(9001))
        .node(
            "db",
            "h1",
            NodeKind::Database(DatabaseSpec {
                version: 16,
                databases: vec!["orders".into()],
                users: vec![],
                port: 5432,
                backup: Some(Backup {
                    schedule: "daily".into(),
                    storage: "a".into(),
                }),
            }),
        )
        .node(
            "bus",
            "h1",
            NodeKind::MessageBus(MessageBusSpec {
                cluster: "murmur".into(),
                cluster_size: Some(3),
                jetstream: true,
                port: 4222,
                cluster_port: 6222,
                streams: vec![],
                auth: BusAuth::None,
                sync_interval: None,
            }),
        )
        .node(
            "lb",
            "h1",
            NodeKind::LoadBalancer(LoadBalancerSpec {
                strategy: Strategy::RoundRobin,
                health_check_interval_s: 5,
                port: 80,
            }),
        )
        .node("bad name", "h1", service(9002))
        .node(
            "idle",
            "h1",
            NodeKind::Agent(AgentSpec {
                kind: "tool".into(),
                slots: Some(0),
                ..Default::default()
            }),
        )
        .edge("a", "b", EdgeKind::DependsOn)
        .edge("b", "c", EdgeKind::DependsOn)
        .edge("c", "a", EdgeKind::DependsOn)
        .edge("a", "ghost", EdgeKind::DependsOn)
        .edge("a", "b", EdgeKind::Mounts)
        .edge("lb", "db", EdgeKind::BalancesTo)
        .edge(
            "a",
            "db",
            EdgeKind::ConnectsTo {
                port: 5432,
                database: Some("billing".into()),
            },
        )
        .edge(
            "a",
            "bus",
            EdgeKind::PublishesTo {
                subject: "murmur.v1.acme.evt.task.*.exploded".into(),
            },
        )
        .edge(
            "a",
            "bus",
            EdgeKind::SubscribesTo {
                subject: "murmur.v1.acme.evt.task.*.completed".into(),
            },
        );
    let err = Deployment::new(spec).expect_err("invalid");
    let text = err.to_string();
    for expected in [
        "host name \"1bad\" is invalid",
        "node name \"bad name\" is invalid",
        "nodes \"a\" and \"b\" both use port 8080 on host \"h1\"",
        "node \"d\" is placed on host \"nowhere\"",
        "depends_on edge \"a\" → \"ghost\": node \"ghost\" does not exist",
        "dependency cycle: a → b → c → a",
        "mounts edge \"a\" (service) → \"b\" (service): mounts must point at a storage node",
        "balances_to edge \"lb\" (load_balancer) → \"db\" (database): balances_to must point at a service",
        "\"a\" connects to database \"billing\" on \"db\"",
        "\"a\" uses subject \"murmur.v1.acme.evt.task.*.exploded\"",
        "database \"db\" backs up to \"a\", which is not a storage node",
        "message bus cluster \"murmur\" declares 3 nodes but has 1: bus",
        "slots must be at least 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(err.0.len(), 13, "{text}");
    assert!(
        !text.contains("completed"),
        "a declared subject is fine:\n{text}"
    );
}

fn bus(auth: BusAuth) -> NodeKind {
    NodeKind::MessageBus(MessageBusSpec {
        cluster: "murmur".into(),
        cluster_size: None,
        jetstream: true,
        port: 4222,
        cluster_port: 6222,
        streams: vec![],
        auth,
        sync_interval: None,
    })
}

fn agent(credentials_file: Option<&str>) -> NodeKind {
    NodeKind::Agent(AgentSpec {
        kind: "inference".into(),
        realm: "default".into(),
        credentials_file: credentials_file.map(str::to_string),
        ..Default::default()
    })
}

#[test]
fn an_operator_mode_bus_needs_its_system_account_and_every_agent_its_credentials() {
    let spec = DeploymentSpec::new("x")
        .host("h", "10.0.0.1")
        .node("bus", "h", bus(BusAuth::default()))
        .node("llm", "h", agent(None))
        .node("tools", "h", agent(Some("/nix/store/abc-tools.creds")));
    let err = Deployment::new(spec).expect_err("insecure parts");
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(text.contains("names no auth.system_account"), "{text}");
    assert!(
        text.contains("node \"llm\": the agent has no credentials_file")
            && text.contains("murmur creds issue --role inference --name llm"),
        "{text}"
    );
    assert!(text.contains("is in the Nix store"), "{text}");
    let fixed = DeploymentSpec::new("x")
        .host("h", "10.0.0.1")
        .node(
            "bus",
            "h",
            bus(BusAuth::Operator {
                system_account: format!("A{}", "B".repeat(55)),
                operator_jwt_file: "/var/lib/nats/operator.jwt".into(),
                resolver_dir: "/var/lib/nats/jwt".into(),
            }),
        )
        .node("llm", "h", agent(Some("/etc/murmur/llm.creds")));
    Deployment::new(fixed).expect("operator mode, credentials on the host");
    // A bus open to anyone asks nothing of its agents.
    let open = DeploymentSpec::new("x")
        .host("h", "10.0.0.1")
        .node("bus", "h", bus(BusAuth::None))
        .node("llm", "h", agent(None));
    Deployment::new(open).expect("no authentication");
}

#[test]
fn sync_interval_is_always_or_a_duration() {
    for good in ["always", "30s", "2m", "1h", "500ms"] {
        assert!(is_sync_interval(good), "{good}");
    }
    for bad in ["", "sometimes", "0s", "2", "m", "2 m", "-1s", "2d"] {
        assert!(!is_sync_interval(bad), "{bad}");
    }
    let with = |sync: &str| {
        let mut open = bus(BusAuth::None);
        if let NodeKind::MessageBus(b) = &mut open {
            b.sync_interval = Some(sync.into());
        }
        DeploymentSpec::new("x")
            .host("h", "10.0.0.1")
            .node("bus", "h", open)
    };
    let err = Deployment::new(with("sometimes")).expect_err("not an interval");
    assert!(
        err.to_string()
            .contains("sync_interval \"sometimes\" is neither \"always\""),
        "{err}"
    );
    Deployment::new(with("always")).expect("always");
}

#[test]
fn a_self_dependency_is_a_cycle() {
    let spec = DeploymentSpec::new("x")
        .host("h", "h")
        .node("a", "h", service(1))
        .edge("a", "a", EdgeKind::DependsOn);
    let err = Deployment::new(spec).expect_err("cycle");
    assert_eq!(err.0, vec![Problem::Cycle(vec!["a".into(), "a".into()])]);
}

#[test]
fn dot_lists_nodes_by_host_and_labelled_edges() {
    let spec = DeploymentSpec::new("x")
        .host("h", "h")
        .node("a", "h", service(1))
        .node("b", "h", service(2))
        .edge(
            "a",
            "b",
            EdgeKind::ConnectsTo {
                port: 2,
                database: None,
            },
        );
    let dot = Deployment::new(spec).expect("valid").to_dot();
    assert!(dot.contains("subgraph \"cluster_h\""), "{dot}");
    assert!(
        dot.contains("\"a\" -> \"b\" [label=\"connects_to :2\"]"),
        "{dot}"
    );
}

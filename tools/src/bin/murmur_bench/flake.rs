//! The flake suite: a synthetic deployment graph of growing size turned into a flake.

use std::time::Instant;

use anyhow::Result;

/// A synthetic deployment of about `n` nodes: hosts of 50 nodes, each with a database,
/// a storage volume, a load balancer and 47 services that depend on each other in a chain,
/// connect to the database and are partly balanced; one NATS node per 10 hosts.
pub(crate) fn synthetic_deployment(n: usize) -> murmur_nix::DeploymentSpec {
    use murmur_nix::model::*;
    let hosts = n.div_ceil(50).max(1);
    let mut spec = DeploymentSpec::new("bench");
    for h in 0..hosts {
        let host = format!("h{h}");
        spec = spec.host(host.clone(), format!("10.{}.{}.1", h / 250, h % 250));
        let db = format!("db{h}");
        spec = spec
            .node(
                db.clone(),
                host.clone(),
                NodeKind::Database(DatabaseSpec {
                    version: 16,
                    databases: vec!["app".into()],
                    users: vec![DatabaseUser {
                        name: "app".into(),
                        owns_database: true,
                    }],
                    port: 5432,
                    backup: Some(Backup {
                        schedule: "daily".into(),
                        storage: format!("st{h}"),
                    }),
                }),
            )
            .node(
                format!("st{h}"),
                host.clone(),
                NodeKind::Storage(StorageSpec {
                    device: format!("/dev/disk/by-label/st{h}"),
                    fs_type: "ext4".into(),
                    size_gib: Some(100),
                    mount_path: format!("/srv/st{h}"),
                    access: AccessMode::ReadWrite,
                }),
            )
            .node(
                format!("lb{h}"),
                host.clone(),
                NodeKind::LoadBalancer(LoadBalancerSpec {
                    strategy: Strategy::LeastConnections,
                    health_check_interval_s: 10,
                    port: 80,
                }),
            );
        if h % 10 == 0 {
            spec = spec.node(
                format!("bus{h}"),
                host.clone(),
                NodeKind::MessageBus(MessageBusSpec {
                    cluster: "bench".into(),
                    cluster_size: None,
                    jetstream: true,
                    port: 4222,
                    cluster_port: 6222,
                    streams: vec![],
                    auth: murmur_nix::model::BusAuth::None,
                    sync_interval: None,
                }),
            );
        }
        for i in 0..47 {
            let name = format!("s{h}-{i}");
            spec = spec.node(
                name.clone(),
                host.clone(),
                NodeKind::Service(ServiceSpec {
                    command: "/bin/app".into(),
                    args: vec!["--id".into(), name.clone()],
                    port: Some(10_000 + i as u16),
                    resources: Resources {
                        memory_mib: Some(256),
                        cpu_percent: Some(50),
                    },
                    ..Default::default()
                }),
            );
            spec = spec.edge(
                name.clone(),
                db.clone(),
                EdgeKind::ConnectsTo {
                    port: 5432,
                    database: Some("app".into()),
                },
            );
            if i > 0 {
                spec = spec.edge(name.clone(), format!("s{h}-{}", i - 1), EdgeKind::DependsOn);
            }
            if i < 5 {
                spec = spec.edge(format!("lb{h}"), name.clone(), EdgeKind::BalancesTo);
            }
        }
    }
    spec
}

/// Validate + generate at each size; baseline: serde_json serialising the same spec.
pub(crate) fn flake_suite(sizes: &[usize], runs: usize) -> Result<()> {
    println!(
        "flake suite: validate + generate vs serde_json::to_vec of the spec, median of {runs} runs"
    );
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>12} {:>10}",
        "nodes", "edges", "murmur ms", "json ms", "µs/node", "bytes"
    );
    for &n in sizes {
        let spec = synthetic_deployment(n);
        let (nodes, edges) = (spec.nodes.len(), spec.edges.len());
        let mut ours = Vec::new();
        let mut base = Vec::new();
        let mut valid = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let s = spec.clone();
            let t = Instant::now();
            let d = murmur_nix::Deployment::new(s).map_err(|e| anyhow::anyhow!("{e}"))?;
            let validated = t.elapsed().as_secs_f64() * 1e3;
            let flake = murmur_nix::generate(&d);
            ours.push(t.elapsed().as_secs_f64() * 1e3);
            valid.push(validated);
            bytes = flake.files.values().map(String::len).sum::<usize>();
            let t = Instant::now();
            let json = serde_json::to_vec(&spec)?;
            base.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(json);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, b, v) = (med(&mut ours), med(&mut base), med(&mut valid));
        println!(
            "{nodes:>8} {edges:>8} {o:>12.2} {b:>12.2} {:>12.2} {bytes:>10}   (validate {v:.2} ms)",
            o * 1e3 / nodes as f64
        );
    }
    Ok(())
}

//! Unit tests of `generate`.

use super::*;
use crate::model::{DeploymentSpec, Format};

const SHOP: &str = include_str!("../../../examples/shop.toml");

fn shop() -> DeploymentSpec {
    DeploymentSpec::parse(SHOP, Format::Toml).expect("example parses")
}

/// Option paths the generator may emit, from ../shared/notes/nixos-options.md; `<>` is
/// one attribute name, a trailing `*` any sub-path (free-form settings). Marked (+):
/// options not in the notes, taken from the NixOS manual (systemd.timers, nginx
/// upstream extraConfig and virtualHost listen, networking.hostName), and (m): the
/// options of our own agent module.
const ALLOWED: &[&str] = &[
    "networking.hostName", // (+)
    "system.stateVersion",
    "networking.firewall.allowedTCPPorts",
    "systemd.services.<>.description",
    "systemd.services.<>.wantedBy",
    "systemd.services.<>.after",
    "systemd.services.<>.requires",
    "systemd.services.<>.wants",
    "systemd.services.<>.environment",
    "systemd.services.<>.environment.<>",
    "systemd.services.<>.script",
    "systemd.services.<>.unitConfig.*",
    "systemd.services.<>.serviceConfig.*",
    "systemd.timers.<>.wantedBy",      // (+)
    "systemd.timers.<>.timerConfig.*", // (+)
    "services.nats.enable",
    "services.nats.jetstream",
    "services.nats.serverName",
    "services.nats.port",
    "services.nats.settings.*",
    "services.postgresql.enable",
    "services.postgresql.package",
    "services.postgresql.ensureDatabases",
    "services.postgresql.ensureUsers",
    "services.postgresql.authentication",
    "services.postgresql.enableTCPIP",
    "services.postgresql.settings.*",
    "services.nginx.enable",
    "services.nginx.upstreams.<>.servers.*",
    "services.nginx.upstreams.<>.extraConfig", // (+)
    "services.nginx.virtualHosts.<>.listen",   // (+)
    "services.nginx.virtualHosts.<>.locations.<>.proxyPass",
    "fileSystems.<>.device",
    "fileSystems.<>.fsType",
    "fileSystems.<>.options",
    "services.murmur-agents.<>.kind",            // (m)
    "services.murmur-agents.<>.capabilities",    // (m)
    "services.murmur-agents.<>.natsUrls",        // (m)
    "services.murmur-agents.<>.realm",           // (m)
    "services.murmur-agents.<>.credentialsFile", // (m)
    "services.murmur-agents.<>.environment",     // (m)
    "services.murmur-agents.<>.environment.<>",  // (m)
    "services.murmur-agents.<>.package",         // (m)
    "services.murmur-agents.<>.after",           // (m)
    "services.murmur-agents.<>.requires",        // (m)
    "services.murmur-agents.<>.memoryMax",       // (m)
    "services.murmur-agents.<>.cpuQuota",        // (m)
    "services.murmur-agents.<>.slots",           // (m)
];

fn allowed(path: &[String]) -> bool {
    ALLOWED.iter().any(|pattern| {
        let parts: Vec<&str> = pattern.split('.').collect();
        let (fixed, rest_ok) = match parts.split_last() {
            Some((&"*", head)) => (head, true),
            _ => (parts.as_slice(), false),
        };
        if path.len() < fixed.len() || (!rest_ok && path.len() != fixed.len()) {
            return false;
        }
        fixed
            .iter()
            .zip(path)
            .all(|(p, seg)| *p == "<>" || p == seg)
    })
}

#[test]
fn every_emitted_option_path_is_a_known_nixos_option() {
    let d = Deployment::new(shop()).expect("valid");
    let mut checked = 0;
    for host in d.spec.hosts.keys() {
        for path in host_config(&d, host).leaf_paths() {
            assert!(
                allowed(&path),
                "unknown option path {} on {host}",
                path.join(".")
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} paths checked");
    // The check itself can fail.
    assert!(!allowed(&["services".into(), "nats".into(), "host".into()]));
    assert!(!allowed(&[
        "systemd".into(),
        "services".into(),
        "x".into(),
        "Restart".into()
    ]));
}

#[test]
fn every_generated_file_parses_with_rnix() {
    let flake = generate(&Deployment::new(shop()).expect("valid"));
    assert_eq!(
        flake.files.keys().cloned().collect::<Vec<_>>(),
        [
            "flake.nix",
            "hosts/app-1.nix",
            "hosts/app-2.nix",
            "hosts/data-1.nix",
            "hosts/edge-1.nix",
            "modules/murmur-agent.nix"
        ]
    );
    for (path, text) in &flake.files {
        let parsed = rnix::Root::parse(text);
        assert!(
            parsed.errors().is_empty(),
            "{path}: {:?}\n{text}",
            parsed.errors()
        );
    }
}

#[test]
fn output_is_identical_whatever_the_input_order() {
    let one = generate(&Deployment::new(shop()).expect("valid"));
    let mut shuffled = shop();
    shuffled.nodes.reverse();
    shuffled.edges.reverse();
    let two = generate(&Deployment::new(shuffled).expect("valid"));
    assert_eq!(one, two);
}

#[test]
fn hosts_get_what_their_nodes_and_edges_need() {
    let flake = generate(&Deployment::new(shop()).expect("valid"));
    // Compared with runs of whitespace squashed, so layout changes do not matter.
    let squash = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let data = &squash(&flake.files["hosts/data-1.nix"]);
    // PostgreSQL: ensure lists, TCP for the two app hosts, pg_hba lines per database.
    for expected in [
        "package = pkgs.postgresql_16;",
        "\"analytics\" \"shop\"",
        "ensureDBOwnership = true;",
        "enableTCPIP = true;",
        "host analytics all 10.0.0.12/32 scram-sha-256\\nhost shop all 10.0.0.11/32 scram-sha-256\\n",
        // Backups: a timer and a oneshot dump into the storage mount.
        "OnCalendar = \"*-*-* 03:00:00\";",
        "RequiresMountsFor = [ \"/srv/backups\"",
        "${config.services.postgresql.package}/bin/pg_dumpall --port 5432 > '/srv/backups/db-'",
        "\"/srv/backups\" = {",
        // NATS route to the other bus node.
        "\"nats://10.0.0.11:6222\"",
        "serverName = \"bus-1\";",
        // Operator mode, from files on the host.
        "operator = \"/var/lib/nats/operator.jwt\";",
        "type = \"full\";",
        "dir = \"/var/lib/nats/jwt\";",
        "system_account = \"ABOHGGSZUNBBE7DHSWEVIU73IX3SOZUCGCLVH4ZN3PLRQLADFIGEQYHZ\";",
    ] {
        assert!(data.contains(expected), "data-1 lacks {expected:?}: {data}");
    }
    // Only edge-required ports: 5432 from the apps, the route port, the bus client port
    // used by the compiler agent on app-2.
    assert!(
        data.contains("allowedTCPPorts = [ 4222 5432 6222 ];"),
        "{data}"
    );
    let app1 = &squash(&flake.files["hosts/app-1.nix"]);
    for expected in [
        // web-a depends on api (same host): ordered after and requiring it.
        "after = [ \"network-online.target\" \"api.service\" ];",
        "requires = [ \"api.service\" ];",
        "MemoryMax = \"512M\";",
        "CPUQuota = \"50%\";",
        "DynamicUser = true;",
        "Restart = \"on-failure\";",
        "StateDirectory = \"web-a\";",
        // Escaped environment: quotes and a literal ${...}.
        "GREETING = \"Hello \\\"shoppers\\\" \\${not-interpolated}\";",
        // Health probe timer.
        "web-a-health = {",
        "OnUnitActiveSec = \"15s\";",
        // The agent through the module, NATS URL from its edge.
        "planner = {",
        "package = murmurPackage;",
        "credentialsFile = \"/etc/murmur/planner.creds\";",
        "\"nats://10.0.0.11:4222\"",
        "\"nats.service\"",
    ] {
        assert!(app1.contains(expected), "app-1 lacks {expected:?}: {app1}");
    }
    let edge = &squash(&flake.files["hosts/edge-1.nix"]);
    for expected in [
        "\"10.0.0.11:8080\" = {",
        "\"10.0.0.12:8080\" = {",
        "fail_timeout = \"10s\";",
        "extraConfig = \"least_conn;\";",
        "proxyPass = \"http://lb\";",
        "allowedTCPPorts = [ 80 ];",
    ] {
        assert!(edge.contains(expected), "edge-1 lacks {expected:?}: {edge}");
    }
    let app2 = &squash(&flake.files["hosts/app-2.nix"]);
    assert!(
        app2.contains("compiler = {") && app2.contains("slots = 2;"),
        "the compiler agent runs two tasks at once: {app2}"
    );
    assert!(
        !app1.contains("slots ="),
        "the planner keeps the default: {app1}"
    );
    let flake_nix = &squash(&flake.files["flake.nix"]);
    for expected in [
        "nixpkgs.url = \"github:NixOS/nixpkgs/nixos-26.05\";",
        "murmur.url = \"github:murmur-dev/murmur\";",
        "edge-1 = host \"edge-1\";",
        "formatter.${system} = pkgs.nixfmt;",
        "nixosModules.murmur-agent = import ./modules/murmur-agent.nix;",
    ] {
        assert!(
            flake_nix.contains(expected),
            "flake.nix lacks {expected:?}: {flake_nix}"
        );
    }
    for host in ["app-1", "app-2", "data-1", "edge-1"] {
        assert!(flake.files[&format!("hosts/{host}.nix")].contains("stateVersion = \"26.05\";"));
    }
}

//! `murmur flake` end to end with real Nix (Debian's nix-bin, installed by
//! scripts/install.sh): the example deployment generates a flake whose every file
//! `nix-instantiate --parse` accepts, whose host modules evaluate offline (with stand-ins
//! for nixpkgs), byte-identical across runs; an invalid graph is refused with every problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn murmur(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(murmur_e2e::murmur_binary()?)
        .args(args)
        .current_dir(repo())
        .output()?)
}

fn nix_instantiate() -> Result<&'static str> {
    ensure!(
        Command::new("nix-instantiate")
            .arg("--version")
            .output()
            .is_ok(),
        "nix-instantiate not found: run `bash scripts/install.sh` (installs Debian's nix-bin)"
    );
    Ok("nix-instantiate")
}

fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let o = murmur(&[
        "flake",
        "generate",
        "examples/shop.toml",
        "-o",
        out.to_str().context("utf-8 path")?,
    ])?;
    ensure!(
        o.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut files = Vec::new();
    for rel in [
        "flake.nix",
        "modules/murmur-agent.nix",
        "hosts/app-1.nix",
        "hosts/app-2.nix",
        "hosts/data-1.nix",
        "hosts/edge-1.nix",
    ] {
        let p = out.join(rel);
        ensure!(p.exists(), "{rel} not generated");
        files.push(p);
    }
    Ok(files)
}

#[test]
fn generated_flake_parses_and_evaluates_with_nix_and_is_deterministic() -> Result<()> {
    let nix = nix_instantiate()?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let files = generate(a.path())?;
    generate(b.path())?;
    for f in &files {
        let rel = f.strip_prefix(a.path())?;
        assert_eq!(
            std::fs::read(f)?,
            std::fs::read(b.path().join(rel))?,
            "{} differs between runs",
            rel.display()
        );
        let parse = Command::new(nix).arg("--parse").arg(f).output()?;
        assert!(
            parse.status.success(),
            "{}: {}",
            rel.display(),
            String::from_utf8_lossy(&parse.stderr)
        );
    }
    // Each host module evaluates to the options we meant, given stand-ins for its inputs.
    for host in ["app-1", "app-2", "data-1", "edge-1"] {
        let file = a.path().join(format!("hosts/{host}.nix"));
        let expr = format!(
            "import {} {{ config = {{ services.postgresql.package = \"/pg\"; }}; lib = {{ }}; \
             pkgs = {{ curl = \"/curl\"; postgresql_16 = \"/pg16\"; }}; murmurPackage = \"/murmur\"; }}",
            file.display()
        );
        let eval = Command::new(nix)
            .args(["--eval", "--strict", "--json", "-E", &expr])
            .output()?;
        assert!(
            eval.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&eval.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&eval.stdout)?;
        assert_eq!(v["networking"]["hostName"], host);
        assert_eq!(v["system"]["stateVersion"], "26.05");
        if host == "data-1" {
            assert_eq!(v["services"]["postgresql"]["package"], "/pg16");
            assert_eq!(
                v["services"]["postgresql"]["ensureDatabases"],
                serde_json::json!(["analytics", "shop"])
            );
            assert_eq!(
                v["systemd"]["timers"]["db-backup"]["timerConfig"]["OnCalendar"],
                "*-*-* 03:00:00"
            );
            assert_eq!(
                v["services"]["nats"]["settings"]["jetstream"]["sync_interval"], "always",
                "the bus flushes every write (examples/shop.toml asks it)"
            );
        }
        if host == "app-1" {
            assert_eq!(
                v["systemd"]["services"]["web-a"]["environment"]["GREETING"],
                "Hello \"shoppers\" ${not-interpolated}",
                "escaping survives evaluation"
            );
            assert_eq!(
                v["services"]["murmur-agents"]["planner"]["package"],
                "/murmur"
            );
        }
    }
    Ok(())
}

#[test]
fn an_invalid_graph_is_refused_with_every_problem_and_parse_errors_have_positions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name":"x","hosts":{"h":{"address":"10.0.0.1"}},
            "nodes":[{"name":"a","host":"h","type":"service","command":"/a","port":80},
                     {"name":"b","host":"h","type":"service","command":"/b","port":80}],
            "edges":[{"from":"a","to":"b","type":"depends_on"},{"from":"b","to":"a","type":"depends_on"},
                     {"from":"a","to":"b","type":"mounts"}]}"#,
    )?;
    let o = murmur(&["flake", "check", bad.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for expected in [
        "3 problem(s)",
        "dependency cycle: a → b → a",
        "both use port 80",
        "mounts must point at a storage node",
    ] {
        assert!(err.contains(expected), "{expected:?} missing: {err}");
    }
    let out = dir.path().join("out");
    let o = murmur(&[
        "flake",
        "generate",
        bad.to_str().context("path")?,
        "-o",
        out.to_str().context("path")?,
    ])?;
    assert!(!o.status.success());
    assert!(!out.exists(), "nothing written for an invalid graph");

    std::fs::write(
        &bad,
        "{\n  \"name\": \"x\",\n  \"nodes\": [ {\"name\": 1} ]\n}",
    )?;
    let o = murmur(&["flake", "check", bad.to_str().context("path")?])?;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("JSON parse error at 3:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

#[test]
fn the_repository_flake_and_its_agent_module_parse() -> Result<()> {
    let nix = nix_instantiate()?;
    for f in ["flake.nix", "nix/module/murmur-agent.nix"] {
        let o = Command::new(nix)
            .arg("--parse")
            .arg(repo().join(f))
            .output()?;
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Generated flakes carry the same module text as the repository exports.
    assert_eq!(
        std::fs::read_to_string(repo().join("nix/module/murmur-agent.nix"))?,
        murmur_nix::generate::AGENT_MODULE
    );
    Ok(())
}

/// The agent module's service for one agent runs `murmur agent run` with that agent's
/// options, and murmur's own argument parser accepts that command line. Evaluated with
/// stand-ins for the few `lib` functions the module uses (no nixpkgs offline), with every
/// option set, as the NixOS module system would pass them.
#[test]
fn the_agent_module_runs_murmur_with_each_agents_options() -> Result<()> {
    use clap::Parser as _;
    use murmur_tools::cli::agent::{AgentCommand, KindCommand};
    use murmur_tools::cli::{Cli, Command as Sub};
    let nix = nix_instantiate()?;
    let expr = format!(
        r#"let
  lib = {{
    mkOption = o: o;
    types = {{ str = null; listOf = t: null; nullOr = t: null; attrsOf = t: null;
      package = null; submodule = m: null; ints = {{ positive = null; }}; }};
    mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${{n}}) (builtins.attrNames set));
    nameValuePair = name: value: {{ inherit name value; }};
    escapeShellArgs = args: args;
    concatMap = f: l: builtins.concatLists (map f l);
    optionalAttrs = c: s: if c then s else {{ }};
    optionals = c: l: if c then l else [ ];
    optional = c: x: if c then [ x ] else [ ];
    concatStringsSep = builtins.concatStringsSep;
  }};
in (import {module} {{
  inherit lib; pkgs = {{ }};
  config.services.murmur-agents.builder = {{
    kind = "compiler"; capabilities = [ "compiler.rust" "compiler.c" ];
    natsUrls = [ "nats://10.0.0.1:4222" "nats://10.0.0.2:4222" ]; realm = "shop";
    credentialsFile = "/etc/murmur/builder.creds"; environment = {{ }}; package = "/murmur"; after = [ ];
    requires = [ ]; memoryMax = "1G"; cpuQuota = null; slots = 4;
  }};
}}).config.systemd.services"#,
        module = repo().join("nix/module/murmur-agent.nix").display()
    );
    let o = Command::new(nix)
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let services: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let service = &services["murmur-agent-builder"];
    assert_eq!(
        service["environment"]["NATS_URL"],
        "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
    );
    assert_eq!(service["serviceConfig"]["MemoryMax"], "1G");
    // The credentials stay a file on the host: systemd hands the service its own copy.
    assert_eq!(
        service["serviceConfig"]["LoadCredential"],
        serde_json::json!(["murmur.creds:/etc/murmur/builder.creds"])
    );
    assert!(service["environment"].get("MURMUR_CREDS").is_none());
    let exec: Vec<String> = serde_json::from_value(service["serviceConfig"]["ExecStart"].clone())?;
    assert_eq!(exec[0], "/murmur/bin/murmur");
    assert_eq!(exec[1..3], ["--creds", "%d/murmur.creds"]);
    let cli = Cli::try_parse_from(&exec).map_err(|e| anyhow::anyhow!("{exec:?}: {e}"))?;
    assert_eq!(
        cli.global.auth.creds.as_deref(),
        Some(std::path::Path::new("%d/murmur.creds"))
    );
    let Sub::Agent {
        command: AgentCommand::Run {
            kind: KindCommand::Compiler(args),
        },
    } = cli.command
    else {
        anyhow::bail!("not `agent run compiler`: {exec:?}");
    };
    let args = args.common;
    assert_eq!((args.name.as_deref(), args.slots), (Some("builder"), 4));
    assert_eq!(args.capabilities, ["compiler.rust", "compiler.c"]);
    Ok(())
}

#[test]
fn dot_view_names_every_node() -> Result<()> {
    let o = murmur(&["flake", "graph", "examples/shop.toml", "--dot"])?;
    assert!(o.status.success());
    let dot = String::from_utf8_lossy(&o.stdout);
    assert!(dot.starts_with("digraph deployment {"));
    for node in [
        "lb", "web-a", "web-b", "api", "worker", "search", "db", "backups", "bus-1", "bus-2",
        "planner", "compiler",
    ] {
        assert!(
            dot.contains(&format!("\"{node}\" [label=")),
            "{node} missing:\n{dot}"
        );
    }
    Ok(())
}

/// The NATS settings a generated flake gives an operator-mode bus, read back from the host
/// module by `nix-instantiate --eval`, with the files `murmur creds server-files` writes where
/// they point, make a real nats-server that admits credentials the operator issues and refuses
/// an anonymous client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_operator_mode_bus_admits_issued_credentials_only() -> Result<()> {
    use murmur_subjects::roles::Role;
    use murmur_subjects::{Identity, Token};
    let nix = nix_instantiate()?;
    let dir = tempfile::tempdir()?;
    let operator = dir.path().join("operator");
    let authority = murmur_testkit::authority::Authority::open_or_create(&operator.join("auth"))?;
    let realm = Token::new("shop")?;
    authority.realm_keys(&realm)?;
    let files = dir.path().join("host");
    let system = authority.write_server_files(&files, &Default::default())?;
    let port = murmur_testkit::server::free_port()?;
    let graph = dir.path().join("bus.json");
    std::fs::write(
        &graph,
        serde_json::json!({
            "name": "bus",
            "hosts": {"h": {"address": "127.0.0.1"}},
            "nodes": [{
                "name": "bus", "host": "h", "type": "message_bus", "port": port,
                "auth": {
                    "mode": "operator",
                    "system_account": system,
                    "operator_jwt_file": files.join("operator.jwt"),
                    "resolver_dir": files.join("jwt"),
                }
            }],
            "edges": []
        })
        .to_string(),
    )?;
    let out = dir.path().join("flake");
    let o = murmur(&[
        "flake",
        "generate",
        graph.to_str().context("path")?,
        "-o",
        out.to_str().context("path")?,
    ])?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flake_text = std::fs::read_to_string(out.join("hosts/h.nix"))?;
    // No nkey seed (58 base32 characters, `S` then the key's kind) anywhere in the flake.
    let seed = flake_text
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
        .find(|w| w.len() == 58 && w.starts_with('S'));
    ensure!(seed.is_none(), "a seed in the generated host: {seed:?}");
    let expr = format!(
        "(import {} {{ config = {{ }}; lib = {{ }}; pkgs = {{ }}; murmurPackage = \"/murmur\"; }}).services.nats",
        out.join("hosts/h.nix").display()
    );
    let eval = Command::new(nix)
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()?;
    ensure!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let nats: serde_json::Value = serde_json::from_slice(&eval.stdout)?;
    // What the NixOS nats module renders: its settings, the port, JetStream in its data dir
    // (merged into the graph's JetStream settings, as the module's store_dir is).
    let mut config = nats["settings"].clone();
    config["port"] = nats["port"].clone();
    config["host"] = "127.0.0.1".into();
    ensure!(
        config["jetstream"]["sync_interval"] == "always",
        "a bus that sets no sync_interval syncs every write: {config}"
    );
    config["jetstream"]["store_dir"] = serde_json::json!(dir.path().join("js"));
    let config_path = dir.path().join("nats.json");
    std::fs::write(&config_path, config.to_string())?;
    let system_creds = dir.path().join("system.creds");
    murmur_testkit::authority::write_secret(&system_creds, &authority.system_creds()?)?;
    let mut server = murmur_testkit::server::NatsProcess::start_with_config(
        &config_path,
        port,
        murmur_testkit::server::free_port()?,
        &dir.path().join("store"),
        Some(&system_creds),
    )
    .await?;
    let url = server.url();
    // Not waiting on health (the config has no monitoring port): the first client retries.
    let worker = Identity::generate();
    let creds = dir.path().join("worker.creds");
    std::fs::write(
        &creds,
        authority.creds(&realm, Role::Worker, "w", &worker, None)?,
    )?;
    let until = tokio::time::Instant::now() + murmur_e2e::DEADLINE;
    let client = loop {
        let attempt = murmur_subjects::connect::ConnectOptions::servers(&url)
            .auth(murmur_subjects::connect::Auth::CredsFile {
                path: creds.clone(),
            })
            .connect()
            .await;
        match attempt {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < until => {
                eprintln!("waiting for the server: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let account = async_nats::jetstream::new(client).query_account().await?;
    ensure!(
        account.limits.max_streams.is_none_or(|n| n < 0),
        "JetStream unlimited in the realm's account: {:?}",
        account.limits
    );
    ensure!(
        async_nats::connect(&url).await.is_err(),
        "an anonymous client was admitted"
    );
    server.stop().await?;
    Ok(())
}

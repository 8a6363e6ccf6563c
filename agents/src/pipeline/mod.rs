//! The distributed-compilation agent kinds.
//!
//! - **planner** (`planner`): fetches a submitted workspace archive, reads its manifests and
//!   submits the task graph ([`workspace::plan`]): build each member after the members it
//!   depends on, then test it.
//! - **compiler** (`compiler.rust`): fetches the archive into its own temp dir, runs the
//!   machine's `cargo test --no-run` for one package (offline, a private target dir, the
//!   caller's `CARGO_*` variables cleared) and stores the test binaries it produced. A compile
//!   error fails the task with cargo's rendered diagnostics.
//! - **executor** (`executor.test`): fetches the test binaries its parent build produced into
//!   its own temp dir and runs them with a time limit and an address-space limit; a failing
//!   test fails the task with the harness's output.
//!
//! Source and binaries move only through the artifact store ([`crate::artifacts`]); no two
//! agents share a path. Every child process is killed when its attempt is dropped, so a
//! cancelled task stops the process running it.

pub mod workspace;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use murmur_coordination::submit::{Cause, submit_graph};
use murmur_subjects::EventLog;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::artifacts::{ArtifactRef, ArtifactStore};
use crate::worker::{Handler, TaskContext, TaskResult, handler};
use workspace::{Goal, plan, unpack, write_tree};

/// Limits and tools of the pipeline agents.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The `cargo` the compiler runs.
    pub cargo: PathBuf,
    /// Longest a build may take.
    pub compile_timeout: Duration,
    /// Longest one test binary may run.
    pub test_timeout: Duration,
    /// Address-space limit of a test binary, in bytes.
    pub test_memory_bytes: u64,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            cargo: std::env::var_os("MURMUR_CARGO")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("cargo")),
            compile_timeout: Duration::from_secs(600),
            test_timeout: Duration::from_secs(120),
            test_memory_bytes: 2 << 30,
        }
    }
}

/// The capability a pipeline kind offers by default.
pub fn default_capability(kind: &str) -> Option<&'static str> {
    match kind {
        "planner" => Some(workspace::PLANNER),
        "compiler" => Some(workspace::COMPILER),
        "executor" => Some(workspace::EXECUTOR),
        _ => None,
    }
}

/// The handler of a pipeline kind (`planner`, `compiler`, `executor`); `None` for others.
pub fn handler_for(
    kind: &str,
    log: EventLog,
    store: ArtifactStore,
    options: PipelineOptions,
) -> Option<Handler> {
    match kind {
        "planner" => Some(handler(move |ctx| {
            let (log, store) = (log.clone(), store.clone());
            async move { run_planner(&log, &store, ctx).await }
        })),
        "compiler" => Some(handler(move |ctx| {
            let (store, options) = (store.clone(), options.clone());
            async move { run_compiler(&store, &options, ctx).await }
        })),
        "executor" => Some(handler(move |ctx| {
            let (store, options) = (store.clone(), options.clone());
            async move { run_executor(&store, &options, ctx).await }
        })),
        _ => None,
    }
}

/// A planner task's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInput {
    /// The workspace archive.
    pub source: ArtifactRef,
    /// What to do with it.
    #[serde(default)]
    pub goal: Goal,
}

/// A compiler task's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileInput {
    /// The workspace archive.
    pub source: ArtifactRef,
    /// The package to build.
    pub package: String,
}

/// An executable a build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltExecutable {
    /// Cargo target name.
    pub target: String,
    /// Whether it is a test harness (`profile.test`).
    pub test: bool,
    /// Path in the compiler's temp dir (never shared; for the record).
    pub path: String,
}

/// A compiler task's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileOutput {
    /// The package.
    pub package: String,
    /// Test binaries, stored.
    pub tests: Vec<StoredBinary>,
    /// Other binaries, stored.
    pub bins: Vec<StoredBinary>,
    /// Wall time of the build.
    pub compile_ms: u64,
}

/// A binary in the artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBinary {
    /// Cargo target name.
    pub target: String,
    /// Where its bytes are.
    pub artifact: ArtifactRef,
}

/// A task's own input: for a task with parents the worker passes `{"input", "parents"}`.
fn own_input(input: &serde_json::Value) -> serde_json::Value {
    match input.get("parents") {
        Some(_) => input
            .get("input")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
        None => input.clone(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(input: &serde_json::Value) -> Result<T, String> {
    serde_json::from_value(own_input(input)).map_err(|e| format!("task input: {e}"))
}

/// The last `max` bytes of `text`, on a char boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

async fn run_planner(log: &EventLog, store: &ArtifactStore, ctx: TaskContext) -> TaskResult {
    let input: PlanInput = parse(&ctx.input)?;
    let archive = store.get(&input.source).await.map_err(|e| e.to_string())?;
    let tree = unpack(&archive).map_err(|e| e.to_string())?;
    let members = workspace::members(&tree).map_err(|e| e.to_string())?;
    let spec = plan(&members, &input.source, input.goal);
    // The same prefix on every attempt, so a retried plan re-submits nothing.
    let digest = sha2::Sha256::digest(ctx.task.as_bytes());
    let prefix = format!(
        "p{}",
        digest[..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cause = Cause {
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.started_id.clone(),
    };
    let ids = submit_graph(log, &spec, &prefix, Some(&cause))
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "goal": input.goal,
        "members": members.iter().map(|m| serde_json::json!({
            "package": m.package, "dir": m.dir, "path_deps": m.path_deps,
        })).collect::<Vec<_>>(),
        "tasks": ids,
    }))
}

/// The executables in cargo's `--message-format=json` output (`compiler-artifact` messages
/// with an `executable`; build scripts excluded).
pub fn built_executables(cargo_stdout: &str) -> Vec<BuiltExecutable> {
    cargo_stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let path = m["executable"].as_str()?.to_string();
            let kinds = m["target"]["kind"].as_array()?;
            if kinds.iter().any(|k| k == "custom-build") {
                return None;
            }
            Some(BuiltExecutable {
                target: m["target"]["name"].as_str()?.to_string(),
                test: m["profile"]["test"].as_bool().unwrap_or(false),
                path,
            })
        })
        .collect()
}

/// Cargo's stderr without progress lines: what a person needs to see a compile error.
fn diagnostics(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("Compiling ")
                || t.starts_with("Finished ")
                || t.starts_with("Executable ")
                || t.starts_with("Locking ")
                || t.starts_with("Adding ")
                || t.starts_with("Blocking "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_compiler(
    store: &ArtifactStore,
    options: &PipelineOptions,
    ctx: TaskContext,
) -> TaskResult {
    let input: CompileInput = parse(&ctx.input)?;
    ctx.progress.report(
        None,
        None,
        Some(format!("fetching the source of {}", input.package)),
    );
    let archive = store.get(&input.source).await.map_err(|e| e.to_string())?;
    let tree = unpack(&archive).map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("murmur-compiler-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let src = dir.path().join("src");
    write_tree(&tree, &src).map_err(|e| format!("unpacking source: {e}"))?;
    let mut cmd = tokio::process::Command::new(&options.cargo);
    cmd.args(["test", "--no-run", "--offline", "--package"])
        .arg(&input.package)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The caller's cargo settings (e.g. when run under `cargo test`) must not leak in.
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && k.starts_with("CARGO_")
            && k != "CARGO_HOME"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", dir.path().join("target"))
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_PROFILE_TEST_DEBUG", "0");
    ctx.progress.report(
        None,
        None,
        Some(format!("cargo test --no-run -p {}", input.package)),
    );
    let started = Instant::now();
    let out = output_in_group(cmd, options.compile_timeout, "cargo").await?;
    let compile_ms = started.elapsed().as_millis() as u64;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "cargo test --no-run -p {} failed ({}):\n{}",
            input.package,
            out.status,
            tail(diagnostics(&stderr).trim(), 6000)
        ));
    }
    let mut output = CompileOutput {
        package: input.package.clone(),
        tests: vec![],
        bins: vec![],
        compile_ms,
    };
    for exe in built_executables(&String::from_utf8_lossy(&out.stdout)) {
        let bytes = tokio::fs::read(&exe.path)
            .await
            .map_err(|e| format!("reading {}: {e}", exe.path))?;
        let artifact = store
            .put(&exe.target, &bytes)
            .await
            .map_err(|e| e.to_string())?;
        let stored = StoredBinary {
            target: exe.target,
            artifact,
        };
        if exe.test {
            output.tests.push(stored);
        } else {
            output.bins.push(stored);
        }
    }
    serde_json::to_value(output).map_err(|e| e.to_string())
}

/// One test binary's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRun {
    /// Cargo target name.
    pub target: String,
    /// Exit code (`None`: killed by a signal, e.g. the memory limit).
    pub exit_code: Option<i32>,
    /// Wall time.
    pub duration_ms: u64,
    /// The harness's summary line (`test result: ...`), if any.
    pub summary: Option<String>,
}

async fn run_executor(
    store: &ArtifactStore,
    options: &PipelineOptions,
    ctx: TaskContext,
) -> TaskResult {
    #[derive(Deserialize)]
    struct ExecInput {
        package: String,
    }
    let input: ExecInput = parse(&ctx.input)?;
    let mut tests = Vec::new();
    if let Some(parents) = ctx.input.get("parents").and_then(|p| p.as_object()) {
        for output in parents.values() {
            if let Ok(built) = serde_json::from_value::<CompileOutput>(output.clone()) {
                tests.extend(built.tests);
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("murmur-executor-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let mut runs = Vec::new();
    for (i, test) in tests.iter().enumerate() {
        ctx.progress.report(
            Some(i as u64),
            Some(tests.len() as u64),
            Some(format!("running {}", test.target)),
        );
        let bytes = store.get(&test.artifact).await.map_err(|e| e.to_string())?;
        let path = dir.path().join(format!("{i}-{}", test.target));
        std::fs::write(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let out = run_limited(&path, dir.path(), options).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("test result:"))
            .map(str::to_string);
        if !out.status.success() {
            return Err(format!(
                "tests of {} failed: {} exited with {}\n{}\n{}",
                input.package,
                test.target,
                out.status,
                tail(stdout.trim(), 5000),
                tail(stderr.trim(), 1000)
            ));
        }
        runs.push(TestRun {
            target: test.target.clone(),
            exit_code: out.status.code(),
            duration_ms: started.elapsed().as_millis() as u64,
            summary,
        });
    }
    Ok(serde_json::json!({ "package": input.package, "passed": true, "runs": runs }))
}

/// Runs `cmd` in a process group of its own, collecting its output; the group is killed if
/// the returned future is dropped before the child exits.
async fn output_in_group(
    mut cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<std::process::Output, String> {
    cmd.process_group(0).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("starting {what}: {e}"))?;
    let mut guard = crate::process_group::GroupGuard::of(&child);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("{what} timed out after {limit:?} and was killed"))?
        .map_err(|e| format!("running {what}: {e}"));
    if out.is_ok() {
        guard.release();
    }
    out
}

/// Runs a test binary under `ulimit -v` and a wall-clock limit; the process is killed when
/// the limit passes or the attempt is dropped.
async fn run_limited(
    exe: &std::path::Path,
    cwd: &std::path::Path,
    options: &PipelineOptions,
) -> Result<std::process::Output, String> {
    let kib = (options.test_memory_bytes / 1024).to_string();
    for retry in 0..5 {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh", &kib])
            .arg(exe)
            .args(["--test-threads", "2"])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = output_in_group(cmd, options.test_timeout, &exe.display().to_string()).await?;
        // "Text file busy": another thread forked while the binary was still open for
        // writing; the window is short, so try again.
        if out.status.code() == Some(126) && retry < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return Ok(out);
    }
    Err(format!("{} could not be started", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_come_from_compiler_artifact_messages() {
        let stdout = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/mathlib#0.1.0","target":{"kind":["lib"],"name":"mathlib"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["custom-build"],"name":"build-script-build"},"profile":{"test":false},"executable":"/t/build/x"}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"app"},"profile":{"test":true},"executable":"/t/debug/deps/app-1234"}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"app"},"profile":{"test":false},"executable":"/t/debug/app"}
not json
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            built_executables(stdout),
            vec![
                BuiltExecutable {
                    target: "app".into(),
                    test: true,
                    path: "/t/debug/deps/app-1234".into()
                },
                BuiltExecutable {
                    target: "app".into(),
                    test: false,
                    path: "/t/debug/app".into()
                },
            ]
        );
    }

    #[test]
    fn diagnostics_drop_progress_lines_and_keep_errors() {
        let stderr = "   Compiling mathlib v0.1.0 (/x)\nerror[E0308]: mismatched types\n --> src/lib.rs:2:5\n    Finished `test` profile";
        assert_eq!(
            diagnostics(stderr),
            "error[E0308]: mismatched types\n --> src/lib.rs:2:5"
        );
    }

    #[test]
    fn graph_tasks_read_their_own_input() {
        let with_parents = serde_json::json!({"input": {"package": "a"}, "parents": {}});
        assert_eq!(
            own_input(&with_parents),
            serde_json::json!({"package": "a"})
        );
        let plain = serde_json::json!({"package": "a"});
        assert_eq!(own_input(&plain), plain);
        assert_eq!(tail("héllo", 4), "llo");
    }
}

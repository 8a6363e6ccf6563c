//! `tool.exec`: commands from an allowlist, each run in a private temporary directory with
//! time, memory, process and file-size limits and its output capped — so an agent that plans
//! can have a command run without being able to run one itself.
//!
//! A request names a program by its allowlisted name (never a path, never a shell line) with
//! its arguments, optional standard input and optional files written into the directory
//! first. The program runs with a cleared environment, in a process group of its own, under
//! `prlimit` (util-linux): address space, CPU seconds, file size, no core dumps, and no more
//! processes than the user already has plus the allowance (Linux counts a user's processes
//! and threads together, so the allowance is added to the count at start). An agent running
//! as root runs its commands as `nobody` (through `setpriv`): root is exempt from the process
//! limit, and a command has no business with root's files. Past its time the whole group is
//! killed; the directory is removed afterwards whatever happened.
//!
//! A command that ran gives its exit status and output, whatever the status: a non-zero exit
//! is an answer, not a failure of the tool. A command that could not run or ran too long
//! fails the attempt with an [`ExecError`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use crate::worker::{Handler, TaskContext};

/// The capability of [`ExecTool`].
pub const EXEC_CAPABILITY: &str = "tool.exec";

/// Most files a request may place in the directory.
pub const MAX_FILES: usize = 64;

/// Most bytes of files and standard input together a request may carry (1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// What a `tool.exec` task asks (its input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// An allowlisted program's name (e.g. `wc`), not a path.
    pub command: String,
    /// Its arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Text given on its standard input (none: standard input is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Files written into its directory before it starts: relative path → text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// What a command that ran gave back (the task's output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    /// Its exit code; absent when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did (e.g. 9 when the CPU limit was reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Its standard output (lossy UTF-8), at most the tool's output cap.
    pub stdout: String,
    /// Its standard error, likewise.
    pub stderr: String,
    /// Bytes it wrote to standard output in all, kept or not.
    pub stdout_bytes: u64,
    /// Bytes it wrote to standard error in all.
    pub stderr_bytes: u64,
    /// Whether either stream was cut at the cap.
    pub truncated: bool,
    /// Wall-clock milliseconds from start to exit.
    pub duration_ms: u64,
}

/// The limits every command runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock time; the process group is killed past it. CPU time is limited to the
    /// same number of seconds (rounded up).
    pub timeout: Duration,
    /// Address space of each process (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Processes (and threads) it may start beyond what the user runs at its start.
    pub processes: u64,
    /// Largest file it may write (`RLIMIT_FSIZE`).
    pub file_bytes: u64,
    /// Bytes of standard output and of standard error kept, each.
    pub output_bytes: usize,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory_bytes: 512 << 20,
            processes: 16,
            file_bytes: 16 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// Why a `tool.exec` request did not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The command is not on the allowlist.
    #[error("`{command}` is not an allowed command here (allowed: {})", allowed.join(", "))]
    NotAllowed {
        /// The command asked for.
        command: String,
        /// What is allowed.
        allowed: Vec<String>,
    },
    /// An allowlisted name is not a program in the system directories.
    #[error(
        "`{0}` is not a program in /usr/local/bin, /usr/bin or /bin (tool.exec allows names of installed programs)"
    )]
    NotFound(String),
    /// The allowlist is empty.
    #[error("tool.exec needs at least one allowed command")]
    NothingAllowed,
    /// A util-linux program the tool needs is missing: `prlimit` applies the limits,
    /// `setpriv` drops root.
    #[error("tool.exec needs `{0}` (Debian package util-linux), which is not in /usr/bin or /bin")]
    MissingHelper(&'static str),
    /// A file the request would place is refused.
    #[error("file {name:?} refused: {reason}")]
    BadFile {
        /// The name asked for.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Files and standard input are over [`MAX_REQUEST_BYTES`] or [`MAX_FILES`].
    #[error("the request carries too much: {0}")]
    TooLarge(String),
    /// The command ran past its time and was killed with its process group.
    #[error("`{command}` ran past {after:?} and was killed with every process it started")]
    TimedOut {
        /// The command.
        command: String,
        /// Its time limit.
        after: Duration,
    },
    /// The directory, the files or the process could not be set up or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// `tool.exec`: the allowlist resolved to programs, and the limits.
#[derive(Debug, Clone)]
pub struct ExecTool {
    commands: BTreeMap<String, PathBuf>,
    limits: ExecLimits,
    prlimit: PathBuf,
    /// Where the agent runs as root: `setpriv` and the user commands run as instead.
    unprivileged: Option<(PathBuf, u32)>,
}

/// The user and group a root agent's commands run as (`nobody`, `nogroup`).
const NOBODY: u32 = 65534;

/// The system directories programs are looked up in, and the only `PATH` a command sees:
/// not the agent's own `PATH`, whose user directories a command may not be able to reach.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(SEARCH_PATH)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl ExecTool {
    /// A tool allowing `commands` (program names, looked up now in `/usr/local/bin`,
    /// `/usr/bin` and `/bin`, so a missing one fails the start rather than a task) under
    /// `limits`.
    pub fn new(
        commands: impl IntoIterator<Item = impl Into<String>>,
        limits: ExecLimits,
    ) -> Result<Self, ExecError> {
        let mut resolved = BTreeMap::new();
        for name in commands {
            let name: String = name.into();
            let plain = !name.is_empty()
                && !name.contains('/')
                && name != "."
                && name != ".."
                && !name.chars().any(char::is_whitespace);
            let program = plain.then(|| find_program(&name)).flatten();
            resolved.insert(name.clone(), program.ok_or(ExecError::NotFound(name))?);
        }
        if resolved.is_empty() {
            return Err(ExecError::NothingAllowed);
        }
        let prlimit = find_program("prlimit").ok_or(ExecError::MissingHelper("prlimit"))?;
        let unprivileged = match own_uid() {
            Some(0) => Some((
                find_program("setpriv").ok_or(ExecError::MissingHelper("setpriv"))?,
                NOBODY,
            )),
            _ => None,
        };
        Ok(Self {
            commands: resolved,
            limits,
            prlimit,
            unprivileged,
        })
    }

    /// The allowed command names, sorted.
    pub fn allowed(&self) -> Vec<String> {
        self.commands.keys().cloned().collect()
    }

    /// The limits commands run under.
    pub fn limits(&self) -> &ExecLimits {
        &self.limits
    }

    /// Runs `request` in a fresh directory and gives back what the command did.
    pub async fn run(&self, request: &ExecRequest) -> Result<ExecOutcome, ExecError> {
        let program = self
            .commands
            .get(&request.command)
            .ok_or_else(|| ExecError::NotAllowed {
                command: request.command.clone(),
                allowed: self.allowed(),
            })?;
        check_sizes(request)?;
        let dir = tempfile::Builder::new()
            .prefix("murmur-exec-")
            .tempdir()
            .map_err(io("making the command's directory"))?;
        for (name, text) in &request.files {
            let path = dir.path().join(file_path(name)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {name}'s directory")))?;
            }
            std::fs::write(&path, text).map_err(io(format!("writing {name}")))?;
        }
        if let Some((_, uid)) = &self.unprivileged {
            give_to(dir.path(), *uid)?;
        }

        let limits = &self.limits;
        let cpu_seconds = limits.timeout.as_secs() + u64::from(limits.timeout.subsec_nanos() > 0);
        let runs_as = match &self.unprivileged {
            Some((_, uid)) => Some(*uid),
            None => own_uid(),
        };
        let processes = runs_as.and_then(user_tasks).unwrap_or(0) + limits.processes + 1;
        let mut command = match &self.unprivileged {
            Some((setpriv, uid)) => {
                let mut command = tokio::process::Command::new(setpriv);
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--"])
                    .arg(&self.prlimit);
                command
            }
            None => tokio::process::Command::new(&self.prlimit),
        };
        command
            .arg(format!("--as={}", limits.memory_bytes))
            .arg(format!("--cpu={}", cpu_seconds.max(1)))
            .arg(format!("--fsize={}", limits.file_bytes))
            .arg(format!("--nproc={processes}"))
            .arg("--core=0")
            .arg("--")
            .arg(program)
            .args(&request.args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", SEARCH_PATH)
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(if request.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);

        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(io(format!("starting {}", request.command)))?;
        let mut group = crate::process_group::GroupGuard::of(&child);
        let stdin = child.stdin.take().zip(request.stdin.clone());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = limits.output_bytes;
        let ran = tokio::time::timeout(limits.timeout, async {
            let feed = async {
                if let Some((mut pipe, text)) = stdin {
                    // A command that stops reading early closes the pipe: not an error.
                    let _ = pipe.write_all(text.as_bytes()).await;
                }
            };
            let ((), out, err, status) = tokio::join!(
                feed,
                read_capped(stdout, cap),
                read_capped(stderr, cap),
                child.wait()
            );
            (out, err, status)
        })
        .await;
        let (out, err, status) = ran.map_err(|_| ExecError::TimedOut {
            command: request.command.clone(),
            after: limits.timeout,
        })?;
        let status = status.map_err(io(format!("waiting for {}", request.command)))?;
        group.release();
        let (out, err) = (
            out.map_err(io("reading standard output"))?,
            err.map_err(io("reading standard error"))?,
        );
        use std::os::unix::process::ExitStatusExt as _;
        Ok(ExecOutcome {
            exit_code: status.code(),
            signal: status.signal(),
            truncated: out.total > out.kept.len() as u64 || err.total > err.kept.len() as u64,
            stdout: String::from_utf8_lossy(&out.kept).into_owned(),
            stderr: String::from_utf8_lossy(&err.kept).into_owned(),
            stdout_bytes: out.total,
            stderr_bytes: err.total,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

fn check_sizes(request: &ExecRequest) -> Result<(), ExecError> {
    if request.files.len() > MAX_FILES {
        return Err(ExecError::TooLarge(format!(
            "{} files (at most {MAX_FILES})",
            request.files.len()
        )));
    }
    let bytes: usize = request
        .files
        .iter()
        .map(|(n, t)| n.len() + t.len())
        .sum::<usize>()
        + request.stdin.as_ref().map_or(0, String::len);
    if bytes > MAX_REQUEST_BYTES {
        return Err(ExecError::TooLarge(format!(
            "{bytes} bytes of files and input (at most {MAX_REQUEST_BYTES})"
        )));
    }
    Ok(())
}

/// A file name as a path inside the directory: relative, plain components only.
fn file_path(name: &str) -> Result<PathBuf, ExecError> {
    let refuse = |reason| ExecError::BadFile {
        name: name.to_string(),
        reason,
    };
    let path = Path::new(name);
    if name.is_empty() || path.components().count() == 0 {
        return Err(refuse("empty name"));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse("must be a relative path without `..` or `.`"));
    }
    Ok(path.to_path_buf())
}

struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads a stream to its end, keeping the first `cap` bytes: the rest is read and counted so
/// the command never blocks on a full pipe.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
) -> std::io::Result<Captured> {
    let mut captured = Captured {
        kept: Vec::new(),
        total: 0,
    };
    let Some(mut stream) = stream else {
        return Ok(captured);
    };
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(captured);
        }
        captured.total += n as u64;
        let room = cap.saturating_sub(captured.kept.len()).min(n);
        captured.kept.extend_from_slice(&buf[..room]);
    }
}

fn status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// This process's real user id.
fn own_uid() -> Option<u32> {
    status_uid(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Hands a directory and everything in it to `uid` (and the group of the same number).
fn give_to(dir: &Path, uid: u32) -> Result<(), ExecError> {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid))
        .map_err(io(format!("handing {} to uid {uid}", dir.display())))?;
    for entry in std::fs::read_dir(dir).map_err(io("listing the command's directory"))? {
        let path = entry.map_err(io("listing the command's directory"))?.path();
        if path.is_dir() {
            give_to(&path, uid)?;
        } else {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid))
                .map_err(io(format!("handing {} to uid {uid}", path.display())))?;
        }
    }
    Ok(())
}

/// How many processes and threads `uid` runs now (what Linux checks `RLIMIT_NPROC` against),
/// read from `/proc`.
fn user_tasks(uid: u32) -> Option<u64> {
    let mut tasks = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if status_uid(&status) == Some(uid) {
            tasks += status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(1);
        }
    }
    Some(tasks)
}

/// The worker handler of a `tool.exec` agent: each attempt decodes its input as an
/// [`ExecRequest`] and runs it; a refused request, or one past its time, fails the attempt
/// with the reason.
pub fn exec_handler(tool: Arc<ExecTool>) -> Handler {
    crate::worker::handler(move |ctx: TaskContext| {
        let tool = tool.clone();
        async move {
            let request: ExecRequest = serde_json::from_value(ctx.input).map_err(|e| {
                format!(
                    "a tool.exec task takes {{\"command\": NAME, \"args\": [...], \"stdin\": TEXT, \"files\": {{PATH: TEXT}}}} (allowed: {}): {e}",
                    tool.allowed().join(", ")
                )
            })?;
            let outcome = tool.run(&request).await.map_err(|e| e.to_string())?;
            serde_json::to_value(outcome).map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(commands: &[&str], limits: ExecLimits) -> ExecTool {
        ExecTool::new(commands.iter().copied(), limits).expect("allowlist")
    }

    fn request(command: &str, args: &[&str]) -> ExecRequest {
        ExecRequest {
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
            files: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn runs_an_allowed_command_on_its_files_and_input_in_a_private_directory() {
        let exec = tool(&["wc", "ls", "pwd"], ExecLimits::default());
        let mut count = request("wc", &["-l", "src/lib.rs"]);
        count
            .files
            .insert("src/lib.rs".into(), "one\ntwo\nthree\n".into());
        let out = exec.run(&count).await.expect("wc");
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        assert_eq!(out.stdout.trim(), "3 src/lib.rs");
        assert!(!out.truncated);

        let mut piped = request("wc", &["-w"]);
        piped.stdin = Some("a b c d\n".into());
        assert_eq!(exec.run(&piped).await.expect("stdin").stdout.trim(), "4");

        // Each run has its own directory holding only its files, removed afterwards.
        let first = exec.run(&request("pwd", &[])).await.expect("pwd").stdout;
        let second = exec.run(&request("pwd", &[])).await.expect("pwd").stdout;
        assert_ne!(first, second);
        assert!(!Path::new(first.trim()).exists(), "{first} left behind");
        let listing = exec.run(&request("ls", &["-A"])).await.expect("ls");
        assert_eq!(listing.stdout, "");

        // A failing command is an answer, not a tool failure.
        let missing = exec
            .run(&request("ls", &["nothing-here"]))
            .await
            .expect("ls");
        assert_ne!(missing.exit_code, Some(0));
        assert!(missing.stderr.contains("nothing-here"), "{missing:?}");
    }

    #[tokio::test]
    async fn refuses_what_is_not_allowed_before_running_anything() {
        let exec = tool(&["wc"], ExecLimits::default());
        for command in ["rm", "/usr/bin/wc", "sh", ""] {
            let refused = exec.run(&request(command, &[])).await;
            assert!(
                matches!(refused, Err(ExecError::NotAllowed { .. })),
                "{command:?}: {refused:?}"
            );
        }
        for name in ["../escape", "/etc/passwd", "a/../../b", "./x", ""] {
            let mut escaping = request("wc", &[]);
            escaping.files.insert(name.into(), "x".into());
            let refused = exec.run(&escaping).await;
            assert!(
                matches!(refused, Err(ExecError::BadFile { .. })),
                "{name:?}: {refused:?}"
            );
        }
        let mut big = request("wc", &[]);
        big.stdin = Some("x".repeat(MAX_REQUEST_BYTES + 1));
        assert!(matches!(exec.run(&big).await, Err(ExecError::TooLarge(_))));
        assert!(matches!(
            ExecTool::new(["no-such-program-here"], ExecLimits::default()),
            Err(ExecError::NotFound(_))
        ));
        assert!(matches!(
            ExecTool::new(["../bin/sh"], ExecLimits::default()),
            Err(ExecError::NotFound(_))
        ));
        assert!(matches!(
            ExecTool::new(Vec::<String>::new(), ExecLimits::default()),
            Err(ExecError::NothingAllowed)
        ));
    }

    #[tokio::test]
    async fn a_command_past_its_time_is_killed_with_its_group() {
        let exec = tool(
            &["sleep"],
            ExecLimits {
                timeout: Duration::from_millis(300),
                ..Default::default()
            },
        );
        let started = Instant::now();
        let out = exec.run(&request("sleep", &["30"])).await;
        assert!(matches!(out, Err(ExecError::TimedOut { .. })), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn what_a_command_started_dies_with_it_past_its_time() {
        use std::os::unix::fs::PermissionsExt as _;
        // A file the command (maybe `nobody`) can write: where its background child's pid goes.
        let out = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let pid_file = out.path().join("child.pid");
        let exec = tool(
            &["sh"],
            ExecLimits {
                timeout: Duration::from_millis(500),
                ..Default::default()
            },
        );
        let started = exec
            .run(&request(
                "sh",
                &[
                    "-c",
                    "sleep 30 & echo $! > \"$0\"; wait",
                    pid_file.to_str().expect("utf-8"),
                ],
            ))
            .await;
        assert!(
            matches!(started, Err(ExecError::TimedOut { .. })),
            "{started:?}"
        );
        let pid = std::fs::read_to_string(&pid_file).expect("the child's pid");
        let status = format!("/proc/{}/status", pid.trim());
        // Killed: gone, or a zombie waiting for its reaper; never still sleeping.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(&status).ok().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("State:"))
                    .map(str::to_string)
            });
            match state {
                None => break,
                Some(s) if s.contains("Z") => break,
                Some(s) => assert!(
                    Instant::now() < deadline,
                    "the background child lives on: {s}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn output_is_capped_and_counted() {
        let exec = tool(
            &["seq"],
            ExecLimits {
                output_bytes: 100,
                ..Default::default()
            },
        );
        let out = exec
            .run(&request("seq", &["1", "100000"]))
            .await
            .expect("seq");
        assert_eq!(out.exit_code, Some(0));
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), 100);
        assert!(out.stdout.starts_with("1\n2\n3\n"));
        // 1..=100000 with newlines: 588,895 bytes.
        assert_eq!(out.stdout_bytes, 588_895);
    }

    const FORK_LOOP: &str = "import os\nn = 0\ntry:\n    for i in range(200):\n        if os.fork() == 0:\n            os._exit(0)\n        n += 1\n    print('all', n)\nexcept OSError as e:\n    print('stopped', n, e.strerror)\n";

    #[tokio::test]
    async fn memory_and_process_limits_hold() {
        let exec = tool(
            &["python3"],
            ExecLimits {
                memory_bytes: 256 << 20,
                ..Default::default()
            },
        );
        let big = exec
            .run(&request("python3", &["-c", "x = bytearray(1 << 30)"]))
            .await
            .expect("python3");
        assert_ne!(big.exit_code, Some(0), "{big:?}");
        assert!(big.stderr.contains("MemoryError"), "{big:?}");
        // Children exit at once but stay counted until reaped, so the loop meets the limit
        // whatever else the user starts or stops meanwhile.
        let forks = exec
            .run(&request("python3", &["-c", FORK_LOOP]))
            .await
            .expect("python3");
        let stopped: Vec<&str> = forks.stdout.split_whitespace().collect();
        assert_eq!(stopped.first(), Some(&"stopped"), "{forks:?}");
        let started: u64 = stopped[1].parse().expect("count");
        assert!(started <= 16 + 8, "{forks:?}");
        let small = exec
            .run(&request(
                "python3",
                &["-c", "print(len(bytearray(1 << 20)))"],
            ))
            .await
            .expect("python3");
        assert_eq!(small.stdout.trim(), "1048576", "{small:?}");
    }
}

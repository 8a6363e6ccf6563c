//! # murmur-tools
//!
//! The `murmur` command line ([`cli`]) and the public test kit ([`testkit`]): a real
//! nats-server with JetStream for tests — in a container when a Docker engine is reachable,
//! else the local binary — plus a 3-node cluster with stop/restart.

/// `println!` for command output: a closed pipe (`murmur ... | head`) ends the program
/// quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::emit(&format!($($arg)*))
    };
}

/// Writes one line to stdout; exits 0 when stdout is a closed pipe, first killing the child
/// processes this process started (`process::exit` runs no destructors, so their
/// kill-on-drop would not fire and they would outlive us).
pub fn emit(line: &str) {
    use std::io::Write;
    // Held across the write, and set only after it: whoever reads the last line (a demo past
    // its deadline, about to exit) gets one that is already on stdout. Set before the write,
    // it could name a line the process exited without printing.
    let mut last = LAST_LINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        exit_killing_children(0);
    }
    line.clone_into(&mut last);
}

/// Exits at once with `code`, first killing the child processes this process started
/// (`process::exit` runs no destructors, so their kill-on-drop would not fire).
pub fn exit_killing_children(code: i32) -> ! {
    kill_tracked_children();
    std::process::exit(code)
}

/// The last line [`emit`] wrote: what a command that overran its deadline was doing.
static LAST_LINE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The last line of command output written so far (empty before the first).
pub fn last_output_line() -> String {
    // A write in progress holds the lock; a reader stuck behind a stdout nobody drains must
    // not hang the deadline it reports, so it waits at most a second.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match LAST_LINE.try_lock() {
            Ok(last) => return last.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner().clone(),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return "(a line was still being written)".into();
            }
        }
    }
}

/// Child processes (nats-server, agent processes) to kill if we exit without unwinding.
static CHILDREN: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Remembers a child process to kill on an early exit.
pub fn track_child(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.insert(pid);
    }
}

/// Forgets a child that was stopped.
pub fn untrack_child(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.remove(&pid);
    }
}

fn kill_tracked_children() {
    if let Ok(children) = CHILDREN.lock() {
        for &pid in children.iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub mod agent_cli;
pub mod authority;
pub mod cli;
pub mod config;
pub mod creds_cli;
pub mod demo;
pub mod demo_compile;
#[cfg(feature = "inference")]
pub mod demo_inference;
pub mod demo_tool;
pub mod flake_cli;
pub mod inference_cli;
pub mod kb_cli;
pub mod metrics_http;
pub mod nats_server;
pub mod overview;
pub mod status;
pub mod task_watch;
pub mod testkit;
pub mod vote_cli;

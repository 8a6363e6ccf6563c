//! # murmur-tools
//!
//! The `murmur` command line ([`cli`]) and its demos. The nats-server processes it starts
//! and the operator's keys it mints credentials with come from `murmur-testkit`.

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
    murmur_testkit::children::kill_all();
    std::process::exit(code)
}

/// The last line [`emit`] wrote: what a command that overran its deadline was doing.
static LAST_LINE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The last line of command output written so far (empty before the first), for a
/// process about to exit: no line is written after it (later writers wait for good), so
/// the line it names is the last one anybody reads, even with other threads still running.
pub fn final_output_line() -> String {
    // A write in progress holds the lock; a reader stuck behind a stdout nobody drains must
    // not hang the deadline it reports, so it waits at most a second.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match LAST_LINE.try_lock() {
            Ok(last) => {
                let line = last.clone();
                std::mem::forget(last);
                return line;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let last = p.into_inner();
                let line = last.clone();
                std::mem::forget(last);
                return line;
            }
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return "(a line was still being written)".into();
            }
        }
    }
}

pub mod archive;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod metrics_http;
pub mod overview;
pub mod settings;
pub mod signals;

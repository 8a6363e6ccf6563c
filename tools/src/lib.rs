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

/// Writes one line to stdout; exits 0 when stdout is a closed pipe.
pub fn emit(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

pub mod agent_cli;
pub mod cli;
pub mod config;
pub mod demo;
pub mod demo_compile;
pub mod flake_cli;
pub mod metrics_http;
pub mod nats_server;
pub mod overview;
pub mod status;
pub mod testkit;

//! The `murmur` binary.

use murmur_tools::cli::{Cli, error_line, init_tracing, run};

/// mimalloc rather than the system allocator: every event sealed, encoded, decoded and
/// folded allocates, and those paths run 15–20% faster on it (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_args();
    init_tracing(&cli.global.log_level);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `murmur` binary.

use murmur_tools::cli::{Cli, init_tracing, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_args();
    init_tracing(&cli.global.log_level);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

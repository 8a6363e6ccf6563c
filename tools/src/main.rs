//! The `murmur` binary.

use murmur_tools::cli::{Cli, error_line, init_tracing, run};

/// mimalloc rather than the system allocator: every event sealed, encoded, decoded and
/// folded allocates, and those paths run 15–20% faster on it (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack for each runtime thread. An unoptimised build keeps every awaited future of a long
/// async fn in its own stack slot while polling it: `murmur demo`'s task, which awaits each
/// step in turn, took 0.9 MiB in one frame and overflowed tokio's default 2 MiB in the
/// knowledge step. Only address space is reserved; what is touched is what runs.
const THREAD_STACK_BYTES: usize = 8 << 20;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let cli = Cli::parse_args();
        init_tracing(&cli.global.log_level);
        match run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", error_line(&e));
                std::process::ExitCode::FAILURE
            }
        }
    })
}

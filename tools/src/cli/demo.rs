//! `murmur demo`: the sample workflows ([`crate::demo`]) under a deadline.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use crate::settings::Settings;

/// `murmur demo ...`
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// The distributed-compilation pipeline: a planner, two compilers and an executor as
    /// separate processes build and test two sample workspaces with the machine's cargo.
    Compile,
    /// The assistant: an inference agent (SmolLM2-135M when installed) and a tool agent as
    /// processes answer two `murmur ask` questions, one needing a file.
    #[cfg(feature = "inference")]
    Assistant,
}

/// Runs a demo; past `deadline_s` or on a second ctrl-c, kills what it started and exits 1.
pub async fn run(settings: Settings, which: Option<DemoCommand>, deadline_s: u64) -> Result<()> {
    let deadline = Duration::from_secs(deadline_s);
    let signals = crate::signals::shutdown_signals()?;
    // The demo runs as a task of its own, so the deadline and the signals are seen even if a
    // step blocks its thread.
    let demo = tokio::spawn(async move {
        match which {
            None => crate::demo::run(&settings).await,
            Some(DemoCommand::Compile) => crate::demo::compile::run(&settings).await,
            #[cfg(feature = "inference")]
            Some(DemoCommand::Assistant) => crate::demo::assistant::run(&settings).await,
        }
    });
    let why = tokio::select! {
        done = demo => return done?,
        _ = tokio::time::sleep(deadline) => format!("did not finish within {deadline:?}"),
        _ = signals.nth(1) => "was interrupted".to_string(),
    };
    // A stuck step may never yield, and the runtime waits for its threads on the way out:
    // kill the nats-server and agent processes the demo started, then exit.
    eprintln!(
        "error: the demo {why}; the last line it printed: {:?}",
        crate::final_output_line()
    );
    crate::exit_killing_children(1)
}

//! `murmur tallier`: decides proposals from the votes in the log until ctrl-c.

use std::time::Duration;

use anyhow::Result;

use crate::settings::Settings;

/// Runs a tallier for the realm until ctrl-c.
pub async fn run(settings: &Settings) -> Result<()> {
    let log = settings.open_log("murmur-tallier").await?;
    eprintln!(
        "tallier running for realm {} (ctrl-c to stop)",
        settings.realm
    );
    let n = murmur_coordination::tallier::run_tallier(
        log,
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        Duration::from_millis(100),
        async {
            tokio::signal::ctrl_c().await.ok();
        },
    )
    .await?;
    eprintln!("tallier stopped after writing {n} events");
    Ok(())
}

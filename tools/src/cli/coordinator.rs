//! `murmur coordinator`: assigns tasks, expires leases, retries and dead-letters until
//! ctrl-c.

use anyhow::Result;

use crate::settings::Settings;

/// `murmur coordinator`: runs until ctrl-c.
pub async fn run(settings: &Settings) -> Result<()> {
    let log = settings.open_log("murmur-coordinator").await?;
    eprintln!(
        "coordinator running for realm {} (ctrl-c to stop)",
        settings.realm
    );
    let written = murmur_coordination::coordinator::run_coordinator(
        log,
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        murmur_coordination::coordinator::CoordinatorConfig {
            ..Default::default()
        },
        async {
            tokio::signal::ctrl_c().await.ok();
        },
    )
    .await?;
    eprintln!("coordinator stopped after {written} decisions");
    Ok(())
}

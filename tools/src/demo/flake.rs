//! The demo's flake step: the example shop's deployment graph generated into a Nix flake.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// Validates the example deployment and generates its flake into a temp dir; parses every
/// file with `nix-instantiate --parse` when Nix is installed.
pub(super) async fn flake_step() -> Result<()> {
    const SHOP: &str = include_str!("../../../examples/shop.toml");
    let spec = murmur_nix::DeploymentSpec::parse(SHOP, murmur_nix::Format::Toml)?;
    let flake = murmur_nix::build(spec)?;
    let dir = tempfile::tempdir()?;
    for (rel, text) in &flake.files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().context("file has a parent")?)?;
        std::fs::write(&path, text)?;
    }
    // Nix is asked with a deadline: a nix that waits (on a store lock, say) must fail the
    // step, not stall the demo.
    let nix = |args: Vec<std::ffi::OsString>| async move {
        let run = tokio::process::Command::new("nix-instantiate")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(60), run).await
    };
    let parsed = match nix(vec!["--version".into()]).await {
        Ok(Ok(_)) => {
            for rel in flake.files.keys() {
                let o = nix(vec!["--parse".into(), dir.path().join(rel).into()])
                    .await
                    .with_context(|| {
                        format!("nix-instantiate --parse {rel}: no answer in 60 s")
                    })??;
                ensure!(
                    o.status.success(),
                    "nix-instantiate refused {rel}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            "each parsed by nix-instantiate"
        }
        Ok(Err(_)) => "nix-instantiate not installed, parse check skipped",
        Err(_) => bail!("nix-instantiate --version did not answer within 60 s"),
    };
    out!(
        "[flake] examples/shop.toml → {} files ({} bytes): {}; {parsed}",
        flake.files.len(),
        flake.files.values().map(String::len).sum::<usize>(),
        flake.files.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

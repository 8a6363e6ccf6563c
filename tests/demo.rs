//! The README's main job: `murmur demo` exits 0 and reports every step.

use anyhow::Result;

#[test]
fn murmur_demo_succeeds() -> Result<()> {
    let bin = murmur_e2e::murmur_binary()?;
    let out = std::process::Command::new(bin)
        .arg("demo")
        .env_remove("NATS_URL")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in 0..=9 {
        assert!(
            stdout.contains(&format!("[{step}]")),
            "step {step} missing:\n{stdout}"
        );
    }
    for expected in [
        "workflow ok",
        "[compile 5] results:",
        "demo compile ok",
        "[vote] 3 policy voters + tallier",
        "[flake] examples/shop.toml → 6 files",
        "demo ok",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    Ok(())
}

//! `murmur identity`: this participant's public key.

use anyhow::Result;

use crate::settings::Settings;

/// Prints the public key (with `--json`, also the identity file).
pub fn run(settings: &Settings) -> Result<()> {
    let identity = settings.identity()?;
    if settings.json {
        out!(
            "{}",
            serde_json::json!({
                "public_key": identity.public_key(),
                "identity_file": settings.identity_file,
            })
        );
    } else {
        out!("{}", identity.public_key());
    }
    Ok(())
}

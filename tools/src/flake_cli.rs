//! `murmur flake generate|check|graph`: deployment graph → Nix flake (see `murmur-nix`).

use std::path::Path;

use anyhow::{Context, Result};
use murmur_nix::{Deployment, DeploymentSpec, Format, NixError};

/// Reads and validates a deployment file, reporting every problem.
fn load(path: &Path) -> Result<Deployment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = DeploymentSpec::parse(&text, Format::from_path(path))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Deployment::new(spec).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), NixError::from(e)))
}

/// `murmur flake check GRAPH`.
pub fn check(path: &Path) -> Result<()> {
    let d = load(path)?;
    out!(
        "{}: ok ({} hosts, {} nodes, {} edges)",
        path.display(),
        d.spec.hosts.len(),
        d.spec.nodes.len(),
        d.spec.edges.len()
    );
    Ok(())
}

/// `murmur flake generate GRAPH -o DIR`: writes the flake, replacing generated files.
pub fn generate(path: &Path, out_dir: &Path) -> Result<()> {
    let flake = murmur_nix::generate(&load(path)?);
    for (rel, text) in &flake.files {
        let file = out_dir.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        out!("wrote {}", file.display());
    }
    Ok(())
}

/// `murmur flake graph GRAPH --dot`.
pub fn graph(path: &Path) -> Result<()> {
    out!("{}", load(path)?.to_dot());
    Ok(())
}

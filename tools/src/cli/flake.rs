//! `murmur flake`: a deployment graph validated and turned into a Nix flake.

use std::path::Path;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use murmur_nix::{Deployment, DeploymentSpec, Format, NixError};

/// `murmur flake ...`
#[derive(Debug, Subcommand)]
pub enum FlakeCommand {
    /// Validate the graph and write flake.nix, hosts/*.nix and modules/ into DIR.
    Generate {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
        /// Output directory.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Validate only; prints every problem.
    Check {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
    },
    /// Print the deployment as a graph.
    Graph {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
        /// Graphviz DOT (the only format so far).
        #[arg(long, default_value_t = true)]
        dot: bool,
    },
}

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

/// Runs `murmur flake ...`.
pub fn run(command: FlakeCommand) -> Result<()> {
    match command {
        FlakeCommand::Generate { graph, out } => generate(&graph, &out),
        FlakeCommand::Check { graph } => check(&graph),
        FlakeCommand::Graph { graph, .. } => self::graph(&graph),
    }
}

//! # murmur-nix
//!
//! A deployment graph — services, murmur agents, PostgreSQL, NATS, nginx load balancers and
//! storage, placed on hosts and joined by typed edges — validated and turned into a
//! deterministic Nix flake. Everything here is pure: no I/O, no clock.
//!
//! - [`model`]: the graph as written (JSON, TOML) or built in Rust; parse errors carry line
//!   and column.
//! - [`validate`]: every problem at once, each naming its nodes: DependsOn cycles (with the
//!   path), dangling references, wrong edge endpoints, port clashes on a host, unknown
//!   databases, undeclared murmur subjects, invalid names. Also the Graphviz view.
//! - [`expr`]: a Nix value tree rendered with sorted attributes and correct escaping.
//! - [`mod@generate`]: `flake.nix`, `hosts/<host>.nix`, `modules/murmur-agent.nix`.
//!
//! ```
//! use murmur_nix::DeploymentSpec;
//! use murmur_nix::model::{EdgeKind, NodeKind, ServiceSpec};
//! let spec = DeploymentSpec::new("demo")
//!     .host("web-1", "10.0.0.1")
//!     .node("api", "web-1", NodeKind::Service(ServiceSpec {
//!         command: "/bin/api".into(),
//!         port: Some(8080),
//!         ..Default::default()
//!     }));
//! let flake = murmur_nix::build(spec).unwrap();
//! assert!(flake.files["hosts/web-1.nix"].contains("systemd"));
//! ```

#![deny(missing_docs)]

pub mod expr;
pub mod generate;
pub mod model;
pub mod validate;

pub use generate::{Flake, generate};
pub use model::{DeploymentSpec, Format};
pub use validate::{Deployment, Problem, ValidationErrors};

/// Why a deployment could not be read or turned into a flake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NixError {
    /// The file is not valid JSON/TOML for a deployment.
    #[error("{format} parse error at {line}:{column}: {message}")]
    Parse {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The graph is invalid (all problems).
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Validates and generates in one step.
pub fn build(spec: DeploymentSpec) -> Result<Flake, NixError> {
    Ok(generate(&Deployment::new(spec)?))
}

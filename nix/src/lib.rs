//! # murmur-nix
//!
//! Deployment graph → validated, deterministic Nix flake. Its work is tracked in issue 6;
//! today the crate only fixes its place in the workspace.

//! Source trees and build plans (pure, no I/O except the directory helpers at the end).
//!
//! A submitted workspace travels as a deterministic tar archive in the artifact store. The
//! planner reads its manifests from the unpacked [`SourceTree`] and turns them into a task
//! graph: one `build-<package>` task per member (compiler), depending on the builds of the
//! members it uses by `path`, and one `test-<package>` task per member (executor) depending on
//! its build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use murmur_coordination::graph::{FailurePolicy, GraphSpec, GraphTask};

use crate::artifacts::ArtifactRef;

/// Capability of planner agents.
pub const PLANNER: &str = "planner";
/// Capability of compiler agents.
pub const COMPILER: &str = "compiler.rust";
/// Capability of executor agents.
pub const EXECUTOR: &str = "executor.test";

/// Files by relative path (`/`-separated), in sorted order.
pub type SourceTree = BTreeMap<String, Vec<u8>>;

/// Why a workspace could not be planned or an archive read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A manifest is missing.
    #[error("{0} is missing")]
    MissingManifest(String),
    /// A manifest is not valid TOML or lacks `[package] name`.
    #[error("{path}: {reason}")]
    Manifest {
        /// The manifest's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A `path` dependency points at a directory that is not a workspace member.
    #[error("{package} depends on path {path:?}, which is not a member of the workspace")]
    PathOutsideWorkspace {
        /// The depending package.
        package: String,
        /// The path as written.
        path: String,
    },
    /// The archive could not be read, or holds an entry outside its root.
    #[error("source archive: {0}")]
    Archive(String),
}

/// One workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Package name.
    pub package: String,
    /// Directory relative to the workspace root (`""` for the root package).
    pub dir: String,
    /// Packages of this workspace it depends on by path (normal, dev and build).
    pub path_deps: BTreeSet<String>,
}

fn manifest(tree: &SourceTree, path: &str) -> Result<toml::Table, PlanError> {
    let bytes = tree
        .get(path)
        .ok_or_else(|| PlanError::MissingManifest(path.to_string()))?;
    let text = std::str::from_utf8(bytes).map_err(|e| PlanError::Manifest {
        path: path.into(),
        reason: e.to_string(),
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| PlanError::Manifest {
            path: path.into(),
            reason: e.to_string(),
        })
}

fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// `a/b/../c` → `a/c`; `None` when it climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Member directories named by `[workspace] members`, with `dir/*` globs expanded against
/// the tree.
fn member_dirs(tree: &SourceTree, patterns: &[String]) -> Vec<String> {
    let mut dirs = BTreeSet::new();
    for pattern in patterns {
        let pattern = pattern.trim_end_matches('/');
        if let Some(parent) = pattern.strip_suffix("/*") {
            for path in tree.keys() {
                if let Some(rest) = path.strip_prefix(&format!("{parent}/"))
                    && let Some((name, "Cargo.toml")) = rest.split_once('/')
                {
                    dirs.insert(format!("{parent}/{name}"));
                }
            }
        } else if let Some(dir) = normalize(pattern) {
            dirs.insert(dir);
        }
    }
    dirs.into_iter().collect()
}

/// The members of the workspace (or the single package) at the root of `tree`.
pub fn members(tree: &SourceTree) -> Result<Vec<Member>, PlanError> {
    let root = manifest(tree, "Cargo.toml")?;
    let mut dirs: Vec<String> = root
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .map(|m| {
            member_dirs(
                tree,
                &m.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_default();
    if root.contains_key("package") {
        dirs.insert(0, String::new());
    }
    let mut packages = BTreeMap::new(); // dir → (package, manifest)
    for dir in &dirs {
        let path = join(dir, "Cargo.toml");
        let m = manifest(tree, &path)?;
        let name = m
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .ok_or_else(|| PlanError::Manifest {
                path: path.clone(),
                reason: "no [package] name".into(),
            })?
            .to_string();
        packages.insert(dir.clone(), (name, m));
    }
    let mut out = Vec::new();
    for (dir, (package, m)) in &packages {
        let mut path_deps = BTreeSet::new();
        for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = m.get(table).and_then(toml::Value::as_table) else {
                continue;
            };
            for spec in deps.values() {
                let Some(path) = spec.get("path").and_then(toml::Value::as_str) else {
                    continue;
                };
                let target = normalize(&join(dir, path));
                match target.as_ref().and_then(|t| packages.get(t)) {
                    Some((dep, _)) => {
                        path_deps.insert(dep.clone());
                    }
                    None => {
                        return Err(PlanError::PathOutsideWorkspace {
                            package: package.clone(),
                            path: path.to_string(),
                        });
                    }
                }
            }
        }
        out.push(Member {
            package: package.clone(),
            dir: dir.clone(),
            path_deps,
        });
    }
    Ok(out)
}

/// A task id fragment from a package name (ids are subject tokens: `[a-z0-9_-]`).
pub fn id_part(package: &str) -> String {
    package
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// What the planner was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Build every member and run its tests.
    #[default]
    BuildAndTest,
    /// Build only.
    Build,
}

/// The task graph for `goal` over `members` of the source at `source`. Build and test
/// failures are not retried (`max_attempts` 1): a compiler error or a failing test is a
/// result, not a fault; descendants of a failed build are cancelled.
pub fn plan(members: &[Member], source: &ArtifactRef, goal: Goal) -> GraphSpec {
    let mut tasks = Vec::new();
    for m in members {
        tasks.push(GraphTask {
            id: format!("build-{}", id_part(&m.package)),
            capability: COMPILER.into(),
            input: serde_json::json!({ "source": source, "package": m.package }),
            depends_on: m
                .path_deps
                .iter()
                .map(|d| format!("build-{}", id_part(d)))
                .collect(),
            max_attempts: Some(1),
            lease_ms: Some(600_000),
        });
        if goal == Goal::BuildAndTest {
            tasks.push(GraphTask {
                id: format!("test-{}", id_part(&m.package)),
                capability: EXECUTOR.into(),
                input: serde_json::json!({ "package": m.package }),
                depends_on: vec![format!("build-{}", id_part(&m.package))],
                max_attempts: Some(1),
                lease_ms: Some(300_000),
            });
        }
    }
    GraphSpec {
        tasks,
        on_failure: FailurePolicy::CancelDescendants,
    }
}

/// Packs a tree into a tar archive: sorted entries, zero mtimes, fixed owners and modes,
/// so the same tree always gives the same bytes (and the same artifact hash).
pub fn pack(tree: &SourceTree) -> Result<Vec<u8>, PlanError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .map_err(|e| PlanError::Archive(format!("{path}: {e}")))?;
    }
    builder
        .into_inner()
        .map_err(|e| PlanError::Archive(e.to_string()))
}

/// Unpacks an archive made by [`pack`] (or any tar of regular files); refuses entries that
/// are absolute or climb out of the root.
pub fn unpack(archive: &[u8]) -> Result<SourceTree, PlanError> {
    let mut tree = SourceTree::new();
    let mut reader = tar::Archive::new(archive);
    let entries = reader
        .entries()
        .map_err(|e| PlanError::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| PlanError::Archive(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| PlanError::Archive(e.to_string()))?
            .into_owned();
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(PlanError::Archive(format!(
                "entry {} leaves the archive root",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|e| PlanError::Archive(e.to_string()))?;
        let key = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/");
        tree.insert(key, bytes);
    }
    Ok(tree)
}

/// Reads a directory into a tree, skipping `target/` and `.git/`.
pub fn read_dir_tree(root: &Path) -> std::io::Result<SourceTree> {
    fn walk(root: &Path, dir: &Path, tree: &mut SourceTree) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                if name != "target" && name != ".git" {
                    walk(root, &path, tree)?;
                }
            } else if let Ok(rel) = path.strip_prefix(root) {
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                tree.insert(key, std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut tree = SourceTree::new();
    walk(root, root, &mut tree)?;
    Ok(tree)
}

/// Writes a tree under `dir`.
pub fn write_tree(tree: &SourceTree, dir: &Path) -> std::io::Result<()> {
    for (rel, bytes) in tree {
        let path: PathBuf = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> SourceTree {
        files
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    fn source() -> ArtifactRef {
        ArtifactRef {
            sha256: "ab".repeat(32),
            size: 10,
            label: "ws.tar".into(),
        }
    }

    #[test]
    fn workspace_members_and_path_dependencies_become_a_graph() {
        let t = tree(&[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\", \"app\"]\n",
            ),
            (
                "app/Cargo.toml",
                "[package]\nname = \"app\"\n[dependencies]\nmathlib = { path = \"../crates/mathlib\" }\n",
            ),
            (
                "crates/mathlib/Cargo.toml",
                "[package]\nname = \"mathlib\"\n[dev-dependencies]\nfixtures = { path = \"../fixtures\" }\n",
            ),
            (
                "crates/fixtures/Cargo.toml",
                "[package]\nname = \"fixtures\"\n",
            ),
            ("crates/README.md", "not a member"),
        ]);
        let m = members(&t).expect("ok");
        let names: Vec<_> = m.iter().map(|m| m.package.as_str()).collect();
        assert_eq!(names, ["app", "fixtures", "mathlib"]);
        assert_eq!(m[0].path_deps, BTreeSet::from(["mathlib".to_string()]));
        assert_eq!(m[2].path_deps, BTreeSet::from(["fixtures".to_string()]));

        let spec = plan(&m, &source(), Goal::BuildAndTest);
        let graph = murmur_coordination::graph::TaskGraph::new(&spec).expect("ok");
        let order = graph.ready(&BTreeSet::new());
        assert_eq!(order, ["build-fixtures"], "only the leaf builds first");
        let build_app = spec.tasks.iter().find(|t| t.id == "build-app").expect("ok");
        assert_eq!(build_app.depends_on, ["build-mathlib"]);
        assert_eq!(build_app.capability, COMPILER);
        let test_app = spec.tasks.iter().find(|t| t.id == "test-app").expect("ok");
        assert_eq!(test_app.depends_on, ["build-app"]);
        assert_eq!(test_app.capability, EXECUTOR);
        assert_eq!(spec.tasks.len(), 6);
        assert_eq!(plan(&m, &source(), Goal::Build).tasks.len(), 3);
    }

    #[test]
    fn a_single_package_is_its_own_member() {
        let t = tree(&[("Cargo.toml", "[package]\nname = \"Solo_Crate\"\n")]);
        let m = members(&t).expect("ok");
        assert_eq!(m.len(), 1);
        assert_eq!(id_part(&m[0].package), "solo_crate");
    }

    #[test]
    fn bad_manifests_are_named() {
        assert_eq!(
            members(&SourceTree::new()),
            Err(PlanError::MissingManifest("Cargo.toml".into()))
        );
        let t = tree(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
            ("a/Cargo.toml", "[package\nname="),
        ]);
        assert!(
            matches!(members(&t), Err(PlanError::Manifest { path, .. }) if path == "a/Cargo.toml")
        );
        let t = tree(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
            (
                "a/Cargo.toml",
                "[package]\nname = \"a\"\n[dependencies]\nx = { path = \"../../x\" }\n",
            ),
        ]);
        assert!(
            matches!(members(&t), Err(PlanError::PathOutsideWorkspace { package, .. }) if package == "a")
        );
    }

    #[test]
    fn a_dependency_cycle_between_members_is_refused_with_its_path() {
        let t = tree(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\", \"b\"]\n"),
            (
                "a/Cargo.toml",
                "[package]\nname = \"a\"\n[dependencies]\nb = { path = \"../b\" }\n",
            ),
            (
                "b/Cargo.toml",
                "[package]\nname = \"b\"\n[dependencies]\na = { path = \"../a\" }\n",
            ),
        ]);
        let spec = plan(&members(&t).expect("ok"), &source(), Goal::Build);
        let err = murmur_coordination::graph::TaskGraph::new(&spec).expect_err("refused");
        assert!(
            err.to_string().contains("build-a → build-b → build-a"),
            "{err}"
        );
    }

    #[test]
    fn archives_are_deterministic_and_round_trip() {
        let t = tree(&[("b/x.rs", "fn x() {}"), ("a.txt", "hello")]);
        let one = pack(&t).expect("ok");
        assert_eq!(one, pack(&t.clone()).expect("ok"));
        assert_eq!(unpack(&one).expect("ok"), t);
    }

    #[test]
    fn archive_entries_outside_the_root_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`, so write the name bytes directly, as a hostile archive would.
        header.as_old_mut().name[..10].copy_from_slice(b"../evil.rs");
        header.set_cksum();
        builder.append(&header, &b"x"[..]).expect("ok");
        let bytes = builder.into_inner().expect("ok");
        assert!(matches!(unpack(&bytes), Err(PlanError::Archive(_))));
        // Garbage is an error or an empty tree, never a panic.
        let _ = unpack(b"not a tar at all, just some bytes");
    }
}

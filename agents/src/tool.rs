//! The tool agent kind: tools other agents call through tasks. [`FsTool`] is `tool.fs`, file
//! operations confined to one directory (list, stat, read, search and, when allowed, write), so an
//! agent that plans or generates can look at and change a workspace it cannot reach itself.
//!
//! Confinement: a path is relative to the root; absolute paths and `..` are refused before
//! anything is touched, and the path as the file system resolves it (symbolic links
//! followed) must still lie under the root, so a link pointing outside does not lead out.
//! Listings are sorted by name: the same directory gives the same output.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::worker::{Handler, TaskContext};

/// The capability of [`FsTool`].
pub const FS_CAPABILITY: &str = "tool.fs";

/// The most a `read` returns unless it asks for less (1 MiB); larger outputs go to the
/// artifact store like any large task output.
pub const DEFAULT_READ_LIMIT: u64 = 1 << 20;

/// What a `tool.fs` task asks (its input), by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FsRequest {
    /// The entries of a directory.
    List {
        /// Relative to the root; `.` is the root.
        #[serde(default = "root_path")]
        path: String,
    },
    /// What a path is: kind, size, modification time.
    Stat {
        /// Relative to the root.
        path: String,
    },
    /// A file's text (UTF-8).
    Read {
        /// Relative to the root.
        path: String,
        /// Refuse files larger than this (at most [`DEFAULT_READ_LIMIT`] when absent).
        #[serde(default)]
        max_bytes: Option<u64>,
    },
    /// The lines holding `text` in the files under a directory (or in one file), in path
    /// order. Symbolic links are not followed, `.git` is skipped, and so are files that are
    /// not UTF-8 text or are over [`DEFAULT_READ_LIMIT`].
    Search {
        /// Relative to the root; `.` is the root.
        #[serde(default = "root_path")]
        path: String,
        /// The text to find (as is: no pattern syntax).
        text: String,
        /// Stop after this many matches (default 100, at most [`MAX_SEARCH_MATCHES`]).
        #[serde(default)]
        max_matches: Option<usize>,
    },
    /// Writes a file's text, creating its directories (only on a writable tool).
    Write {
        /// Relative to the root.
        path: String,
        /// The text.
        content: String,
    },
}

/// The most matches a `search` returns.
pub const MAX_SEARCH_MATCHES: usize = 1000;

/// The longest line a `search` match shows, in characters.
const SHOWN_LINE: usize = 300;

fn root_path() -> String {
    ".".into()
}

/// Why a `tool.fs` request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The root is no directory.
    #[error("the tool's root {root} is not a directory: {reason}")]
    Root {
        /// The root given.
        root: PathBuf,
        /// Why.
        reason: String,
    },
    /// The path would lead outside the root.
    #[error("{path:?} is outside the tool's root")]
    OutsideRoot {
        /// The path asked for.
        path: String,
    },
    /// Nothing at the path.
    #[error("{path:?} does not exist")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A request that cannot be run as given.
    #[error("{0}")]
    BadRequest(String),
    /// A write on a read-only tool.
    #[error("this tool is read-only (its agent runs without --writable)")]
    ReadOnly,
    /// A file over the read limit.
    #[error("{path:?} has {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The path asked for.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file that is not UTF-8 text.
    #[error("{path:?} is not UTF-8 text ({size} bytes)")]
    NotText {
        /// The path asked for.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Another I/O failure.
    #[error("{path:?}: {source}")]
    Io {
        /// The path asked for.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// Its name.
    pub name: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Size in bytes (of the link itself for a link).
    pub size: u64,
}

/// A line a `search` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchMatch {
    /// The file, relative to the root.
    pub path: String,
    /// The line's number, from 1.
    pub line: u64,
    /// The line (its first 300 characters).
    pub text: String,
}

/// File operations under one root directory.
#[derive(Debug, Clone)]
pub struct FsTool {
    root: PathBuf,
    writable: bool,
}

impl FsTool {
    /// A tool over `root` (which must be a directory); `writable` allows `write`.
    pub fn new(root: &Path, writable: bool) -> Result<Self, ToolError> {
        let refused = |reason: String| ToolError::Root {
            root: root.to_path_buf(),
            reason,
        };
        let root = root.canonicalize().map_err(|e| refused(e.to_string()))?;
        if !root.is_dir() {
            return Err(refused("not a directory".into()));
        }
        Ok(Self { root, writable })
    }

    /// The root, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `write` is allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Runs `request`: the task output as JSON.
    pub fn run(&self, request: &FsRequest) -> Result<serde_json::Value, ToolError> {
        match request {
            FsRequest::List { path } => {
                let dir = self.existing(path)?;
                let io = |source| ToolError::Io {
                    path: path.clone(),
                    source,
                };
                let mut entries = Vec::new();
                for entry in std::fs::read_dir(&dir).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    let meta = entry.path().symlink_metadata().map_err(io)?;
                    entries.push(FsEntry {
                        name: entry.file_name().to_string_lossy().into_owned(),
                        kind: kind_of(&meta).into(),
                        size: meta.len(),
                    });
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(serde_json::json!({ "path": path, "entries": entries }))
            }
            FsRequest::Stat { path } => {
                let at = self.existing(path)?;
                let meta = at.metadata().map_err(|source| ToolError::Io {
                    path: path.clone(),
                    source,
                })?;
                let modified = meta
                    .modified()
                    .ok()
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
                Ok(serde_json::json!({
                    "path": path,
                    "kind": kind_of(&meta),
                    "size": meta.len(),
                    "modified": modified,
                }))
            }
            FsRequest::Read { path, max_bytes } => {
                let at = self.existing(path)?;
                let io = |source| ToolError::Io {
                    path: path.clone(),
                    source,
                };
                let size = at.metadata().map_err(io)?.len();
                let limit = max_bytes
                    .unwrap_or(DEFAULT_READ_LIMIT)
                    .min(DEFAULT_READ_LIMIT);
                if size > limit {
                    return Err(ToolError::TooLarge {
                        path: path.clone(),
                        size,
                        limit,
                    });
                }
                let bytes = std::fs::read(&at).map_err(io)?;
                let sha256 = crate::artifacts::to_hex(&Sha256::digest(&bytes));
                let content = String::from_utf8(bytes).map_err(|_| ToolError::NotText {
                    path: path.clone(),
                    size,
                })?;
                Ok(serde_json::json!({
                    "path": path,
                    "size": size,
                    "lines": content.lines().count(),
                    "sha256": sha256,
                    "content": content,
                }))
            }
            FsRequest::Search {
                path,
                text,
                max_matches,
            } => {
                if text.is_empty() {
                    return Err(ToolError::BadRequest("search needs a text to find".into()));
                }
                let limit = max_matches.unwrap_or(100).clamp(1, MAX_SEARCH_MATCHES);
                let start = self.existing(path)?;
                let mut matches = Vec::new();
                let truncated = self.search(&start, text, limit, &mut matches);
                Ok(serde_json::json!({
                    "path": path,
                    "text": text,
                    "matches": matches,
                    "truncated": truncated,
                }))
            }
            FsRequest::Write { path, content } => {
                if !self.writable {
                    return Err(ToolError::ReadOnly);
                }
                let at = self.writable_path(path)?;
                let io = |source| ToolError::Io {
                    path: path.clone(),
                    source,
                };
                // Written whole, then renamed: a reader never sees half a file.
                let dir = at.parent().unwrap_or(&self.root);
                let mut staged = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
                staged.write_all(content.as_bytes()).map_err(io)?;
                staged.persist(&at).map_err(|e| io(e.error))?;
                Ok(serde_json::json!({
                    "path": path,
                    "size": content.len(),
                    "sha256": crate::artifacts::to_hex(&Sha256::digest(content.as_bytes())),
                }))
            }
        }
    }

    /// Appends the lines holding `text` under `at` to `matches`, walking in name order; true
    /// when it stopped at `limit`. Unreadable entries are skipped: a search reports what it
    /// can read.
    fn search(&self, at: &Path, text: &str, limit: usize, matches: &mut Vec<SearchMatch>) -> bool {
        let Ok(meta) = at.symlink_metadata() else {
            return false;
        };
        if meta.is_symlink() {
            return false;
        }
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(at) else {
                return false;
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_none_or(|n| n != ".git"))
                .collect();
            paths.sort();
            return paths.iter().any(|p| self.search(p, text, limit, matches));
        }
        if meta.len() > DEFAULT_READ_LIMIT {
            return false;
        }
        let Ok(content) = std::fs::read_to_string(at) else {
            return false;
        };
        let relative = at
            .strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (number, line) in content.lines().enumerate() {
            if !line.contains(text) {
                continue;
            }
            if matches.len() == limit {
                return true;
            }
            matches.push(SearchMatch {
                path: relative.clone(),
                line: number as u64 + 1,
                text: line.chars().take(SHOWN_LINE).collect(),
            });
        }
        false
    }

    /// `path` checked lexically: relative, no `..`.
    fn relative(&self, path: &str) -> Result<PathBuf, ToolError> {
        let outside = || ToolError::OutsideRoot { path: path.into() };
        let mut relative = PathBuf::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside());
                }
            }
        }
        Ok(relative)
    }

    /// An existing path under the root, as the file system resolves it.
    fn existing(&self, path: &str) -> Result<PathBuf, ToolError> {
        let joined = self.root.join(self.relative(path)?);
        let resolved = joined
            .canonicalize()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => ToolError::NotFound { path: path.into() },
                _ => ToolError::Io {
                    path: path.into(),
                    source,
                },
            })?;
        if !resolved.starts_with(&self.root) {
            return Err(ToolError::OutsideRoot { path: path.into() });
        }
        Ok(resolved)
    }

    /// Where `path` is written: its directories created under the root, none of them (nor
    /// the file, if it exists) leading outside.
    fn writable_path(&self, path: &str) -> Result<PathBuf, ToolError> {
        let relative = self.relative(path)?;
        let name = relative
            .file_name()
            .ok_or_else(|| ToolError::OutsideRoot { path: path.into() })?
            .to_owned();
        let parent = relative.parent().unwrap_or(Path::new(""));
        // One level at a time, each checked before the next is made under it: a link on the
        // way must not get a directory made outside the root.
        let mut dir = self.root.clone();
        for part in parent.components() {
            let next = dir.join(part);
            if !next.exists() {
                std::fs::create_dir(&next).map_err(|source| ToolError::Io {
                    path: path.into(),
                    source,
                })?;
            }
            dir = next.canonicalize().map_err(|source| ToolError::Io {
                path: path.into(),
                source,
            })?;
            if !dir.starts_with(&self.root) {
                return Err(ToolError::OutsideRoot { path: path.into() });
            }
        }
        let at = dir.join(name);
        if at.exists() {
            // An existing file or link must resolve under the root too.
            self.existing(path)?;
        }
        Ok(at)
    }
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "dir"
    } else {
        "file"
    }
}

/// The worker handler of a `tool.fs` agent: each attempt decodes its input as an
/// [`FsRequest`] and runs it on a blocking thread; a refused or failed request fails the
/// attempt with the reason.
pub fn fs_handler(tool: Arc<FsTool>) -> Handler {
    crate::worker::handler(move |ctx: TaskContext| {
        let tool = tool.clone();
        async move {
            let request: FsRequest = serde_json::from_value(ctx.input).map_err(|e| {
                format!(
                    "a tool.fs task takes {{\"op\": \"list\"|\"stat\"|\"read\"|\"search\"|\"write\", \"path\": ..., \"content\" (write), \"max_bytes\" (read), \"text\", \"max_matches\" (search)}}: {e}"
                )
            })?;
            tokio::task::spawn_blocking(move || tool.run(&request))
                .await
                .map_err(|e| format!("the tool's thread failed: {e}"))?
                .map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"calc\"\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("src/lib.rs"), "pub fn one() -> u8 { 1 }\n").expect("write");
        dir
    }

    fn run(tool: &FsTool, request: serde_json::Value) -> Result<serde_json::Value, ToolError> {
        tool.run(&serde_json::from_value(request).expect("a request"))
    }

    #[test]
    fn lists_sorted_stats_and_reads_under_the_root() {
        let dir = workspace();
        let tool = FsTool::new(dir.path(), false).expect("a root");
        let listed = run(&tool, serde_json::json!({"op": "list"})).expect("lists");
        let names: Vec<&str> = listed["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Cargo.toml", "src"]);
        assert_eq!(listed["entries"][1]["kind"], "dir");
        let read = run(
            &tool,
            serde_json::json!({"op": "read", "path": "src/lib.rs"}),
        )
        .expect("reads");
        assert_eq!(read["content"], "pub fn one() -> u8 { 1 }\n");
        assert_eq!(
            read["sha256"],
            crate::artifacts::to_hex(&Sha256::digest(b"pub fn one() -> u8 { 1 }\n"))
        );
        let stat = run(
            &tool,
            serde_json::json!({"op": "stat", "path": "./src/../Cargo.toml"}),
        );
        assert!(
            matches!(stat, Err(ToolError::OutsideRoot { .. })),
            "{stat:?}"
        );
        let stat = run(
            &tool,
            serde_json::json!({"op": "stat", "path": "Cargo.toml"}),
        )
        .expect("stats");
        assert_eq!(
            (stat["kind"].as_str(), stat["size"].as_u64()),
            (Some("file"), Some(24))
        );
        assert!(matches!(
            run(
                &tool,
                serde_json::json!({"op": "read", "path": "missing.rs"})
            ),
            Err(ToolError::NotFound { .. })
        ));
        assert!(matches!(
            run(
                &tool,
                serde_json::json!({"op": "read", "path": "Cargo.toml", "max_bytes": 4})
            ),
            Err(ToolError::TooLarge {
                size: 24,
                limit: 4,
                ..
            })
        ));
    }

    #[test]
    fn nothing_outside_the_root_is_reached() {
        let dir = workspace();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s3cret").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("secret"))
            .expect("link");
        let tool = FsTool::new(dir.path(), true).expect("a root");
        for request in [
            serde_json::json!({"op": "read", "path": "../secret"}),
            serde_json::json!({"op": "read", "path": outside.path().join("secret")}),
            serde_json::json!({"op": "read", "path": "escape/secret"}),
            serde_json::json!({"op": "read", "path": "secret"}),
            serde_json::json!({"op": "list", "path": "escape"}),
            serde_json::json!({"op": "write", "path": "escape/planted", "content": "x"}),
            serde_json::json!({"op": "write", "path": "escape/made/planted", "content": "x"}),
            serde_json::json!({"op": "write", "path": "secret", "content": "overwritten"}),
            serde_json::json!({"op": "write", "path": "../planted", "content": "x"}),
        ] {
            let refused = run(&tool, request.clone());
            assert!(
                matches!(refused, Err(ToolError::OutsideRoot { .. })),
                "{request}: {refused:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).expect("read"),
            "s3cret"
        );
        assert!(!outside.path().join("planted").exists());
        assert!(
            !outside.path().join("made").exists(),
            "no directory is made outside on the way"
        );
    }

    #[test]
    fn searches_files_in_path_order_without_following_links_out() {
        let dir = workspace();
        std::fs::write(
            dir.path().join("src/main.rs"),
            "fn main() {\n    calc::one();\n}\n",
        )
        .expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("leak.rs"), "fn one() {}\n").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).expect("link");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join(".git/HEAD"), "one\n").expect("write");
        let tool = FsTool::new(dir.path(), false).expect("a root");
        let found =
            run(&tool, serde_json::json!({"op": "search", "text": "one"})).expect("searches");
        let matches: Vec<SearchMatch> =
            serde_json::from_value(found["matches"].clone()).expect("matches");
        assert_eq!(
            matches,
            [
                SearchMatch {
                    path: "src/lib.rs".into(),
                    line: 1,
                    text: "pub fn one() -> u8 { 1 }".into()
                },
                SearchMatch {
                    path: "src/main.rs".into(),
                    line: 2,
                    text: "    calc::one();".into()
                },
            ]
        );
        assert_eq!(found["truncated"], false);
        let first = run(
            &tool,
            serde_json::json!({"op": "search", "text": "one", "max_matches": 1}),
        )
        .expect("searches");
        assert_eq!(first["matches"].as_array().map(Vec::len), Some(1));
        assert_eq!(first["truncated"], true);
        assert!(matches!(
            run(&tool, serde_json::json!({"op": "search", "text": ""})),
            Err(ToolError::BadRequest(_))
        ));
        assert!(matches!(
            run(
                &tool,
                serde_json::json!({"op": "search", "path": "linked", "text": "one"})
            ),
            Err(ToolError::OutsideRoot { .. })
        ));
    }

    #[test]
    fn writes_only_when_writable_and_whole() {
        let dir = workspace();
        let read_only = FsTool::new(dir.path(), false).expect("a root");
        let write = serde_json::json!({"op": "write", "path": "notes/plan.md", "content": "build, then test\n"});
        assert!(matches!(
            run(&read_only, write.clone()),
            Err(ToolError::ReadOnly)
        ));
        assert!(!dir.path().join("notes").exists());
        let writable = FsTool::new(dir.path(), true).expect("a root");
        let written = run(&writable, write).expect("writes");
        assert_eq!(written["size"], 17);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes/plan.md")).expect("read"),
            "build, then test\n"
        );
        let malformed: Result<FsRequest, _> =
            serde_json::from_value(serde_json::json!({"op": "delete", "path": "src"}));
        assert!(malformed.is_err());
        assert!(FsTool::new(&dir.path().join("Cargo.toml"), false).is_err());
    }
}

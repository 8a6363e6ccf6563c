//! The workspace's shape, read from its sources: a name a crate's root re-exports has one
//! path in use, the root's (also in the crates' own doc examples), so readers and search
//! find one spelling of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library crates whose roots re-export names, with their source folders.
const CRATES: [(&str, &str); 6] = [
    ("murmur_subjects", "subjects/src"),
    ("murmur_protocol", "subjects/protocol/src"),
    ("murmur_knowledge", "knowledge/src"),
    ("murmur_nix", "nix/src"),
    ("murmur_agents", "agents/src"),
    ("murmur_testkit", "tools/testkit/src"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools/ has a parent")
        .to_path_buf()
}

/// `(module, name)` for each `pub use module::{Name, ...};` (or `pub use crate::module::…`)
/// at the top of `lib`; re-exports of another crate's modules are not names of this one.
fn root_exports(lib: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut statement = String::new();
    for line in lib.lines() {
        if statement.is_empty() && !line.starts_with("pub use ") {
            continue;
        }
        statement.push_str(line.trim());
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let path = statement
            .trim_start_matches("pub use ")
            .trim_start_matches("crate::")
            .trim_end_matches(';')
            .to_string();
        statement.clear();
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        if module.starts_with("murmur_") || names.contains("::") {
            continue;
        }
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim();
            if !name.is_empty() && name != "self" {
                out.push((module.to_string(), name.to_string()));
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `text` names `name` through `prefix` (`murmur_x::module::`): directly, or in a
/// `prefix{…}` group of one line.
fn names_through(text: &str, prefix: &str, name: &str) -> bool {
    text.match_indices(prefix).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(is_ident) {
            return false;
        }
        let rest = &text[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            return group.split(',').any(|item| item.trim() == name);
        }
        rest.strip_prefix(name)
            .is_some_and(|after| !after.starts_with(is_ident))
    })
}

/// The doc-comment lines of `text`, where a crate shows users its paths.
fn doc_lines(text: &str) -> String {
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("///") || l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn a_name_a_crate_root_re_exports_is_used_by_the_roots_path_only() {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 100, "found {} Rust files", files.len());
    let mut found = BTreeSet::new();
    let mut exported = 0;
    for (krate, src) in CRATES {
        let lib = std::fs::read_to_string(root.join(src).join("lib.rs")).expect("lib.rs");
        let names = root_exports(&lib);
        assert!(!names.is_empty(), "{krate} re-exports nothing at its root");
        exported += names.len();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("readable");
            // Inside the crate its own code says `crate::`; its doc examples are read by
            // users, so they are held to the root path too.
            let text = if file.starts_with(root.join(src)) {
                doc_lines(&text)
            } else {
                text
            };
            for (module, name) in &names {
                if names_through(&text, &format!("{krate}::{module}::"), name) {
                    found.insert(format!(
                        "{}: {krate}::{module}::{name} (use {krate}::{name})",
                        file.strip_prefix(&root).unwrap_or(file).display()
                    ));
                }
            }
        }
    }
    assert!(exported > 30, "{exported} root re-exports found");
    assert!(
        found.is_empty(),
        "two paths in use:\n{}",
        found.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_path_check_sees_a_second_path() {
    let exports = root_exports(
        "pub use log::{EventLog, LogError};\npub use crate::server::ClusterOptions;\npub use murmur_protocol::{catalog, codec};\n",
    );
    assert_eq!(
        exports,
        [
            ("log".to_string(), "EventLog".to_string()),
            ("log".to_string(), "LogError".to_string()),
            ("server".to_string(), "ClusterOptions".to_string()),
        ]
    );
    // Built, so that this file does not hold the paths it checks for.
    let prefix = ["murmur_subjects", "log", ""].join("::");
    let seen = |text: &str| names_through(&text.replace("P::", &prefix), &prefix, "EventLog");
    assert!(seen("use P::EventLog;"));
    assert!(seen("let log: P::EventLog = open();"));
    assert!(seen("use P::{Expected, EventLog};"));
    assert!(!seen("use P::EventLogOptions;"));
    assert!(!seen("use P::{Expected};"));
    assert!(!seen("use other_P::EventLog;"));
    assert!(!names_through(
        "use murmur_subjects::EventLog;",
        &prefix,
        "EventLog"
    ));
}

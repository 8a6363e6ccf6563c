//! The pure crates stay pure: the protocol, the Nix generator and knowledge's core (without
//! its default `nats` feature) build without a NATS client or an async runtime. Asked of
//! cargo's own dependency tree, so a dependency added by mistake fails here.

use std::process::Command;

/// The normal (non-dev, non-build) dependencies of `package` with `extra` cargo flags.
fn normal_dependencies(package: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "-p", package,
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn pure_crates_build_without_async_nats_or_tokio() {
    for (package, extra) in [
        ("murmur-protocol", &[][..]),
        ("murmur-nix", &[][..]),
        ("murmur-knowledge", &["--no-default-features"][..]),
    ] {
        let tree = normal_dependencies(package, extra);
        assert!(tree.contains(package), "{package}: {tree}");
        for io in ["async-nats v", "tokio v", "murmur-subjects v"] {
            assert!(
                !tree.lines().any(|l| l.starts_with(io)),
                "{package} {extra:?} depends on {io}…:\n{tree}"
            );
        }
    }
    // The check can fail: the I/O crate has them.
    let io = normal_dependencies("murmur-subjects", &[]);
    assert!(io.lines().any(|l| l.starts_with("async-nats v")), "{io}");
}

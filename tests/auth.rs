//! Connection auth against a real nats-server: user/password, nkey (the participant's own
//! identity seed) and token; wrong or missing credentials are refused.

use std::time::Duration;

use anyhow::Result;
use murmur_subjects::connect::{Auth, ConnectError, ConnectOptions};
use murmur_subjects::{Draft, EventLog, Identity, Token};
use murmur_testkit::server::{NatsProcess, free_port, wait_healthy};

async fn server_with(authorization: &str) -> Result<(NatsProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let (port, monitor) = (free_port()?, free_port()?);
    let config = format!(
        "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: \"{}\", max_file_store: {} }}\nauthorization {{ {authorization} }}\n",
        dir.path().join("js").display(),
        murmur_testkit::server::LOCAL_MAX_FILE_STORE
    );
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, config)?;
    let server = NatsProcess::start_with_config(&path, port, monitor, dir.path(), None).await?;
    wait_healthy(monitor, Duration::from_secs(60)).await?;
    Ok((server, dir))
}

async fn open(url: &str, auth: Auth, identity: Identity) -> Result<EventLog> {
    let client = ConnectOptions::servers(url).auth(auth).connect().await?;
    Ok(EventLog::options(identity, Token::new("acme")?)
        .open(client)
        .await?)
}

#[tokio::test]
async fn user_password_and_nkey_identities_connect_others_are_refused() -> Result<()> {
    let agent = Identity::generate();
    let users = format!(
        "users = [ {{ user: alice, password: s3cret }}, {{ nkey: {} }} ]",
        agent.public_key()
    );
    let (server, _dir) = server_with(&users).await?;
    let url = server.url();

    let alice = open(
        &url,
        Auth::UserPassword {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        Identity::generate(),
    )
    .await?;
    alice
        .append(Draft::new(Token::new("t1")?, &murmur_e2e::submitted(1))?)
        .await?;

    // The agent authenticates with the same nkey seed that signs its events.
    let by_nkey = open(
        &url,
        Auth::NkeySeed {
            seed: agent.seed().to_string(),
        },
        agent.clone(),
    )
    .await?;
    let (sealed, _) = by_nkey
        .append(Draft::new(Token::new("t2")?, &murmur_e2e::submitted(2))?)
        .await?;
    assert_eq!(sealed.record.source, agent.public_key());

    let wrong = ConnectOptions::servers(&url)
        .auth(Auth::UserPassword {
            user: "alice".into(),
            password: "nope".into(),
        })
        .connect()
        .await;
    // Refused by name: what was presented and what to check.
    assert!(
        matches!(&wrong, Err(ConnectError::Refused { what, .. }) if what == "user \"alice\""),
        "{wrong:?}"
    );
    let stranger = Identity::generate();
    let unknown_key = ConnectOptions::servers(&url)
        .auth(Auth::NkeySeed {
            seed: stranger.seed().to_string(),
        })
        .connect()
        .await;
    assert!(unknown_key.is_err());
    let anonymous = ConnectOptions::servers(&url).connect().await;
    assert!(anonymous.is_err());
    Ok(())
}

#[tokio::test]
async fn token_auth_connects_and_a_wrong_token_is_refused() -> Result<()> {
    let (server, _dir) = server_with("token: \"t0k3n\"").await?;
    let url = server.url();
    open(
        &url,
        Auth::Token {
            token: "t0k3n".into(),
        },
        Identity::generate(),
    )
    .await?;
    let wrong = ConnectOptions::servers(&url)
        .auth(Auth::Token {
            token: "bad".into(),
        })
        .connect()
        .await;
    assert!(wrong.is_err());
    Ok(())
}

#[tokio::test]
async fn missing_creds_file_is_a_typed_error() -> Result<()> {
    let result = ConnectOptions::servers("nats://127.0.0.1:1")
        .auth(Auth::CredsFile {
            path: "/nonexistent/murmur.creds".into(),
        })
        .connect()
        .await;
    assert!(
        matches!(result, Err(ConnectError::Credentials { .. })),
        "{result:?}"
    );
    Ok(())
}

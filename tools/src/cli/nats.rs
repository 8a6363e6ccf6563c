//! `murmur nats up`: a local development server or 3-node cluster.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use murmur_testkit::server::{NatsCluster, NatsProcess};

use crate::config::load_or_create_identity;
use crate::settings::{OPERATOR_CREDS, Settings};

/// `murmur nats ...`
#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Start a local development server or cluster and run until ctrl-c.
    Up {
        /// Number of nodes (1 or 3).
        #[arg(long, default_value_t = 1)]
        cluster: usize,
        /// Without accounts or credentials (anyone may do anything).
        #[arg(long)]
        insecure: bool,
    },
}

async fn nats_up(settings: &Settings, size: usize, insecure: bool) -> Result<()> {
    use murmur_subjects::roles::Role;
    let auth = |resolver: &std::path::Path| -> Result<Option<murmur_testkit::server::ServerAuth>> {
        if insecure {
            return Ok(None);
        }
        let authority =
            murmur_testkit::authority::Authority::open_or_create(&settings.data_dir.join("auth"))?;
        let identity = load_or_create_identity(&settings.identity_file)?;
        authority.realm_keys(&settings.realm)?;
        let creds = settings.data_dir.join(OPERATOR_CREDS);
        murmur_testkit::authority::write_secret(
            &creds,
            &authority.creds(&settings.realm, Role::Operator, "operator", &identity, None)?,
        )?;
        Ok(Some(murmur_testkit::server::ServerAuth {
            config: authority.server_config(&settings.log, resolver)?,
            creds,
        }))
    };
    let stop = crate::signals::shutdown_signal()?;
    let (creds, _running): (Option<std::path::PathBuf>, Box<dyn std::any::Any>) = match size {
        1 => {
            let store = settings.data_dir.join("nats");
            let auth = auth(&store.join("jwt"))?;
            let mut p = NatsProcess::start(4222, &store, auth.as_ref()).await?;
            p.wait_ready(Duration::from_secs(60)).await?;
            out!("{}", p.url());
            (auth.map(|a| a.creds), Box::new(p))
        }
        3 => {
            let dir = settings.data_dir.join("cluster");
            let auth = auth(std::path::Path::new(
                murmur_testkit::server::RESOLVER_DIR_PLACEHOLDER,
            ))?;
            let cluster = NatsCluster::start(3, Some(&dir), auth.as_ref()).await?;
            out!("{}", cluster.urls());
            eprintln!(
                "3-node cluster up (store {}); ctrl-c to stop",
                dir.display()
            );
            (auth.map(|a| a.creds), Box::new(cluster))
        }
        n => bail!("--cluster takes 1 or 3, not {n}"),
    };
    match &creds {
        Some(path) => eprintln!(
            "operator mode: connect with --creds {} (commands with this data dir use them)",
            path.display()
        ),
        None => eprintln!("INSECURE: anyone who reaches the server may do anything (--insecure)"),
    }
    stop.await;
    Ok(())
}

/// Runs `murmur nats ...`.
pub async fn run(settings: &Settings, command: NatsCommand) -> Result<()> {
    match command {
        NatsCommand::Up { cluster, insecure } => nats_up(settings, cluster, insecure).await,
    }
}

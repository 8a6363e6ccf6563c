//! Shutdown signals: ctrl-c and SIGTERM, for the long-running commands.

use anyhow::Result;

/// Listens for ctrl-c and SIGTERM: how agent processes are told to leave.
pub fn shutdown_signals() -> Result<ShutdownSignals> {
    ShutdownSignals::listen()
}

/// Resolves on the first ctrl-c or SIGTERM.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    Ok(shutdown_signals()?.nth(1))
}

/// Counts ctrl-c and SIGTERM signals: the first asks an agent to drain and leave, a second
/// cuts the drain short.
pub struct ShutdownSignals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl ShutdownSignals {
    /// Starts listening (needs a tokio runtime).
    pub fn listen() -> Result<Self> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (tx, count) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { break },
                    s = term.recv() => if s.is_none() { break },
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Self { count })
    }

    /// Resolves once `n` signals have arrived (never, if signals cannot be received).
    pub fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + use<> {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|c| *c >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

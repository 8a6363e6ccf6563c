//! Network faults on loopback without privileges: a [`Link`] is a TCP proxy in front of one
//! address that can be cut (open connections closed, new ones refused), stalled (nothing
//! passes and nothing closes, as when a network drops every packet: each side learns of it
//! only by its own timeouts), delayed (every byte held back for a while, order kept) or
//! lossy (some chunks lost and retransmitted, as TCP does), and healed again.
//!
//! A cluster whose routes run through links ([`crate::server::ClusterOptions::linked_routes`])
//! can be partitioned pair by pair while its clients stay connected to their nodes: the
//! partition a client on the minority side sees.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a [`Link`] does to the traffic through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Passes everything at once.
    Up,
    /// Closes every open connection and refuses new ones (accepted, then closed at once).
    Cut,
    /// Holds every chunk back for this long after it arrived.
    Delayed(Duration),
    /// Passes nothing and closes nothing: every chunk is held until the link is up again
    /// (then delivered in order, as TCP retransmits what a network dropped), and new
    /// connections are accepted and stall too. A half-open link: neither side is told.
    Stalled,
    /// Loses each chunk with probability `percent` / 100 and delivers it once a
    /// retransmission gets through: after `rto`, doubled for each retransmission lost too
    /// (TCP's exponential backoff); the seventh retransmission always gets through. What follows a lost chunk waits
    /// behind it, as TCP delivers in order. This is what partial packet loss (and
    /// reordering, which the receiving kernel undoes) does to a TCP stream as the
    /// applications see it; what it does to the kernel's congestion window is not modelled.
    Lossy {
        /// Chance of losing each chunk (and each retransmission), in percent.
        percent: u8,
        /// The first retransmission timeout (Linux's least is 200 ms).
        rto: Duration,
    },
}

/// Most retransmissions of one chunk a [`LinkState::Lossy`] link loses after losing the
/// first send.
const MAX_LOST_RETRANSMISSIONS: u32 = 6;

/// How long a [`LinkState::Lossy`] link holds a chunk: the retransmission timeouts of each
/// loss drawn in a row, `rto` doubling each time; zero when the first send gets through.
fn retransmission_hold(percent: u8, rto: Duration, mut lost: impl FnMut() -> bool) -> Duration {
    let mut hold = Duration::ZERO;
    let mut timeout = rto;
    let mut retransmissions = 0;
    while percent > 0 && retransmissions <= MAX_LOST_RETRANSMISSIONS && lost() {
        hold += timeout;
        timeout *= 2;
        retransmissions += 1;
    }
    hold
}

/// A TCP proxy on 127.0.0.1 in front of one address; stopped when dropped.
#[derive(Debug)]
pub struct Link {
    port: u16,
    state: watch::Sender<LinkState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", crate::server::free_port()?)).await?;
        let port = listener.local_addr()?.port();
        let (state, watch) = watch::channel(LinkState::Up);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watch.borrow() == LinkState::Cut {
                    drop(inbound);
                    continue;
                }
                let watch = watch.clone();
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        forward(inbound, outbound, watch).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            state,
            accept,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it does from now on; cutting closes the connections open now.
    pub fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// What it does now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.send_replace(LinkState::Cut);
        self.accept.abort();
    }
}

/// Pumps both directions until either side closes or the link is cut.
async fn forward(inbound: TcpStream, outbound: TcpStream, state: watch::Receiver<LinkState>) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pump(in_read, out_write, state.clone());
    let down = pump(out_read, in_write, state);
    // Either direction ending ends both: the sockets close when this returns.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Reads chunks from `from` and writes each to `to` once the link's delay has passed since it
/// was read; ends when either side closes or the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_state = state.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                n = from.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                },
                changed = read_state.changed() => {
                    if changed.is_err() || *read_state.borrow() == LinkState::Cut {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                changed = state.changed() => {
                    if changed.is_err() || *state.borrow() == LinkState::Cut {
                        return;
                    }
                    continue;
                }
            };
            let Some((read_at, chunk)) = next else {
                return;
            };
            // Held while stalled: the next state decides (cut, delayed or up).
            while *state.borrow() == LinkState::Stalled {
                if state.changed().await.is_err() {
                    return;
                }
            }
            let delay = match *state.borrow() {
                LinkState::Cut => return,
                LinkState::Up | LinkState::Stalled => Duration::ZERO,
                LinkState::Delayed(d) => d,
                LinkState::Lossy { percent, rto } => {
                    retransmission_hold(percent, rto, || fastrand::u8(0..100) < percent)
                }
            };
            tokio::time::sleep_until(read_at + delay).await;
            if *state.borrow() == LinkState::Cut || to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The reader ending (peer closed) still lets queued chunks drain through the writer.
    let reader = tokio::spawn(reader);
    writer.await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> Result<SocketAddr> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(port: u16) -> Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_link_passes_cuts_heals_and_delays() -> Result<()> {
        let link = Link::start(echo_server().await?).await?;
        assert_eq!(round_trip(link.port()).await?, b"ping");

        // An open connection is closed by the cut, and a new one gets nothing back.
        let mut open = TcpStream::connect(("127.0.0.1", link.port())).await?;
        open.write_all(b"a").await?;
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await?;
        link.set(LinkState::Cut);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), open.read_to_end(&mut rest))
            .await?
            .is_ok();
        assert!(closed && rest.is_empty(), "the open connection was closed");
        assert!(round_trip(link.port()).await.is_err(), "refused while cut");

        link.set(LinkState::Up);
        assert_eq!(round_trip(link.port()).await?, b"ping");

        link.set(LinkState::Delayed(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(link.port()).await?, b"ping");
        // Both directions are held back.
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        Ok(())
    }

    #[test]
    fn a_lost_chunk_waits_for_each_retransmission_timeout_doubling() {
        let rto = Duration::from_millis(200);
        assert_eq!(retransmission_hold(5, rto, || false), Duration::ZERO);
        assert_eq!(retransmission_hold(0, rto, || true), Duration::ZERO);
        // Lost twice, then through: 200 + 400 ms.
        let mut draws = [true, true, false].into_iter();
        assert_eq!(
            retransmission_hold(50, rto, || draws.next().unwrap_or(false)),
            Duration::from_millis(600)
        );
        // Never through: the first send and six retransmissions lost, then delivered.
        assert_eq!(
            retransmission_hold(100, rto, || true),
            rto * (2u32.pow(MAX_LOST_RETRANSMISSIONS + 1) - 1)
        );
    }

    #[tokio::test]
    async fn a_lossy_link_delivers_everything_in_order_late() -> Result<()> {
        let link = Link::start(echo_server().await?).await?;
        let mut open = TcpStream::connect(("127.0.0.1", link.port())).await?;
        // Every chunk lost until the last retransmission: 127 × 2 ms each way.
        link.set(LinkState::Lossy {
            percent: 100,
            rto: Duration::from_millis(2),
        });
        let started = std::time::Instant::now();
        for word in [b"one ", b"two "] {
            open.write_all(word).await?;
        }
        let mut buf = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(30), open.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"one two ", "everything, in order");
        assert!(
            started.elapsed() >= Duration::from_millis(2 * 254),
            "held for the retransmissions: {:?}",
            started.elapsed()
        );
        link.set(LinkState::Lossy {
            percent: 0,
            rto: Duration::from_millis(200),
        });
        open.write_all(b"pass").await?;
        tokio::time::timeout(Duration::from_secs(10), open.read_exact(&mut buf[..4])).await??;
        assert_eq!(&buf[..4], b"pass");
        Ok(())
    }

    #[tokio::test]
    async fn a_stalled_link_holds_everything_without_closing_and_delivers_it_when_up() -> Result<()>
    {
        let link = Link::start(echo_server().await?).await?;
        let mut open = TcpStream::connect(("127.0.0.1", link.port())).await?;
        link.set(LinkState::Stalled);
        open.write_all(b"held").await?;
        let mut buf = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), open.read_exact(&mut buf))
                .await
                .is_err(),
            "nothing passes while stalled, and the connection is not closed"
        );
        // A connection opened while stalled is accepted and stalls too.
        let mut late = TcpStream::connect(("127.0.0.1", link.port())).await?;
        late.write_all(b"late").await?;
        link.set(LinkState::Up);
        tokio::time::timeout(Duration::from_secs(10), open.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"held", "what was held is delivered in order");
        tokio::time::timeout(Duration::from_secs(10), late.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"late");
        Ok(())
    }
}

//! A fault-injecting TCP proxy for one directed link between two nodes (node i's connections
//! to node j). A link passes traffic, delays it, or is a black hole: existing connections are
//! cut and new ones are accepted and left silent (as a dead route looks to the sender) until
//! the link heals, when they are closed so the sender reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Every chunk waits this long before it is passed on (both directions of the link's
    /// connections: requests and their answers).
    Delay(Duration),
    Blackhole,
}

/// One directed link's proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Connections accepted since the start.
    accepted: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.2 and forwards to `upstream`. (Not 127.0.0.1: the
    /// nodes and the bank take ports there that were free a moment before they bind them, and
    /// a proxy must not be given one of those in between.)
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.2:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watch) = watch::channel(Mode::Pass);
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(accept(listener, upstream, watch, accepted.clone()));
        Ok(Proxy {
            addr,
            mode,
            accepted,
            task,
        })
    }

    /// Connections the sender opened through this link so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    count: Arc<std::sync::atomic::AtomicU64>,
) {
    let mode = Arc::new(mode);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = listener.accept() => {
                let Ok((inbound, _)) = incoming else { continue };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = inbound.set_nodelay(true);
                connections.spawn(serve(inbound, upstream, (*mode).clone()));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Waits until the link is not a black hole.
async fn until_open(mode: &mut watch::Receiver<Mode>) -> bool {
    mode.wait_for(|m| *m != Mode::Blackhole).await.is_ok()
}

async fn serve(inbound: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Blackhole {
        // Accepted and silent; closed when the link heals, so the sender reconnects.
        until_open(&mut mode).await;
        return;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = pump(in_read, out_write, mode.clone()) => {}
        _ = pump(out_read, in_write, mode.clone()) => {}
        // A black hole cuts the connections it finds.
        _ = mode.wait_for(|m| *m == Mode::Blackhole) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = match *mode.borrow() {
            Mode::Delay(d) => Some(d),
            Mode::Pass => None,
            Mode::Blackhole => return,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
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
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_link_passes_delays_blackholes_and_heals() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s).await.unwrap(), b"ping");

        proxy.set(Mode::Delay(Duration::from_millis(100)));
        let began = tokio::time::Instant::now();
        assert_eq!(round_trip(&mut s).await.unwrap(), b"ping");
        // Delayed going and coming back.
        assert!(began.elapsed() >= Duration::from_millis(200));

        // A black hole cuts the open connection, and a new one hears nothing.
        proxy.set(Mode::Blackhole);
        assert!(round_trip(&mut s).await.is_err());
        let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut silent)).await;
        assert!(heard.is_err(), "a black hole answered");

        // Healed: the silent connection is closed; a new one passes again.
        proxy.set(Mode::Pass);
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s).await.unwrap(), b"ping");
    }
}

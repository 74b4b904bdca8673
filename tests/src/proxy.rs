//! A small TCP proxy for fault tests (loopback only): it listens on
//! 127.0.0.1 and forwards every connection to one upstream address, and on
//! command injects what a bad network does:
//!
//! - [`Mode::Delay`]: every chunk of bytes is held for a fixed time before
//!   it is passed on (latency; chunks are stamped when they arrive, so the
//!   delay does not add up along a stream);
//! - [`Mode::Stall`]: nothing is passed on, in either direction, and new
//!   connections are accepted but not connected upstream (a partition:
//!   packets vanish, peers wait for their timeouts); what was held goes on
//!   when the mode changes;
//! - [`Mode::Refuse`]: new connections are reset at once;
//! - [`Proxy::reset_all`]: every open connection is reset (RST to both
//!   peers, as a middlebox or a crashed peer does).
//!
//! Each connection is four tasks (a reader and a writer per direction,
//! over a bounded channel, so a peer that does not read slows the other
//! down as TCP would). Dropping the [`Proxy`] stops listening and resets
//! every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the proxy does to the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Hold each chunk this long.
    Delay(Duration),
    /// Forward nothing; hold new connections unconnected.
    Stall,
    /// Reset new connections at once (open ones are left as they are).
    Refuse,
}

/// Counters of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset (by [`Proxy::reset_all`], [`Mode::Refuse`], or
    /// because one peer reset its side).
    pub resets: u64,
    /// Bytes forwarded, both directions.
    pub bytes: u64,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Cancelled (and replaced) by `reset_all`: every connection holds a
    /// child of the generation it was accepted in.
    generation: Mutex<CancellationToken>,
    connections: AtomicU64,
    resets: AtomicU64,
    bytes: AtomicU64,
}

impl Shared {
    fn generation(&self) -> CancellationToken {
        self.generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A running proxy; stops (and resets its connections) when dropped.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` (0: any free port) and forwards to
    /// `upstream`, which must be a loopback address.
    pub async fn start(port: u16, upstream: SocketAddr) -> std::io::Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the test proxy forwards to loopback only, not {upstream}"),
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::Pass),
            generation: Mutex::new(CancellationToken::new()),
            connections: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(Self { port, shared, stop })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sets what it does from now on (chunks already held follow the new
    /// mode: a stall lifted lets them go).
    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Resets every open connection (both peers get an RST).
    pub fn reset_all(&self) {
        let mut g = self
            .shared
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            resets: self.shared.resets.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        if *shared.mode.borrow() == Mode::Refuse {
            reset(client, &shared);
            continue;
        }
        tokio::spawn(connect(
            client,
            shared.clone(),
            shared.generation().child_token(),
        ));
    }
}

/// Closes `s` with an RST (SO_LINGER 0).
fn reset(s: TcpStream, shared: &Shared) {
    let _ = s.set_zero_linger();
    shared.resets.fetch_add(1, Ordering::Relaxed);
    drop(s);
}

async fn connect(client: TcpStream, shared: Arc<Shared>, conn: CancellationToken) {
    // A partition: the connection waits, unconnected, until it is lifted.
    let mut mode = shared.mode.subscribe();
    let stalled = tokio::select! {
        _ = conn.cancelled() => true,
        r = mode.wait_for(|m| *m != Mode::Stall) => r.is_err(),
    };
    if stalled || *mode.borrow() == Mode::Refuse {
        reset(client, &shared);
        return;
    }
    let server = tokio::select! {
        _ = conn.cancelled() => None,
        s = TcpStream::connect(shared.upstream) => s.ok(),
    };
    let Some(server) = server else {
        reset(client, &shared);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (to_server, from_client) = mpsc::channel(64);
    let (to_client, from_server) = mpsc::channel(64);
    let tasks = [
        tokio::spawn(read(cr, to_server, shared.clone(), conn.clone())),
        tokio::spawn(write(sw, from_client, shared.clone(), conn.clone())),
        tokio::spawn(read(sr, to_client, shared.clone(), conn.clone())),
        tokio::spawn(write(cw, from_server, shared.clone(), conn.clone())),
    ];
    for t in tasks {
        let _ = t.await;
    }
    if conn.is_cancelled() {
        shared.resets.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads chunks, stamped with their arrival, until EOF; an error resets
/// the connection.
async fn read(
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    conn: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            _ = conn.cancelled() => return,
            n = r.read(&mut buf) => n,
        };
        match n {
            Ok(0) => return,
            Ok(n) => {
                let sent = tokio::select! {
                    _ = conn.cancelled() => return,
                    s = tx.send((Instant::now(), buf[..n].to_vec())) => s,
                };
                if sent.is_err() {
                    return;
                }
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                conn.cancel();
                return;
            }
        }
    }
}

/// Writes the chunks in order, each when the mode lets it go; at the end
/// of the stream shuts the write side down (FIN); on a reset of the
/// connection closes with an RST.
async fn write(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    conn: CancellationToken,
) {
    let mut mode = shared.mode.subscribe();
    let ok = async {
        while let Some((at, chunk)) = rx.recv().await {
            loop {
                let m = *mode.borrow_and_update();
                match m {
                    Mode::Stall => {
                        if mode.changed().await.is_err() {
                            return false;
                        }
                    }
                    Mode::Delay(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at + d) => break,
                            // A new mode applies to this chunk too.
                            c = mode.changed() => if c.is_err() { return false },
                        }
                    }
                    Mode::Pass | Mode::Refuse => break,
                }
            }
            if w.write_all(&chunk).await.is_err() {
                return false;
            }
        }
        let _ = w.shutdown().await;
        true
    };
    let finished = tokio::select! {
        _ = conn.cancelled() => false,
        ok = ok => ok,
    };
    if !finished {
        conn.cancel();
        let _ = w.as_ref().set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn passes_delays_stalls_resets_and_refuses() {
        let proxy = Proxy::start(0, echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");

        // Latency: both directions, once each.
        proxy.set(Mode::Delay(Duration::from_millis(150)));
        let t = Instant::now();
        round_trip(&mut s, b"slow").await.unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");

        // Stall: nothing arrives until it is lifted, then everything does.
        proxy.set(Mode::Stall);
        s.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(400), s.read_exact(&mut got)).await;
        assert!(early.is_err(), "nothing passes a stall");
        proxy.set(Mode::Pass);
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held");

        // Reset: the open connection is cut.
        proxy.reset_all();
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = s.write_all(b"x").await;
            s.read(&mut one).await
        })
        .await
        .expect("a reset connection answers at once");
        assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");

        // Refuse: new connections are reset, later ones work again.
        proxy.set(Mode::Refuse);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut one))
            .await
            .expect("a refused connection answers at once");
        assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
        proxy.set(Mode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
        let st = proxy.stats();
        assert!(st.connections >= 3 && st.resets >= 2, "{st:?}");
    }
}

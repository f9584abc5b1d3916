//! The accept loop: connection limits, timeouts and TLS around the API.
//!
//! `axum::serve` keeps a connection for as long as its peer likes: one that never sends a
//! request, sends half of one, or goes quiet after its last answer holds a task and a file
//! descriptor until it hangs up, and thousands of them exhaust the process. Here every
//! connection counts against a limit for the whole server and one per peer address, must
//! deliver each request head within the header timeout (counted from the connection, then
//! from the end of each answer: an idle kept-alive connection closes after it too), and is
//! closed once nothing has been read or written on it for the idle timeout (which bounds a
//! request or stream gone silent; a revocation stream writes a heartbeat every few
//! seconds, so it stays). TLS, when configured, is negotiated within the header timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What a server accepts before it refuses or closes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections the whole server keeps; more are closed as they arrive.
    pub max_connections: u32,
    /// Open connections from one peer IP address; more are closed as they arrive.
    pub max_per_address: u32,
    /// Time a connection gets to deliver a whole request head (and its TLS handshake).
    pub header_timeout: Duration,
    /// Time a connection may stay with nothing read or written before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_address: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How a server listens: limits, and TLS when a certificate is configured.
#[derive(Clone, Default)]
pub struct Listening {
    pub limits: ConnectionLimits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A TLS server configuration from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3, with ring's cipher suites.
pub fn tls_config(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("reading TLS certificates from `{}`: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("reading the TLS private key from `{}`: {e}", key_path.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("the TLS certificate and key do not make a server configuration: {e}"))
}

/// Serve `app` on `listener` until `stop` resolves; then stop accepting and let open
/// connections finish their requests (the caller bounds how long). `refused` hears of
/// each connection closed on arrival because a limit was reached.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    listening: Listening,
    refused: impl Fn(Refusal) + Send + Sync + 'static,
    stop: impl std::future::Future<Output = ()>,
) {
    let limits = listening.limits;
    let tls = listening.tls.map(tokio_rustls::TlsAcceptor::from);
    let counts = Arc::new(Counts::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Heads with more fields than the API takes still reach it, to be refused with its
    // JSON error (`error::limit_headers`) rather than the parser's bare 431.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(4 * crate::error::MAX_HEADERS);
    let http = Arc::new(http);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let slot = match Counts::admit(&counts, peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, ?why, "connection refused");
                refused(why);
                drop(tcp);
                continue;
            }
        };
        // Streamed answers (the revocation stream) are written in pieces: without NODELAY
        // each piece can wait for the client's delayed ACK (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let tls = tls.clone();
        let http = Arc::clone(&http);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Arc::new(Activity::new());
            let io: Box<dyn Io> = match tls {
                None => Box::new(Tracked::new(tcp, Arc::clone(&activity))),
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => Box::new(Tracked::new(stream, Arc::clone(&activity))),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let connection = watcher.watch(http.serve_connection(TokioIo::new(io), service));
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = activity.idle_for(limits.idle_timeout) => {
                    tracing::debug!(%peer, "closing a connection idle for {:?}", limits.idle_timeout);
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accept that failed: a connection that went away before it was accepted is nothing;
/// anything else (out of file descriptors) would fail again at once, so wait a little.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Open connections, in all and per peer address.
#[derive(Debug, Default)]
struct Counts {
    inner: Mutex<CountsInner>,
}

#[derive(Debug, Default)]
struct CountsInner {
    total: u32,
    per_address: HashMap<IpAddr, u32>,
}

/// Why a connection was closed on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already.
    ServerFull,
    /// The peer's address holds `max_per_address` already.
    AddressFull,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerFull => "server_full",
            Self::AddressFull => "address_full",
        }
    }
}

impl Counts {
    fn lock(&self) -> std::sync::MutexGuard<'_, CountsInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new connection from `ip`, or the limit that refuses it.
    fn admit(counts: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Slot, Refusal> {
        let mut inner = counts.lock();
        let from_ip = inner.per_address.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.max_per_address {
            return Err(Refusal::AddressFull);
        }
        if inner.total >= limits.max_connections {
            return Err(Refusal::ServerFull);
        }
        inner.total += 1;
        inner.per_address.insert(ip, from_ip + 1);
        Ok(Slot {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.counts.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(n) = inner.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_address.remove(&self.ip);
            }
        }
    }
}

/// When a connection last read or wrote anything.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved on the connection for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A stream that records its reads and writes in an [`Activity`].
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn limits(total: u32, per_address: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_per_address: per_address,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn slots_count_per_address_and_in_all_and_free_on_drop() {
        let counts = Arc::new(Counts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(3, 2);
        let a1 = Counts::admit(&counts, a, &l).unwrap();
        let _a2 = Counts::admit(&counts, a, &l).unwrap();
        assert_eq!(Counts::admit(&counts, a, &l).err(), Some(Refusal::AddressFull));
        let _b1 = Counts::admit(&counts, b, &l).unwrap();
        assert_eq!(Counts::admit(&counts, b, &l).err(), Some(Refusal::ServerFull));
        drop(a1);
        assert!(Counts::admit(&counts, b, &l).is_ok());
    }

    #[tokio::test]
    async fn idleness_is_measured_from_the_last_movement() {
        let activity = Activity::new();
        let limit = Duration::from_millis(300);
        tokio::time::sleep(Duration::from_millis(200)).await;
        activity.touch();
        let started = Instant::now();
        activity.idle_for(limit).await;
        // Measured from the touch, not from the start: at least 300 ms after it.
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
    }
}

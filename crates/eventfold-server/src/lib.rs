//! eventfold's HTTP server: the API of `docs/http-api.md` over any
//! [`EventStore`](eventfold_core::EventStore). The binary (`eventfold serve`) opens the embedded
//! engine and hands it here; this crate never looks inside a store.

pub mod auth;
mod authorized;
pub mod console;
pub mod encoded;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod live;
pub mod metrics;
mod negotiate;
mod routes;
mod spans;
mod state;
pub mod tls;

pub use authorized::{ApiRequest, Authorized, PathParams};
pub use error::ApiError;
pub use routes::subscribe::{CHUNK_DATA_BYTES_MAX, CHUNK_EVENTS_MAX};
pub use state::{
    AppState, BODY_READ_TIMEOUT_DEFAULT, BackupPart, BackupSource, CONNECTIONS_MAX_DEFAULT,
    HEADER_READ_TIMEOUT_DEFAULT, ScavengeSource, ServerLimits, StoredBytes,
};

use std::future::Future;
use std::net::SocketAddr;

/// Builds the router over `state`: the API and the web console at `/` (what `eventfold serve`
/// serves).
pub fn router(state: AppState) -> axum::Router {
    routes::router(state, true)
}

/// The API alone, without the console: for an application that embeds the server in its own
/// router and serves its own pages (`/` among them).
pub fn api_router(state: AppState) -> axum::Router {
    routes::router(state, false)
}

/// A connection whose writes go out at once (`TCP_NODELAY`). Without it the kernel may hold a
/// small write back until the previous one is acknowledged (Nagle), and a client that only
/// reads, like a subscriber, delays its acknowledgements: a live event, one small write, could
/// wait for the acknowledgement of the one before.
pub trait NoDelay {
    /// Sets `TCP_NODELAY`.
    fn no_delay(&self) -> std::io::Result<()>;
}

impl NoDelay for tokio::net::TcpStream {
    fn no_delay(&self) -> std::io::Result<()> {
        self.set_nodelay(true)
    }
}

impl NoDelay for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn no_delay(&self) -> std::io::Result<()> {
        self.get_ref().0.set_nodelay(true)
    }
}

/// Serves `state` on `listener` (a [`tokio::net::TcpListener`], or a [`tls::TlsListener`])
/// until `shutdown` resolves, every connection with [`NoDelay`]; then stops accepting, lets requests in flight finish
/// (subscriptions end with a final message) and returns.
///
/// At most [`ServerLimits::connections_max`] connections are served at once (the next is
/// accepted when one closes), a request's header must arrive within
/// [`ServerLimits::header_read_timeout`] and its body within
/// [`ServerLimits::body_read_timeout`].
pub async fn serve<L>(
    mut listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: NoDelay,
{
    let closing = state.closing.clone();
    let limits = state.limits;
    let app = router(state);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        connections_max = limits.connections_max,
        "eventfold is listening"
    );
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.connections_max.max(1)));
    // Connections watch `stop` for the graceful end, and hold `open` until they are gone.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, remote) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        if let Err(e) = io.no_delay() {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        if permits.available_permits() == 0 {
            tracing::warn!(
                connections_max = limits.connections_max,
                "the server serves its most connections: new ones wait until one closes"
            );
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let stopping = async {
                // The guard `wait_for` gives is dropped here, before anything else awaits.
                let _ = stop.wait_for(|s| *s).await.is_ok();
            };
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                () = stopping => None,
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(permit);
            drop(open);
        });
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    closing.send_replace(true);
    stop_tx.send_replace(true);
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
    Ok(())
}

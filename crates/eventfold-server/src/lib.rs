//! eventfold's HTTP server: the API of `docs/http-api.md` over any
//! [`EventStore`](eventfold_core::EventStore). The binary (`eventfold serve`) opens the embedded
//! engine and hands it here; this crate never looks inside a store.

pub mod auth;
mod authorized;
pub mod console;
pub mod encoded;
mod error;
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
pub use state::{AppState, ServerLimits, StoredBytes};

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
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: NoDelay,
{
    use axum::serve::ListenerExt as _;
    let closing = state.closing.clone();
    let app = router(state);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "eventfold is listening");
    let listener = listener.tap_io(|io| {
        if let Err(e) = io.no_delay() {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            closing.send_replace(true);
        })
        .await
}

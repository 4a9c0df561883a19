//! eventfold's HTTP server: the API of `docs/http-api.md` over any
//! [`EventStore`](eventfold_core::EventStore). The binary (`eventfold serve`) opens the embedded
//! engine and hands it here; this crate never looks inside a store.

pub mod auth;
mod authorized;
pub mod encoded;
mod error;
pub mod metrics;
mod negotiate;
mod routes;
mod state;
pub mod tls;

pub use authorized::{ApiRequest, Authorized, PathParams};
pub use error::ApiError;
pub use routes::subscribe::{CHUNK_DATA_BYTES_MAX, CHUNK_EVENTS_MAX};
pub use state::{AppState, ServerLimits};

use std::future::Future;
use std::net::SocketAddr;

/// Builds the router over `state`.
pub fn router(state: AppState) -> axum::Router {
    routes::router(state)
}

/// Serves `state` on `listener` (a [`tokio::net::TcpListener`], or a [`tls::TlsListener`])
/// until `shutdown` resolves; then stops accepting, lets requests in flight finish
/// (subscriptions end with a final message) and returns.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let closing = state.closing.clone();
    let app = router(state);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "eventfold is listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            closing.send_replace(true);
        })
        .await
}

#![doc = include_str!("../README.md")]

mod auth;
mod error;
pub mod listen;
mod metrics;
mod openapi;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use clearance_core::ControlPlane;
use clearance_model::limits::MAX_REQUEST_BYTES;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::executions::HEARTBEAT_INTERVAL;

/// How long any request may take before it is answered `408 timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    plane: ControlPlane,
    metrics: Metrics,
    limiter: auth::FailureLimiter,
    /// Set when the server is shutting down: long-lived answers (revocation streams) end.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(plane: ControlPlane) -> Self {
        Self {
            inner: Arc::new(Inner {
                plane,
                metrics: Metrics::new(),
                limiter: auth::FailureLimiter::default(),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    pub fn plane(&self) -> &ControlPlane {
        &self.inner.plane
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Becomes true when the server starts shutting down.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::authorize::routes())
        .merge(routes::principals::routes())
        .merge(routes::executions::routes())
        .merge(routes::environments::routes())
        .merge(routes::policies::routes())
        .merge(routes::log::routes())
        .merge(routes::meta::routes())
        .fallback(routes::meta::not_found)
        .layer(axum::middleware::from_fn(error::require_json))
        .layer(axum::middleware::from_fn(error::limit_headers))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::new())
        // Outside the timeout and the panic guard, so their answers get the JSON body too.
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests;

/// How long in-flight requests get to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serve the API on `listener` (with the limits and TLS of `listening`) until `shutdown`
/// completes. Then revocation streams end (their consumers reconnect elsewhere), in-flight
/// requests get [`SHUTDOWN_GRACE`] to finish, and whatever is still open after that (a
/// half-sent request) is dropped: the process always stops. Appends already handed to the
/// sequencer are answered first, since their requests are among those awaited.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    listening: listen::Listening,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stopping = state.inner.stopping.clone();
    let mut stopped = state.stopping();
    let counted = state.clone();
    let app = router(state);
    let signal = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    let server = listen::serve_app(
        listener,
        app,
        listening,
        move |why| counted.metrics().connection_refused(why),
        signal,
    );
    tokio::select! {
        () = server => {}
        () = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still open {SHUTDOWN_GRACE:?} after the shutdown signal were dropped");
        }
    }
}

/// Sign a checkpoint every `every` while the log grows, when this node holds the
/// checkpointer role (always, on SQLite; one node at a time on a shared database).
/// Failures are logged and retried; they never stop the decision path (which does not
/// depend on checkpoints).
pub fn spawn_checkpointer(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = state.plane().checkpoint_if_leader().await {
                tracing::error!(error = %e, "checkpoint failed");
            }
        }
    })
}

/// How often a node of a cluster re-reads shared deciding state even when no change was
/// announced: the bound on how late a lost notification makes it.
pub const SHARED_STATE_POLL: Duration = Duration::from_millis(250);

/// On a database other nodes write to, keep this node's in-memory state (revocations
/// announced to its streams, the signing key's revocation, the active policy) in step
/// with theirs: at once when a change is announced, and every [`SHARED_STATE_POLL`]
/// regardless. Nothing to do (and no task) on a store with no other writer.
pub fn spawn_shared_state_follower(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = Some(state.plane().shared_changes()?);
    Some(tokio::spawn(async move {
        loop {
            let heard = async {
                match changes.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                heard = heard => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = heard {
                        tracing::error!("change notifications stopped; following by polling only");
                        changes = None;
                    }
                }
                () = tokio::time::sleep(SHARED_STATE_POLL) => {}
            }
            if let Err(e) = state.plane().sync_shared_state().await {
                tracing::warn!(error = %e, "could not read shared state; retrying");
            }
        }
    }))
}

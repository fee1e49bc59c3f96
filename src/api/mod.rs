//! The control API and `/status` (`[api] listen`): axum on hyper, on a current-thread tokio
//! runtime in a thread of its own, so nothing it does runs on (or waits for) a shard. It reads
//! the shards by asking them through their mailboxes (`shard::snapshot::Query`, answered
//! between completion batches on one-shot channels, gathered with a deadline), and changes
//! routes through [`crate::control::Control`], which hands the shards new settings as a reload
//! does.
//!
//! - `auth`: Bearer tokens (`[[api.token]]`), scopes, the per-address failure limit.
//! - `routes`: `GET /v1/routes`, `GET|PUT|PATCH|DELETE /v1/routes/{path}`.
//! - `live`: `GET /v1/cameras`, `GET /v1/sessions`, `DELETE /v1/sessions/{id}`.
//! - `info`: `GET /v1/info`, `POST /v1/reload`.
//! - `openapi`: the OpenAPI document, generated from the handlers (`GET /v1/openapi.json`).
//! - `status_page`: `/status`, for people.

mod auth;
mod info;
mod live;
pub mod openapi;
mod routes;
mod status_page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::ApiSettings;
use crate::control::Control;
use crate::metrics::ShardMetrics;

/// How long the API waits for every shard to answer a query.
const SHARD_ANSWER_DEADLINE: Duration = Duration::from_secs(2);

/// What every handler reaches.
pub struct ApiContext {
    pub control: Arc<Control>,
    /// Where the API counts its refusals (`relay_rejections_total{reason="api_auth"}`).
    pub metrics: Arc<ShardMetrics>,
    pub(crate) auth: auth::AuthState,
    pub(crate) rates: live::RateMeter,
}

impl ApiContext {
    pub fn new(control: Arc<Control>, metrics: Arc<ShardMetrics>) -> ApiContext {
        ApiContext { control, metrics, auth: auth::AuthState::default(), rates: live::RateMeter::default() }
    }
}

type Ctx = Arc<ApiContext>;

/// An error as JSON: `{"error": "..."}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// A change to a route outside the caller's grants.
    pub(crate) fn outside(route: &str) -> ApiError {
        ApiError(StatusCode::FORBIDDEN, format!("this token may not change {route}"))
    }
}

impl From<crate::control::ControlError> for ApiError {
    fn from(e: crate::control::ControlError) -> ApiError {
        use crate::control::ControlError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::FromFile(_) | E::Conflict(_) => StatusCode::CONFLICT,
            E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// The whole router, every request through `auth` first.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/routes", axum::routing::get(routes::list))
        .route(
            "/v1/routes/{*path}",
            axum::routing::get(routes::get_one).put(routes::put).patch(routes::patch).delete(routes::delete),
        )
        .route("/v1/cameras", axum::routing::get(live::cameras))
        .route("/v1/sessions", axum::routing::get(live::sessions))
        .route("/v1/sessions/{id}", axum::routing::delete(live::end_session))
        .route("/v1/info", axum::routing::get(info::info))
        .route("/v1/reload", axum::routing::post(info::reload))
        .route("/v1/openapi.json", axum::routing::get(openapi::serve))
        .route("/status", axum::routing::get(status_page::page))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth::gate))
        .with_state(ctx)
}

/// The running API: its thread stops when this is dropped.
pub struct ApiServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `settings.listen` (so a bind error stops the start) and serves from a thread.
    pub fn start(settings: &ApiSettings, ctx: ApiContext) -> anyhow::Result<ApiServer> {
        let listener = std::net::TcpListener::bind(settings.listen)
            .map_err(|e| anyhow::anyhow!("[api] cannot bind {}: {e}", settings.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tls = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let app = router(Arc::new(ctx));
        let thread = std::thread::Builder::new().name("api".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    _ = serve(listener, tls, app) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(ApiServer { addr, stop: Some(stop), thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a little instead of spinning.
                tracing::warn!(error = %e, "control API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone().layer(axum::Extension(auth::Peer(peer)));
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            // A client that never finishes its request head does not hold a connection forever.
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                }
                None => {
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

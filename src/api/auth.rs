//! Who may call the API: `Authorization: Bearer <secret>` against `[[api.token]]` (digests
//! compared in constant time, `proto::api_token`), reads with any token, changes with an
//! `admin` one. Failed attempts are counted per address like viewer logins (`[auth]
//! max_failures_per_ip` within `failure_window_secs`, the same `AuthFailureLimiter`): past the
//! limit an address gets 429 until the window passes. Secrets are never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Ctx};
use crate::admission::AuthFailureLimiter;
use crate::metrics::Rejection;
use crate::proto::api_token::{Refusal, Scope};

/// The connection's peer, set by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[derive(Default)]
pub struct AuthState {
    failures: Arc<AuthFailureLimiter>,
}

/// Who is calling (set for the handlers once let in).
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
}

/// The scope a request needs: reads need `read`, anything else `admin`.
fn needed(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD { Scope::Read } else { Scope::Admin }
}

pub async fn gate(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else {
        return ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no peer address".into()).into_response();
    };
    let settings = ctx.control.running();
    let Some(api) = settings.api.as_ref() else {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "the control API is not configured".into()).into_response();
    };
    let now = Instant::now();
    let window = Duration::from_secs(settings.auth.failure_window_secs);
    let ip = peer.ip();
    if ctx.auth.failures.is_blocked(ip, now, settings.auth.max_failures_per_ip, window) {
        ctx.metrics.rejected(Rejection::AuthRateLimited);
        return ApiError(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts from this address".into())
            .into_response();
    }
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match api.tokens.check(authorization, needed(req.method())) {
        Ok(token) => {
            let caller = Caller { token: token.name.clone() };
            if req.method() != Method::GET {
                tracing::info!(token = %caller.token, method = %req.method(), path = %req.uri().path(), "control API change");
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        // A browser opening /status without a token gets the page with its login form.
        Err(Refusal::Unauthenticated) if authorization.is_none() && req.uri().path() == "/status" => {
            super::status_page::login_page()
        }
        Err(Refusal::Unauthenticated) => {
            ctx.auth.failures.record(ip, now, window);
            ctx.metrics.rejected(Rejection::ApiAuth);
            tracing::debug!(peer = %peer, "control API: no valid token");
            let mut r = ApiError(StatusCode::UNAUTHORIZED, "a valid Authorization: Bearer token is needed".into())
                .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
        Err(Refusal::Forbidden) => {
            ctx.metrics.rejected(Rejection::ApiForbidden);
            ApiError(StatusCode::FORBIDDEN, "this token may only read".into()).into_response()
        }
    }
}

//! Who may call the API: `Authorization: Bearer <secret>` against `[[api.token]]` (digests
//! compared in constant time, `proto::api_token`), reads with any token, changes with an
//! `admin` one. Failed attempts are counted per address like viewer logins (`[auth]
//! max_failures_per_ip` within `failure_window_secs`, the same `AuthFailureLimiter`): past the
//! limit an address gets 429 until the window passes. Secrets are never logged.
//!
//! With `[auth] method = "jwt"`, a Bearer value that is no `[[api.token]]` secret is checked
//! as a JWT by the viewers' verifier (same JWKS cache, iss/aud/exp/nbf, leeway); its claim's
//! `api` / `api_admin` grants decide which routes it may see or change. Static tokens are the
//! same grants on `"*"`, so every handler asks one thing: [`Caller::may`].

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
use crate::proto::api_token::{Refusal, Scope, bearer};
use crate::proto::permissions::{Action, Permission, has_any, may, may_everywhere};

/// The connection's peer, set by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[derive(Default)]
pub struct AuthState {
    failures: Arc<AuthFailureLimiter>,
}

/// Who is calling (set for the handlers once let in): a token's name (or a JWT's `sub`) and
/// its grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub grants: Vec<Permission>,
}

impl Caller {
    /// The one check every handler makes: `action` (`api` to see, `api_admin` to change) on
    /// `route`.
    pub fn may(&self, action: Action, route: &str) -> bool {
        may(&self.grants, action, route)
    }

    /// A change that is not one route's (a reload) needs the action on `"*"`.
    pub fn may_everywhere(&self, action: Action) -> bool {
        may_everywhere(&self.grants, action)
    }
}

/// The action a request needs: reads need `api`, anything else `api_admin`.
fn needed(method: &Method) -> Action {
    if method == Method::GET || method == Method::HEAD { Action::Api } else { Action::ApiAdmin }
}

/// Who the `Authorization` value names: a static token (checked in constant time), else,
/// with `[auth] method = "jwt"`, a JWT with API grants. Refusals as the static check's.
async fn identify(
    ctx: &Ctx,
    api_tokens: &crate::proto::api_token::Tokens,
    authorization: Option<&[u8]>,
) -> Result<Caller, Refusal> {
    match api_tokens.check(authorization, Scope::Read) {
        Ok(token) => return Ok(Caller { token: token.name.clone(), grants: token.scope.grants() }),
        Err(Refusal::Forbidden) => return Err(Refusal::Forbidden),
        Err(Refusal::Unauthenticated) => {}
    }
    let Some(secret) = authorization.and_then(bearer).and_then(|s| std::str::from_utf8(s).ok()) else {
        return Err(Refusal::Unauthenticated);
    };
    let Some(shards) = ctx.control.shards() else { return Err(Refusal::Unauthenticated) };
    // Timeout and key-fetch errors refuse too (fail closed).
    let grants = shards.authorizer().api_grants(secret).await.map_err(|_| Refusal::Unauthenticated)?;
    if !has_any(&grants, Action::Api) {
        return Err(Refusal::Unauthenticated);
    }
    Ok(Caller { token: "jwt".into(), grants })
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
    let action = needed(req.method());
    let who = identify(&ctx, &api.tokens, authorization).await.and_then(|caller| {
        // Route-less check here; the handlers check the route itself.
        if has_any(&caller.grants, action) { Ok(caller) } else { Err(Refusal::Forbidden) }
    });
    match who {
        Ok(caller) => {
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
            ApiError(StatusCode::FORBIDDEN, "this token may not do that".into()).into_response()
        }
    }
}

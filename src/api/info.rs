//! `GET /v1/info` and `POST /v1/reload`.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, Ctx};
use crate::proto::permissions::Action;

#[derive(Debug, Serialize, ToSchema)]
pub struct LastReload {
    pub at_unix: u64,
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub shards: usize,
    /// Hex SHA-256 of the configuration file as last loaded.
    pub config_sha256: String,
    pub routes: usize,
    pub api_routes: usize,
    /// The last reload (SIGHUP or `POST /v1/reload`) since start; none yet: null.
    pub last_reload: Option<LastReload>,
}

pub(crate) fn info_of(ctx: &Ctx) -> Info {
    let c = &ctx.control;
    Info {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: c.uptime().as_secs(),
        shards: c.shards().map_or(0, |s| s.count()),
        config_sha256: c.checksum(),
        routes: c.running().routes.routes().len(),
        api_routes: c.api_route_count(),
        last_reload: c.last_reload().map(|r| LastReload { at_unix: r.at_unix, ok: r.ok, error: r.error }),
    }
}

/// The relay: version, uptime, shards, configuration checksum, the last reload.
#[utoipa::path(get, path = "/v1/info", tag = "relay",
    responses((status = 200, body = Info), (status = 401)), security(("bearer" = [])))]
pub async fn info(State(ctx): State<Ctx>) -> Json<Info> {
    Json(info_of(&ctx))
}

/// Reloads the configuration file, as SIGHUP does (the API's routes stay). 200 with the new
/// `/v1/info`, or 422 with why the file was rejected (the running configuration stays).
#[utoipa::path(post, path = "/v1/reload", tag = "relay",
    responses((status = 200, body = Info), (status = 422), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn reload(State(ctx): State<Ctx>, Extension(caller): Extension<Caller>) -> Result<Json<Info>, ApiError> {
    // A reload touches every route: only a grant on "*" may.
    if !caller.may_everywhere(Action::ApiAdmin) {
        return Err(ApiError(StatusCode::FORBIDDEN, "a reload needs api_admin on every route".into()));
    }
    let control = ctx.control.clone();
    let result = tokio::task::spawn_blocking(move || control.reload_file().map(|_| ()))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "the reload did not finish".into()))?;
    match result {
        Ok(()) => {
            tracing::info!("configuration reloaded through the control API");
            Ok(Json(info_of(&ctx)))
        }
        Err(e) => {
            tracing::error!(error = %e, "reload through the control API rejected; the running configuration stays");
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
        }
    }
}

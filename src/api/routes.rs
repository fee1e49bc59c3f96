//! `/v1/routes`: every route in force; the API's own ones created, replaced, patched and
//! deleted one at a time (`control::Control`). The URL's rest is the route's path
//! (`/v1/routes/site1/cam7` is `/site1/cam7`); bodies have the keys of a `[[route]]` table.
//! Camera passwords are never returned.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, Ctx};
use crate::config::{Route, RouteConfig, Sharing};
use crate::control::Source;
use crate::proto::permissions::Action;

/// A route as the API shows it: the camera URL without credentials, its user shown, its
/// password never.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteView {
    pub path: String,
    /// `file` (the configuration file's: read-only here) or `api`.
    pub source: &'static str,
    /// The camera URL without credentials.
    pub upstream: String,
    pub upstream_user: Option<String>,
    /// `"redacted"` when the route has a camera password.
    pub upstream_password: Option<&'static str>,
    /// `shared` or `passthrough`.
    pub mode: &'static str,
    pub users: Option<Vec<String>>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub linger_secs: Option<u64>,
    pub always_on: bool,
    pub gop_cache: bool,
    /// The fallback camera's URL without credentials.
    pub fallback: Option<String>,
}

impl RouteView {
    pub fn new(route: &Route, source: Source) -> RouteView {
        let shared = route.shared();
        RouteView {
            path: route.path.clone(),
            source: match source {
                Source::File => "file",
                Source::Api => "api",
            },
            upstream: route.upstream_url.clone(),
            upstream_user: route.credentials.as_ref().map(|c| c.user.clone()),
            upstream_password: route.credentials.as_ref().filter(|c| !c.pass.is_empty()).map(|_| "redacted"),
            mode: match route.sharing {
                Sharing::Shared(_) => "shared",
                Sharing::Passthrough => "passthrough",
            },
            users: route.users.clone(),
            allow: route.acl.allow.iter().map(|n| n.to_string()).collect(),
            deny: route.acl.deny.iter().map(|n| n.to_string()).collect(),
            linger_secs: shared.map(|s| s.linger.as_secs()),
            always_on: shared.is_some_and(|s| s.always_on),
            gop_cache: shared.is_some_and(|s| s.gop_cache),
            fallback: route.fallback.as_ref().map(|f| f.url.clone()),
        }
    }
}

/// `site1/cam7` (the URL's rest) as a route path: `/site1/cam7`, no trailing slash.
fn route_path(rest: &str) -> String {
    match rest.trim_matches('/') {
        "" => "/".to_owned(),
        p => format!("/{p}"),
    }
}

fn find(ctx: &Ctx, path: &str) -> Result<RouteView, ApiError> {
    ctx.control
        .routes()
        .into_iter()
        .find(|e| e.route.path == path)
        .map(|e| RouteView::new(&e.route, e.source))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no route {path:?}")))
}

/// A JSON body as a `[[route]]` table for `path`: its `path` key, if any, must name the same.
fn body_object(body: &[u8], path: &str) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(bad("body: a JSON object with the keys of a [[route]] table".into()));
    };
    match map.get("path") {
        Some(serde_json::Value::String(p)) if route_path(p) != path => {
            return Err(bad(format!("body path {p:?} is not the URL's route {path:?}")));
        }
        Some(serde_json::Value::String(_)) | None => {}
        Some(_) => return Err(bad("body: path must be a string".into())),
    }
    map.insert("path".into(), serde_json::Value::String(path.to_owned()));
    Ok(map)
}

fn to_config(map: serde_json::Map<String, serde_json::Value>) -> Result<RouteConfig, ApiError> {
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")))
}

/// Runs a route change off the runtime's thread (it saves a file and syncs it).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "the change did not finish".into()))
}

/// Every route in force, the file's and the API's, by path.
#[utoipa::path(get, path = "/v1/routes", tag = "routes",
    responses((status = 200, body = Vec<RouteView>), (status = 401), (status = 429)),
    security(("bearer" = [])))]
pub async fn list(State(ctx): State<Ctx>, Extension(caller): Extension<Caller>) -> Json<Vec<RouteView>> {
    Json(
        ctx.control
            .routes()
            .iter()
            .filter(|e| caller.may(Action::Api, &e.route.path))
            .map(|e| RouteView::new(&e.route, e.source))
            .collect(),
    )
}

/// One route.
#[utoipa::path(get, path = "/v1/routes/{path}", tag = "routes",
    params(("path" = String, Path, description = "the route's path without its leading slash: site1/cam7")),
    responses((status = 200, body = RouteView), (status = 404), (status = 401)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(rest): Path<String>,
) -> Result<Json<RouteView>, ApiError> {
    let path = route_path(&rest);
    // A route the caller may not see is as absent as one that does not exist.
    if !caller.may(Action::Api, &path) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no route {path}")));
    }
    find(&ctx, &path).map(Json)
}

/// Creates or replaces an API route (201 created, 200 replaced). The body has the keys of a
/// `[[route]]` table (`path` may be left out) and is validated as the file's routes are; the
/// change applies to this route alone.
#[utoipa::path(put, path = "/v1/routes/{path}", tag = "routes",
    params(("path" = String, Path, description = "the route's path without its leading slash")),
    request_body = RouteConfig,
    responses((status = 201, body = RouteView), (status = 200, body = RouteView),
        (status = 400, description = "not JSON, or a path other than the URL's"),
        (status = 409, description = "a route of the configuration file, or no [api] state_dir"),
        (status = 422, description = "the route does not validate"), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn put(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RouteView>), ApiError> {
    let path = route_path(&rest);
    if !caller.may(Action::ApiAdmin, &path) {
        return Err(ApiError::outside(&path));
    }
    let config = to_config(body_object(&body, &path)?)?;
    let control = ctx.control.clone();
    let created = blocking(move || control.put_route(config)).await??;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(find(&ctx, &path)?)))
}

/// Changes some keys of an API route (a JSON merge patch of its `[[route]]` table: a key set
/// to `null` goes back to its default). Leaving `upstream` out keeps the camera's credentials.
#[utoipa::path(patch, path = "/v1/routes/{path}", tag = "routes",
    params(("path" = String, Path, description = "the route's path without its leading slash")),
    request_body(content = Object, description = "keys of a [[route]] table"),
    responses((status = 200, body = RouteView), (status = 404), (status = 409), (status = 422),
        (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn patch(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<RouteView>, ApiError> {
    let path = route_path(&rest);
    if !caller.may(Action::ApiAdmin, &path) {
        return Err(ApiError::outside(&path));
    }
    let changes = body_object(&body, &path)?;
    let current = ctx.control.api_route_config(&path)?;
    let serde_json::Value::Object(mut map) =
        serde_json::to_value(&current).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    else {
        return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "route is not an object".into()));
    };
    for (k, v) in changes {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    // An absent `users` serialises as null: drop nulls so defaults apply.
    map.retain(|_, v| !v.is_null());
    let config = to_config(map)?;
    let control = ctx.control.clone();
    blocking(move || control.put_route(config)).await??;
    Ok(Json(find(&ctx, &path)?))
}

/// Deletes an API route: its viewers end cleanly (`route_removed`), new ones get 404.
#[utoipa::path(delete, path = "/v1/routes/{path}", tag = "routes",
    params(("path" = String, Path, description = "the route's path without its leading slash")),
    responses((status = 204), (status = 404), (status = 409), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(rest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let path = route_path(&rest);
    if !caller.may(Action::ApiAdmin, &path) {
        return Err(ApiError::outside(&path));
    }
    let control = ctx.control.clone();
    blocking(move || control.delete_route(&path)).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_urls_rest_is_the_route_path() {
        assert_eq!(route_path("site1/cam7"), "/site1/cam7");
        assert_eq!(route_path("site1/cam7/"), "/site1/cam7");
        assert_eq!(route_path(""), "/");
        assert!(body_object(br#"{"path":"/other","upstream":"rtsp://h/x"}"#, "/a").is_err());
        let m = body_object(br#"{"upstream":"rtsp://h/x"}"#, "/a").unwrap();
        assert_eq!(m["path"], "/a");
        assert!(body_object(b"[1]", "/a").is_err() && body_object(b"{", "/a").is_err());
    }
}

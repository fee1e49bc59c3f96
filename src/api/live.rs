//! What runs now, asked of the shards through their mailboxes: `GET /v1/cameras`, `GET
//! /v1/sessions`, `DELETE /v1/sessions/{id}`. Every shard is asked at once and given
//! [`SHARD_ANSWER_DEADLINE`] to answer; a shard that has not answered by then is left out and
//! counted in `shards_unanswered` (the API never waits on a shard longer, and never holds one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, Ctx, SHARD_ANSWER_DEADLINE};
use crate::proto::permissions::Action;
use crate::shard::ShardHandle;
use crate::shard::snapshot::{CameraSnapshot, Query, SessionSnapshot};

/// Asks every shard `make(reply)` and gathers the answers that come by the deadline; also
/// returns how many shards did not answer.
pub(crate) async fn gather<T: Send + 'static>(
    shards: &ShardHandle,
    make: impl Fn(tokio::sync::oneshot::Sender<T>) -> Query,
) -> (Vec<T>, usize) {
    let deadline = tokio::time::Instant::now() + SHARD_ANSWER_DEADLINE;
    let mut waiting = Vec::with_capacity(shards.count());
    for shard in 0..shards.count() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if shards.ask(shard, make(tx)) {
            waiting.push(rx);
        }
    }
    let mut missing = shards.count() - waiting.len();
    let mut answers = Vec::with_capacity(waiting.len());
    for rx in waiting {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(a)) => answers.push(a),
            _ => missing += 1,
        }
    }
    (answers, missing)
}

/// One route's camera.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CameraView {
    pub route: String,
    /// `shared` (one camera session for every viewer) or `passthrough` (one per viewer).
    pub mode: &'static str,
    /// `idle`, `connecting`, `ready`, `retrying` or `failed`. Passthrough routes: `idle` with
    /// no viewer, `ready` while at least one viewer's camera connection is open, else
    /// `connecting`.
    pub state: &'static str,
    /// When the state was entered (Unix seconds; shared cameras only).
    pub since_unix: Option<u64>,
    /// How the last failed camera connection ended, in words, and when.
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
    pub reconnects: u64,
    pub viewers: usize,
    /// Open camera connections: 0 or 1 for a shared route, one per connected viewer for a
    /// passthrough one.
    pub camera_connections: usize,
    /// Bits per second since the previous `/v1/cameras` (0 on the first).
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    /// Codecs from the camera's SDP, `H264/90000` (shared routes).
    pub codecs: Vec<String>,
    /// `primary` (the route's upstream) or `fallback` (its `fallback` camera): which one is
    /// live (shared routes; passthrough routes say `primary`).
    pub source: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CamerasReply {
    pub cameras: Vec<CameraView>,
    /// Shards that did not answer in time (their cameras are missing or incomplete).
    pub shards_unanswered: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsReply {
    pub sessions: Vec<SessionSnapshot>,
    pub shards_unanswered: usize,
}

/// Byte counters seen at the previous query, per route, to turn totals into rates.
#[derive(Default)]
pub struct RateMeter {
    last: Mutex<HashMap<String, (Instant, u64, u64)>>,
}

impl RateMeter {
    /// Bits per second in and out since the previous sample of `route`.
    fn rate(&self, route: &str, now: Instant, bytes_in: u64, bytes_out: u64) -> (u64, u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.insert(route.to_owned(), (now, bytes_in, bytes_out));
        let Some((at, i, o)) = prev else { return (0, 0) };
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs < 0.05 {
            return (0, 0);
        }
        // Counters of a camera replaced by a reload start again: no negative rate.
        let bps = |now: u64, before: u64| (now.saturating_sub(before) as f64 * 8.0 / secs) as u64;
        (bps(bytes_in, i), bps(bytes_out, o))
    }

    fn forget_others(&self, keep: &HashMap<String, CameraView>) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| keep.contains_key(k));
    }
}

/// The cameras of every route in force.
pub(crate) async fn camera_views(ctx: &Ctx) -> (Vec<CameraView>, usize) {
    let Some(shards) = ctx.control.shards() else { return (Vec::new(), 0) };
    let (answers, missing) = gather(shards, Query::Cameras).await;
    let mut merged: HashMap<String, CameraSnapshot> = HashMap::new();
    for snap in answers.into_iter().flatten() {
        match merged.get_mut(&snap.route) {
            None => {
                merged.insert(snap.route.clone(), snap);
            }
            Some(e) => {
                if snap.shared.is_some() {
                    e.shared = snap.shared;
                }
                e.passthrough_sessions += snap.passthrough_sessions;
                e.passthrough_connected += snap.passthrough_connected;
                e.bytes_in += snap.bytes_in;
                e.bytes_out += snap.bytes_out;
                e.replica_viewers += snap.replica_viewers;
            }
        }
    }
    let now = Instant::now();
    let mut views: HashMap<String, CameraView> = HashMap::new();
    for entry in ctx.control.routes() {
        let route = &entry.route;
        let snap = merged.remove(&route.path);
        let (bytes_in, bytes_out) = snap.as_ref().map_or((0, 0), |s| (s.bytes_in, s.bytes_out));
        let (bitrate_in_bps, bitrate_out_bps) = ctx.rates.rate(&route.path, now, bytes_in, bytes_out);
        let view = match (route.shared(), snap) {
            (Some(_), snap) => {
                // Viewers served by replicas of the route on other shards count as its own.
                let replica_viewers = snap.as_ref().map_or(0, |s| s.replica_viewers);
                let cam = snap.and_then(|s| s.shared);
                CameraView {
                    route: route.path.clone(),
                    mode: "shared",
                    state: cam.as_ref().map_or("idle", |c| c.state),
                    since_unix: cam.as_ref().map(|c| c.since_unix),
                    last_error: cam.as_ref().and_then(|c| c.last_error.clone()),
                    last_error_unix: cam.as_ref().and_then(|c| c.last_error_unix),
                    reconnects: cam.as_ref().map_or(0, |c| c.reconnects),
                    viewers: cam.as_ref().map_or(0, |c| c.viewers) + replica_viewers,
                    camera_connections: usize::from(
                        cam.as_ref().is_some_and(|c| matches!(c.state, "connecting" | "ready")),
                    ),
                    bitrate_in_bps,
                    bitrate_out_bps,
                    source: cam.as_ref().map_or("primary", |c| c.source),
                    codecs: cam.map(|c| c.codecs).unwrap_or_default(),
                }
            }
            (None, snap) => {
                let (sessions, connected) = snap.map_or((0, 0), |s| (s.passthrough_sessions, s.passthrough_connected));
                CameraView {
                    route: route.path.clone(),
                    mode: "passthrough",
                    state: match (sessions, connected) {
                        (0, _) => "idle",
                        (_, 0) => "connecting",
                        _ => "ready",
                    },
                    since_unix: None,
                    last_error: None,
                    last_error_unix: None,
                    reconnects: 0,
                    viewers: sessions,
                    camera_connections: connected,
                    bitrate_in_bps,
                    bitrate_out_bps,
                    codecs: Vec::new(),
                    source: "primary",
                }
            }
        };
        views.insert(route.path.clone(), view);
    }
    ctx.rates.forget_others(&views);
    let mut out: Vec<CameraView> = views.into_values().collect();
    out.sort_by(|a, b| a.route.cmp(&b.route));
    (out, missing)
}

pub(crate) async fn session_views(ctx: &Ctx) -> (Vec<SessionSnapshot>, usize) {
    let Some(shards) = ctx.control.shards() else { return (Vec::new(), 0) };
    let (answers, missing) = gather(shards, Query::Sessions).await;
    let mut all: Vec<SessionSnapshot> = answers.into_iter().flatten().collect();
    all.sort_by(|a, b| a.since_unix.cmp(&b.since_unix).then_with(|| a.id.cmp(&b.id)));
    (all, missing)
}

/// Whether `caller` may `action` a session: by its route; one with no route yet only with the
/// action on every route.
pub(crate) fn visible(caller: &Caller, action: Action, s: &SessionSnapshot) -> bool {
    match &s.route {
        Some(route) => caller.may(action, route),
        None => caller.may_everywhere(action),
    }
}

/// Every route's camera: state, since when, the last error, reconnects, viewers, bitrates,
/// codecs.
#[utoipa::path(get, path = "/v1/cameras", tag = "live",
    responses((status = 200, body = CamerasReply), (status = 401)), security(("bearer" = [])))]
pub async fn cameras(State(ctx): State<Ctx>, Extension(caller): Extension<Caller>) -> Json<CamerasReply> {
    let (mut cameras, shards_unanswered) = camera_views(&ctx).await;
    cameras.retain(|c| caller.may(Action::Api, &c.route));
    Json(CamerasReply { cameras, shards_unanswered })
}

/// Every viewer session.
#[utoipa::path(get, path = "/v1/sessions", tag = "live",
    responses((status = 200, body = SessionsReply), (status = 401)), security(("bearer" = [])))]
pub async fn sessions(State(ctx): State<Ctx>, Extension(caller): Extension<Caller>) -> Json<SessionsReply> {
    let (mut sessions, shards_unanswered) = session_views(&ctx).await;
    sessions.retain(|s| visible(&caller, Action::Api, s));
    Json(SessionsReply { sessions, shards_unanswered })
}

/// Ends one viewer session (`relay_sessions_total{outcome="kicked"}`); it may come back.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "live",
    params(("id" = String, Path, description = "a session id from /v1/sessions: 0-17")),
    responses((status = 204), (status = 404), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn end_session(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no session {id:?}"));
    // A caller limited to some routes may end only their sessions: look the session up first.
    if !caller.may_everywhere(Action::ApiAdmin) {
        let (sessions, _) = session_views(&ctx).await;
        let session = sessions.iter().find(|s| s.id == id).ok_or_else(not_found)?;
        if !visible(&caller, Action::Api, session) {
            return Err(not_found());
        }
        if !visible(&caller, Action::ApiAdmin, session) {
            return Err(ApiError::outside(session.route.as_deref().unwrap_or("this session")));
        }
    }
    let (shard, number) = id.split_once('-').ok_or_else(not_found)?;
    let (Ok(shard), Ok(number)) = (shard.parse::<usize>(), number.parse::<u64>()) else {
        return Err(not_found());
    };
    let shards = ctx.control.shards().ok_or_else(not_found)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !shards.ask(shard, Query::EndSession { id: number, reply: tx }) {
        return Err(not_found());
    }
    match tokio::time::timeout(SHARD_ANSWER_DEADLINE, rx).await {
        Ok(Ok(true)) => Ok(StatusCode::NO_CONTENT),
        Ok(Ok(false)) => Err(not_found()),
        _ => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, format!("shard {shard} did not answer in time"))),
    }
}

//! `/status`: one page for people. With a read token in `Authorization: Bearer` it is the
//! status itself, rendered here (cameras with their state, viewers and bitrate, recent
//! failures); without one, a browser gets the same page with a login form. The page's script
//! keeps the token in memory only (never in a URL, cookie or storage) and fetches `/status`
//! again with it every two seconds.

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Ctx;
use super::auth::Caller;
use super::live::{CameraView, camera_views, session_views};
use crate::proto::permissions::Action;

const PAGE: &str = include_str!("../../assets/status/status.html");
/// Failures listed under "Recent failures".
const RECENT_FAILURES: usize = 20;

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

/// The page with its login form and nothing else (no token, or none yet).
pub fn login_page() -> Response {
    let mut r = html(StatusCode::UNAUTHORIZED, PAGE.to_owned());
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn kbps(bps: u64) -> String {
    format!("{:.0} kbit/s", bps as f64 / 1000.0)
}

fn ago(unix: Option<u64>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match unix {
        Some(t) => format!("{} s ago", now.saturating_sub(t)),
        None => "-".into(),
    }
}

fn render(cameras: &[CameraView], sessions: usize, info: &super::info::Info, unanswered: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let down = cameras.iter().filter(|c| matches!(c.state, "retrying" | "failed")).count();
    let _ = write!(
        s,
        "<p>version {} · up {} s · {} shards · {} routes · {} viewers · <span class=\"{}\">{} cameras down</span>{}</p>",
        escape(info.version),
        info.uptime_secs,
        info.shards,
        cameras.len(),
        sessions,
        if down > 0 { "failed" } else { "ready" },
        down,
        if unanswered > 0 { format!(" · {unanswered} shards did not answer") } else { String::new() }
    );
    s.push_str("<h2>Cameras</h2><table id=\"cameras\"><tr><th>route</th><th>state</th><th>since</th><th>viewers</th><th>in</th><th>out</th><th>codecs</th><th>last error</th></tr>");
    for c in cameras {
        let _ = write!(
            s,
            "<tr data-route=\"{r}\"><td>{r}</td><td class=\"state {st}\">{st}</td><td>{since}</td><td class=\"viewers\">{v}</td><td>{i}</td><td>{o}</td><td>{codecs}</td><td>{err}</td></tr>",
            r = escape(&c.route),
            st = c.state,
            since = ago(c.since_unix),
            v = c.viewers,
            i = kbps(c.bitrate_in_bps),
            o = kbps(c.bitrate_out_bps),
            codecs = escape(&c.codecs.join(", ")),
            err = escape(c.last_error.as_deref().unwrap_or("")),
        );
    }
    s.push_str("</table><h2>Recent failures</h2>");
    let mut failures: Vec<&CameraView> = cameras.iter().filter(|c| c.last_error.is_some()).collect();
    failures.sort_by_key(|c| std::cmp::Reverse(c.last_error_unix));
    if failures.is_empty() {
        s.push_str("<p class=\"muted\">none since start</p>");
    } else {
        s.push_str("<table id=\"failures\"><tr><th>when</th><th>route</th><th>what</th></tr>");
        for c in failures.into_iter().take(RECENT_FAILURES) {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ago(c.last_error_unix),
                escape(&c.route),
                escape(c.last_error.as_deref().unwrap_or(""))
            );
        }
        s.push_str("</table>");
    }
    s
}

/// The status page, for a caller with a read token.
pub async fn page(State(ctx): State<Ctx>, Extension(caller): Extension<Caller>) -> Response {
    let (mut cameras, unanswered) = camera_views(&ctx).await;
    cameras.retain(|c| caller.may(Action::Api, &c.route));
    let (mut sessions, _) = session_views(&ctx).await;
    sessions.retain(|s| super::live::visible(&caller, Action::Api, s));
    let info = super::info::info_of(&ctx);
    let live = render(&cameras, sessions.len(), &info, unanswered);
    let body = PAGE.replacen("<div id=\"live\" hidden>LIVE</div>", &format!("<div id=\"live\">{live}</div>"), 1);
    html(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_from_cameras_and_routes_is_escaped() {
        assert_eq!(super::escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
        assert!(super::PAGE.contains("<div id=\"live\" hidden>LIVE</div>"), "the placeholder the page is filled at");
    }
}

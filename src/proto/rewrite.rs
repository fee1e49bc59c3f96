//! URL rewriting between the viewer's view of a route and the camera's (DESIGN.md §2).
//!
//! Requests going up get their request URI mapped client→upstream (track suffixes such as
//! `/trackID=1` kept); messages coming down get `Content-Base`, `Content-Location`, `RTP-Info`
//! URLs and absolute SDP `a=control:` lines mapped upstream→client.

use super::rtsp::Message;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("not an rtsp:// URL: {0}")]
    NotRtspUrl(String),
}

/// The two ends of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlMap {
    _todo: (),
}

impl UrlMap {
    /// `client_base`: the route as the viewer addresses it (`rtsp://relay:8080/cam1`, scheme and
    /// authority as the viewer spoke them). `upstream_base`: the camera URL without credentials.
    pub fn new(client_base: &str, upstream_base: &str) -> Result<Self, RewriteError> {
        let _ = (client_base, upstream_base);
        todo!("implemented by the rewrite work")
    }

    /// Maps a viewer's request URI to the camera's (`*` and non-matching URIs handled sanely).
    pub fn to_upstream(&self, uri: &str) -> String {
        let _ = uri;
        todo!()
    }

    /// Maps a camera URL to the viewer's.
    pub fn to_client(&self, url: &str) -> String {
        let _ = url;
        todo!()
    }
}

/// Rewrites a viewer→camera message (request URI of a request; nothing else carries URLs).
pub fn rewrite_to_upstream(msg: &mut Message, map: &UrlMap) {
    let _ = (msg, map);
    todo!()
}

/// Rewrites a camera→viewer message: a request's URI, `Content-Base`, `Content-Location`,
/// `RTP-Info` `url=` entries and absolute `a=control:` lines of an SDP body. The body length
/// changes are carried by [`Message::write_to`], which writes `Content-Length` from the body.
pub fn rewrite_to_client(msg: &mut Message, map: &UrlMap) {
    let _ = (msg, map);
    todo!()
}

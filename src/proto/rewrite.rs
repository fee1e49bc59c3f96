//! URL rewriting between the viewer's view of a route and the camera's (DESIGN.md §2).
//!
//! Requests going up get their request URI mapped client→upstream (track suffixes such as
//! `/trackID=1` kept); messages coming down get `Content-Base`, `Content-Location`, `RTP-Info`
//! URLs and absolute SDP `a=control:` lines mapped upstream→client.

use super::rtsp::{Message, StartLine};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("not an rtsp:// URL: {0}")]
    NotRtspUrl(String),
}

/// The two ends of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlMap {
    /// `rtsp://relay:8080`, as the viewer spoke it.
    client_origin: String,
    /// The route path without a trailing `/` (empty for a route at `/`).
    client_path: String,
    /// `rtsp://10.0.0.5:554`.
    upstream_origin: String,
    /// The camera path without a trailing `/`.
    upstream_path: String,
    upstream_query: Option<String>,
}

/// An absolute URL cut into origin (`scheme://authority`), path and query.
struct Parts<'a> {
    origin: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

fn split_url(url: &str) -> Option<Parts<'_>> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if !scheme.eq_ignore_ascii_case("rtsp")
        && !scheme.eq_ignore_ascii_case("rtsps")
        && !scheme.eq_ignore_ascii_case("rtspu")
    {
        return None;
    }
    let after = scheme_end + 3;
    let authority_end = url[after..].find(['/', '?']).map_or(url.len(), |i| after + i);
    let (path, query) = match url[authority_end..].split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&url[authority_end..], None),
    };
    Some(Parts { origin: &url[..authority_end], path, query })
}

/// Path and query of a viewer's request URI, absolute (`rtsp://relay/cam1?x`) or path-only
/// (`/cam1?x`); `None` for anything else.
fn request_path(uri: &str) -> Option<(&str, Option<&str>)> {
    match split_url(uri) {
        Some(p) => Some((p.path, p.query)),
        None if uri.starts_with('/') => Some(uri.split_once('?').map_or((uri, None), |(p, q)| (p, Some(q)))),
        None => None,
    }
}

/// `rest` of `path` after `prefix`, if `path` is `prefix` or continues it with `/`.
fn strip_path<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/') || prefix.is_empty()).then_some(rest)
}

impl UrlMap {
    /// `client_base`: the route as the viewer addresses it (`rtsp://relay:8080/cam1`, scheme and
    /// authority as the viewer spoke them). `upstream_base`: the camera URL without credentials.
    pub fn new(client_base: &str, upstream_base: &str) -> Result<Self, RewriteError> {
        let c = split_url(client_base).ok_or_else(|| RewriteError::NotRtspUrl(client_base.to_owned()))?;
        let u = split_url(upstream_base).ok_or_else(|| RewriteError::NotRtspUrl(upstream_base.to_owned()))?;
        Ok(UrlMap {
            client_origin: c.origin.to_owned(),
            client_path: c.path.trim_end_matches('/').to_owned(),
            upstream_origin: u.origin.to_owned(),
            upstream_path: u.path.trim_end_matches('/').to_owned(),
            upstream_query: u.query.filter(|q| !q.is_empty()).map(str::to_owned),
        })
    }

    /// Maps a viewer's request URI to the camera's: the route path becomes the camera path,
    /// track suffixes (`/trackID=1`) stay. A query that came from a camera URL (it starts with
    /// the route's own upstream query, or the route has none) is kept; a viewer's own query
    /// (`?token=`) never replaces the camera's.
    pub fn to_upstream(&self, uri: &str) -> String {
        if uri == "*" {
            return uri.to_owned();
        }
        let Some((path, query)) = request_path(uri) else { return uri.to_owned() };
        let query = match (&self.upstream_query, query) {
            (Some(own), Some(q)) if q.starts_with(own.as_str()) => Some(q),
            (Some(own), _) => Some(own.as_str()),
            (None, q) => q,
        };
        let mut out = self.upstream_origin.clone();
        match strip_path(path, &self.client_path) {
            Some(rest) => {
                out.push_str(&self.upstream_path);
                out.push_str(rest);
            }
            // Outside the route: the same path on the camera.
            None => out.push_str(path),
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// Maps a camera URL to the viewer's. The camera may name itself by another address than
    /// the route's (an internal IP, port 554 left out), so only the path decides.
    pub fn to_client(&self, url: &str) -> String {
        self.to_client_noting(url, &mut Vec::new())
    }

    /// [`UrlMap::to_client`], adding to `outside` the path of a camera URL outside the route
    /// (it maps to the same path on the relay, and the viewer may then ask for it).
    fn to_client_noting(&self, url: &str, outside: &mut Vec<String>) -> String {
        let Some(p) = split_url(url) else { return url.to_owned() };
        let mut out = self.client_origin.clone();
        match strip_path(p.path, &self.upstream_path) {
            Some(rest) => {
                out.push_str(&self.client_path);
                out.push_str(rest);
                if self.client_path.is_empty() && rest.is_empty() && p.query.is_none() {
                    out.push('/');
                }
            }
            None => {
                // An RTP-Info URL runs on into `;seq=`: the path the viewer could ask for ends there.
                outside.push(p.path.split(';').next().unwrap_or(p.path).to_owned());
                out.push_str(p.path);
            }
        }
        if let Some(q) = p.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// Whether a viewer's request URI addresses this route (or is `*`). Only those, and URLs
    /// the camera itself handed out, go to the camera: the relay's camera credentials must not
    /// open other paths of the device (another channel of an NVR, say).
    pub fn covers(&self, uri: &str) -> bool {
        if uri == "*" {
            return true;
        }
        request_path(uri).is_some_and(|(path, _)| strip_path(path, &self.client_path).is_some())
    }
}

/// Maps every absolute URL in `value` to the viewer's. Each `rtsp://` (or `rtsps://`) starts
/// a URL that ends at whitespace or at the next one, so a malformed value holding several (found
/// by fuzzing) has each of them rewritten; the bytes between are kept.
fn map_urls(value: &str, map: &UrlMap, outside: &mut Vec<String>) -> String {
    let bytes = value.as_bytes();
    // One pass over the value, no lowered copy: this runs on every Content-Base, RTP-Info and
    // SDP control line.
    let mut starts = (0..bytes.len()).filter(|&i| url_starts(&bytes[i..])).peekable();
    let mut out = String::with_capacity(value.len() + 16);
    let mut copied = 0;
    while let Some(start) = starts.next() {
        if start < copied {
            continue;
        }
        let next = starts.peek().copied().unwrap_or(value.len());
        let end = value[start..next].find(char::is_whitespace).map_or(next, |w| start + w);
        out.push_str(&value[copied..start]);
        out.push_str(&map.to_client_noting(&value[start..end], outside));
        copied = end;
    }
    out.push_str(&value[copied..]);
    out
}

/// `rtsp://` or `rtsps://`, in any case, at the start of `b`.
fn url_starts(b: &[u8]) -> bool {
    if b.len() < 7 || !b[..4].eq_ignore_ascii_case(b"rtsp") {
        return false;
    }
    let rest = if b[4].eq_ignore_ascii_case(&b's') { &b[5..] } else { &b[4..] };
    rest.starts_with(b"://")
}

/// Rewrites a viewer→camera message (request URI of a request; nothing else carries URLs).
pub fn rewrite_to_upstream(msg: &mut Message, map: &UrlMap) {
    if let StartLine::Request { uri, .. } = &mut msg.start {
        *uri = map.to_upstream(uri);
    }
}

/// Rewrites a camera→viewer message: a request's URI, `Content-Base`, `Content-Location`,
/// `Location`, `RTP-Info` `url=` entries and absolute `a=control:` lines of an SDP body. The body length
/// changes are carried by [`Message::write_to`], which writes `Content-Length` from the body.
/// Returns the paths of camera URLs outside the route that the message handed out.
pub fn rewrite_to_client(msg: &mut Message, map: &UrlMap) -> Vec<String> {
    let mut outside = Vec::new();
    if let StartLine::Request { uri, .. } = &mut msg.start {
        *uri = map.to_client_noting(uri, &mut outside);
    }
    for (name, value) in msg.headers.iter_mut() {
        // Location: a camera's redirect (3xx) must send the viewer back through the relay.
        if ["Content-Base", "Content-Location", "Location"].iter().any(|h| name.eq_ignore_ascii_case(h)) {
            *value = map_urls(value.trim(), map, &mut outside);
        } else if name.eq_ignore_ascii_case("RTP-Info") {
            // `url=...;seq=...;rtptime=...` entries: every absolute URL in the value is mapped
            // (the `url=` ones, and any a malformed value holds elsewhere); the rest is kept.
            *value = map_urls(value, map, &mut outside);
        }
    }
    let is_sdp = msg.header("Content-Type").is_some_and(|t| t.to_ascii_lowercase().contains("application/sdp"));
    if is_sdp || msg.body.windows(10).any(|w| w == b"a=control:") {
        if let Ok(sdp) = std::str::from_utf8(&msg.body) {
            let rewritten = rewrite_sdp(sdp, map, &mut outside);
            if rewritten != sdp {
                msg.body = bytes::Bytes::from(rewritten);
            }
        }
    }
    outside
}

/// Absolute `a=control:` lines rewritten; every other byte, line endings included, unchanged.
fn rewrite_sdp(sdp: &str, map: &UrlMap, outside: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let (content, ending) = match line.strip_suffix("\r\n") {
            Some(c) => (c, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(c) => (c, "\n"),
                None => (line, ""),
            },
        };
        match content.strip_prefix("a=control:") {
            Some(url) if url.contains("://") => {
                out.push_str("a=control:");
                out.push_str(&map_urls(url.trim(), map, outside));
                out.push_str(ending);
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtsp::{MessageLimits, parse_message};
    use proptest::prelude::*;

    fn map(upstream: &str) -> UrlMap {
        UrlMap::new("rtsp://127.0.0.1:8080/cam1", upstream).unwrap()
    }

    #[test]
    fn request_uris_map_to_the_camera_with_track_suffixes() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        let cases = [
            ("rtsp://127.0.0.1:8080/cam1", "rtsp://10.0.0.5:554/Streaming/Channels/101"),
            ("rtsp://localhost/cam1/", "rtsp://10.0.0.5:554/Streaming/Channels/101/"),
            ("rtsp://relay.example:80/cam1/trackID=1", "rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1"),
            ("rtsp://x/cam1?token=abc", "rtsp://10.0.0.5:554/Streaming/Channels/101?token=abc"),
            ("/cam1/stream=0", "rtsp://10.0.0.5:554/Streaming/Channels/101/stream=0"),
            ("rtsp://x/other/path", "rtsp://10.0.0.5:554/other/path"),
            ("rtsp://x/cam10", "rtsp://10.0.0.5:554/cam10"),
            ("*", "*"),
        ];
        for (from, to) in cases {
            assert_eq!(m.to_upstream(from), to, "{from}");
        }
    }

    #[test]
    fn a_route_query_survives_and_a_viewer_token_does_not_replace_it() {
        let m = map("rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        assert_eq!(m.to_upstream("rtsp://r/cam1"), "rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        assert_eq!(m.to_upstream("rtsp://r/cam1?token=x"), "rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        // Dahua's control URLs put the track after the query.
        let control = "rtsp://192.168.1.108:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0";
        let client = m.to_client(control);
        assert_eq!(client, "rtsp://127.0.0.1:8080/cam1?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0");
        assert_eq!(
            m.to_upstream(&client),
            "rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0"
        );
    }

    #[test]
    fn camera_urls_map_to_the_viewer_whatever_address_the_camera_uses() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        assert_eq!(m.to_client("rtsp://10.0.0.5/Streaming/Channels/101/"), "rtsp://127.0.0.1:8080/cam1/");
        assert_eq!(
            m.to_client(
                "rtsp://192.168.5.106:554/Streaming/Channels/101/trackID=1?transportmode=unicast&profile=Profile_1"
            ),
            "rtsp://127.0.0.1:8080/cam1/trackID=1?transportmode=unicast&profile=Profile_1"
        );
        assert_eq!(m.to_client("rtsp://10.0.0.5:554/elsewhere"), "rtsp://127.0.0.1:8080/elsewhere");
        assert_eq!(m.to_client("trackID=1"), "trackID=1");
        let root = UrlMap::new("rtsp://r:8080", "rtsp://cam/live").unwrap();
        assert_eq!(root.to_client("rtsp://cam/live"), "rtsp://r:8080/");
        assert_eq!(root.to_upstream("rtsp://r:8080/"), "rtsp://cam/live/");
    }

    fn fixture(name: &str) -> Message {
        let bytes = crate::test_fixtures::bytes(&format!("cameras/{name}"));
        parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0
    }

    /// Every absolute rtsp:// URL in a message.
    fn urls(text: &str) -> Vec<String> {
        text.match_indices("rtsp://")
            .map(|(i, _)| {
                text[i..].split(|c: char| c.is_whitespace() || c == ';' || c == ',').next().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn every_camera_fixture_rewrites_and_round_trips() {
        for (name, _) in crate::test_fixtures::dir("cameras") {
            let original = fixture(&name);
            let text = String::from_utf8_lossy(&original.to_bytes()).into_owned();
            // The route points at the camera's own base, as an operator would configure it.
            let Some(base) = original
                .header("Content-Base")
                .filter(|b| b.contains("://"))
                .map(str::to_owned)
                .or_else(|| urls(&text).first().cloned())
            else {
                continue;
            };
            let Some(camera) = split_url(&base) else { continue };
            let upstream = format!("{}{}", camera.origin, camera.path);
            let m = map(&upstream);
            let mut msg = original.clone();
            rewrite_to_client(&mut msg, &m);
            let out = String::from_utf8_lossy(&msg.to_bytes()).into_owned();
            assert!(!out.contains(camera.origin), "{name}: camera origin leaked:\n{out}");
            for (before, after) in urls(&text).iter().zip(urls(&out)) {
                assert!(after.starts_with("rtsp://127.0.0.1:8080/"), "{name}: {after}");
                assert_eq!(m.to_upstream(&after), m.to_upstream(&m.to_client(before)), "{name}");
                let back = m.to_upstream(&after);
                assert_eq!(
                    split_url(&back).unwrap().path,
                    split_url(before).unwrap().path,
                    "{name}: {before} -> {after} -> {back}"
                );
            }
            let reparsed = parse_message(&msg.to_bytes(), &MessageLimits::default()).unwrap().unwrap().0;
            assert_eq!(reparsed.body, msg.body, "{name}: Content-Length must follow the body");
            if name == "hikvision_describe.txt" {
                assert!(
                    out.contains(
                        "a=control:rtsp://127.0.0.1:8080/cam1/trackID=1?transportmode=unicast&profile=Profile_1\r\n"
                    ),
                    "{out}"
                );
                assert!(out.contains("Content-Base: rtsp://127.0.0.1:8080/cam1/\r\n"), "{out}");
            }
        }
    }

    #[test]
    fn several_urls_in_one_malformed_value_are_all_rewritten() {
        let m = map("rtsp://10.9.8.7:554/Streaming/Channels/101");
        let info = "url=rtsp://relay:8080//x/m   rtsp://10.9.8.7:554/Streaming/Channels/101  ov/trackID=2;seq=1";
        let out = map_urls(info, &m, &mut Vec::new());
        assert!(!out.contains("10.9.8.7"), "{out}");
        assert!(out.contains("   rtsp://127.0.0.1:8080/cam1  ov/trackID=2;seq=1"), "{out}");
        // Any case, either scheme; a bare "rtsp" or "rtsps:/" is text, not a URL.
        let info =
            "url=RTSP://10.9.8.7/Streaming/Channels/101/t1,url=Rtsps://10.9.8.7/Streaming/Channels/101/t2;rtsp rtsps:/";
        let out = map_urls(info, &m, &mut Vec::new());
        assert!(!out.contains("10.9.8.7"), "{out}");
        assert!(out.ends_with("/cam1/t2;rtsp rtsps:/"), "{out}");
    }

    #[test]
    fn only_the_route_and_urls_the_camera_handed_out_are_reachable() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        for uri in ["*", "rtsp://127.0.0.1:8080/cam1", "rtsp://h/cam1/trackID=1?x=1", "/cam1/", "rtsp://h/cam1?t=1"] {
            assert!(m.covers(uri), "{uri}");
        }
        for uri in ["rtsp://127.0.0.1:8080/Streaming/Channels/201", "rtsp://h/cam10", "rtsp://h/", "trackID=1", "/"] {
            assert!(!m.covers(uri), "{uri}");
        }
        let mut reply = Message::response(200, "OK");
        reply.set_header("Content-Base", "rtsp://10.0.0.5/Streaming/Channels/101/");
        reply.set_header("RTP-Info", "url=rtsp://10.0.0.5/audio/track2;seq=1");
        assert_eq!(rewrite_to_client(&mut reply, &m), vec!["/audio/track2".to_owned()]);
        assert_eq!(reply.header("RTP-Info"), Some("url=rtsp://127.0.0.1:8080/audio/track2;seq=1"));
    }

    #[test]
    fn a_camera_redirect_points_back_at_the_relay() {
        let mut m = Message::response(302, "Moved Temporarily");
        m.set_header("Location", "rtsp://10.0.0.5:554/Streaming/Channels/101/alt");
        rewrite_to_client(&mut m, &map("rtsp://10.0.0.5:554/Streaming/Channels/101"));
        assert_eq!(m.header("Location"), Some("rtsp://127.0.0.1:8080/cam1/alt"));
    }

    #[test]
    fn sdp_line_endings_and_relative_controls_are_untouched() {
        let m = map("rtsp://cam/s");
        let sdp = "v=0\na=control:*\nm=video 0 RTP/AVP 96\na=control:trackID=1\r\na=control:rtsp://cam/s/track2\n";
        assert_eq!(
            rewrite_sdp(sdp, &m, &mut Vec::new()),
            "v=0\na=control:*\nm=video 0 RTP/AVP 96\na=control:trackID=1\r\na=control:rtsp://127.0.0.1:8080/cam1/track2\n"
        );
        let info = "url=rtsp://cam/s/t1;seq=1;rtptime=2, url=trackID=2;seq=3";
        assert_eq!(
            map_urls(info, &m, &mut Vec::new()),
            "url=rtsp://127.0.0.1:8080/cam1/t1;seq=1;rtptime=2, url=trackID=2;seq=3"
        );
    }

    proptest! {
        #[test]
        fn camera_urls_round_trip(
            track in "(/[a-zA-Z0-9=_]{1,12}){0,2}/?",
            query in proptest::option::of("[a-z]{1,6}=[a-z0-9]{1,6}(&[a-z]{1,6}=[a-z0-9]{1,6}){0,2}"),
            host in "(10\\.0\\.0\\.5|192\\.168\\.1\\.9|cam\\.local)(:554)?",
        ) {
            let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
            let camera = format!("rtsp://{host}/Streaming/Channels/101{track}{}", query.as_deref().map(|q| format!("?{q}")).unwrap_or_default());
            let client = m.to_client(&camera);
            prop_assert!(client.starts_with("rtsp://127.0.0.1:8080/cam1"));
            let back = m.to_upstream(&client);
            let expected = format!("rtsp://10.0.0.5:554/Streaming/Channels/101{track}{}", query.as_deref().map(|q| format!("?{q}")).unwrap_or_default());
            prop_assert_eq!(back, expected);
        }
    }
}

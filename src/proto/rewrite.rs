//! URL rewriting between the viewer's view of a route and the camera's.
//!
//! Requests going up get their request URI mapped client→upstream (track suffixes such as
//! `/trackID=1` kept); messages coming down get `Content-Base`, `Content-Location`, `RTP-Info`
//! URLs and absolute SDP `a=control:` lines mapped upstream→client.

use super::rtsp::{Message, StartLine};
use super::rtsp_url::RtspUrl;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("not an rtsp:// URL: {0}")]
    NotRtspUrl(String),
}

/// Why a viewer's request URI is not sent to the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriRefusal {
    /// Not an `rtsp://` URL or absolute path the relay can confine (bad characters, encoded
    /// slashes, `*` for a method other than OPTIONS): `400`.
    #[error("request URI not understood")]
    Malformed,
    /// A path outside the route that the camera did not hand out: `404`.
    #[error("request URI outside the route")]
    OutsideRoute,
}

/// A camera URL the camera itself handed out in a session (Content-Base, an SDP control,
/// RTP-Info, a redirect): its path and query, as the camera spelled them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOut {
    pub path: String,
    pub query: Option<String>,
}

impl HandedOut {
    /// The path and query of a camera URL as a viewer may ask for it.
    pub fn of(url: &str) -> Option<HandedOut> {
        let p = rtsp_url(url)?;
        // An RTP-Info URL runs on into `;seq=`: the URL the viewer could ask for ends there.
        let query = p.query.map(|q| q.split(';').next().unwrap_or(q).to_owned());
        let path = if query.is_some() { p.path } else { p.path.split(';').next().unwrap_or(p.path) };
        Some(HandedOut { path: path.to_owned(), query })
    }
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

/// An absolute `rtsp://` (`rtsps://`, `rtspu://`) URL, taken apart.
fn rtsp_url(url: &str) -> Option<RtspUrl<'_>> {
    Some(RtspUrl::parse(url)).filter(RtspUrl::is_rtsp)
}

/// Path and query of a viewer's request URI, absolute (`rtsp://relay/cam1?x`) or path-only
/// (`/cam1?x`); `None` for anything else, and for a fragment (RTSP URLs carry none: what a
/// camera would make of one is anyone's guess).
fn request_path(uri: &str) -> Option<(&str, Option<&str>)> {
    let u = RtspUrl::parse(uri);
    let understood = u.is_rtsp() || (!u.is_absolute() && uri.starts_with('/'));
    (understood && u.fragment.is_none()).then_some((u.path, u.query))
}

/// `rest` of `path` after `prefix`, if `path` is `prefix` or continues it with `/`.
fn strip_path<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/') || prefix.is_empty()).then_some(rest)
}

/// Resolves the dot segments of an absolute path (`.` and `..`, percent-encoded too, and
/// empty segments, which some cameras collapse before resolving) so that what the relay checks
/// is what any camera would see. Refuses characters outside RFC 3986 `pchar`, encoded
/// slashes, backslashes and controls (a camera decoding them would see another path), and a
/// path that climbs above the root.
fn normalize_path(path: &str) -> Result<String, UriRefusal> {
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') || !path_chars_are_safe(path) {
        return Err(UriRefusal::Malformed);
    }
    let mut segments: Vec<&str> = Vec::new();
    // A path ending in a dot segment names a directory (`/a/b/..` is `/a/`).
    let mut ends_in_dots = false;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        // `..;x` is `..` to servlet-style parsers: a dot segment with parameters is refused.
        let bare = segment.split(';').next().unwrap_or(segment);
        let dots = dot_count(bare);
        if dots.is_some() && bare.len() != segment.len() {
            return Err(UriRefusal::Malformed);
        }
        ends_in_dots = dots.is_some();
        match dots {
            Some(1) => {}
            Some(_) => {
                segments.pop().ok_or(UriRefusal::OutsideRoute)?;
            }
            None => segments.push(segment),
        }
    }
    let trailing_slash = ends_in_dots || path.ends_with('/');
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// `Some(1)` for a `.` segment, `Some(2)` for `..` (either dot may be `%2e`), `None` otherwise.
fn dot_count(segment: &str) -> Option<u8> {
    let mut rest = segment.as_bytes();
    let mut dots = 0u8;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some(dots)
}

/// RFC 3986 path characters, with percent-encodings only of bytes that cannot change how the
/// path splits (no `/`, backslash, `%`, controls or non-ASCII after decoding).
fn path_chars_are_safe(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let decoded = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .map(|h| (hex_value(h[0]) << 4) | hex_value(h[1]));
            match decoded {
                Some(d) if d == b' ' || (d.is_ascii_graphic() && !matches!(d, b'/' | b'\\' | b'%')) => i += 3,
                _ => return false,
            }
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&c)) {
            return false;
        }
        i += 1;
    }
    true
}

fn hex_value(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        _ => (h | 0x20) - b'a' + 10,
    }
}

impl UrlMap {
    /// `client_base`: the route as the viewer addresses it (`rtsp://relay:8080/cam1`, scheme and
    /// authority as the viewer spoke them). `upstream_base`: the camera URL without credentials.
    pub fn new(client_base: &str, upstream_base: &str) -> Result<Self, RewriteError> {
        let c = base_url(client_base)?;
        let u = base_url(upstream_base)?;
        Ok(UrlMap {
            client_origin: c.origin().unwrap_or("").to_owned(),
            client_path: c.path.trim_end_matches('/').to_owned(),
            upstream_origin: u.origin().unwrap_or("").to_owned(),
            upstream_path: u.path.trim_end_matches('/').to_owned(),
            upstream_query: u.query.filter(|q| !q.is_empty()).map(str::to_owned),
        })
    }

    /// The same route as the viewer addresses it, now in front of another camera URL (a
    /// reload moved a shared route's camera).
    pub fn with_upstream(&self, upstream_base: &str) -> Result<Self, RewriteError> {
        let u = base_url(upstream_base)?;
        Ok(UrlMap {
            upstream_origin: u.origin().unwrap_or("").to_owned(),
            upstream_path: u.path.trim_end_matches('/').to_owned(),
            upstream_query: u.query.filter(|q| !q.is_empty()).map(str::to_owned),
            ..self.clone()
        })
    }

    /// The URI the camera is asked for, built by the relay from what it understood of the
    /// viewer's request URI, never copied from it: the camera's origin, the route's camera path
    /// (dot segments resolved; one that climbs out of the route is refused) with the viewer's
    /// suffix below it (`/trackID=1`), and the route's own query. A path outside the route is
    /// allowed only at or below one the camera itself handed out (`handed_out`), and a query
    /// other than the route's (or none) only when the camera handed out exactly that URL. `*` only where
    /// the method allows it (OPTIONS).
    pub fn camera_uri(&self, uri: &str, allow_star: bool, handed_out: &[HandedOut]) -> Result<String, UriRefusal> {
        if uri == "*" {
            return if allow_star { Ok("*".to_owned()) } else { Err(UriRefusal::Malformed) };
        }
        let (path, query) = request_path(uri).ok_or(UriRefusal::Malformed)?;
        let path = normalize_path(path)?;
        let camera_path = match strip_path(&path, &self.client_path) {
            Some(rest) => format!("{}{rest}", self.upstream_path),
            None if handed_out.iter().any(|h| strip_path(&path, h.path.trim_end_matches('/')).is_some()) => path,
            None => return Err(UriRefusal::OutsideRoute),
        };
        // The camera's own URL, query (or its absence) included, as it handed it out.
        let handed = handed_out.iter().any(|h| h.path == camera_path && h.query.as_deref() == query);
        let query = if handed { query } else { self.upstream_query.as_deref() };
        let mut out = String::with_capacity(self.upstream_origin.len() + camera_path.len() + 32);
        out.push_str(&self.upstream_origin);
        out.push_str(&camera_path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Ok(out)
    }

    /// Maps a camera URL to the viewer's. The camera may name itself by another address than
    /// the route's (an internal IP, port 554 left out), so only the path decides.
    pub fn to_client(&self, url: &str) -> String {
        self.to_client_noting(url, &mut Vec::new())
    }

    /// [`UrlMap::to_client`], adding the camera URL to `handed_out`: the viewer may then ask
    /// for it (a path outside the route maps to the same path on the relay).
    fn to_client_noting(&self, url: &str, handed_out: &mut Vec<HandedOut>) -> String {
        let Some(p) = rtsp_url(url) else { return url.to_owned() };
        handed_out.extend(HandedOut::of(url));
        let mut out = self.client_origin.clone();
        match strip_path(p.path, &self.upstream_path) {
            Some(rest) => {
                out.push_str(&self.client_path);
                out.push_str(rest);
                if self.client_path.is_empty() && rest.is_empty() && p.query.is_none() {
                    out.push('/');
                }
            }
            None => out.push_str(p.path),
        }
        if let Some(q) = p.query {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = p.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

/// One end of a route: an `rtsp://` URL without a fragment.
fn base_url(url: &str) -> Result<RtspUrl<'_>, RewriteError> {
    rtsp_url(url).filter(|u| u.fragment.is_none()).ok_or_else(|| RewriteError::NotRtspUrl(url.to_owned()))
}

/// Maps every absolute URL in `value` to the viewer's. Each `rtsp://` (or `rtsps://`) starts
/// a URL that ends at whitespace or at the next one, so a malformed value holding several (found
/// by fuzzing) has each of them rewritten; the bytes between are kept.
fn map_urls(value: &str, map: &UrlMap, handed_out: &mut Vec<HandedOut>) -> String {
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
        out.push_str(&map.to_client_noting(&value[start..end], handed_out));
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

/// Rewrites a camera→viewer message: a request's URI, `Content-Base`, `Content-Location`,
/// `Location`, `RTP-Info` `url=` entries and absolute `a=control:` lines of an SDP body. The body length
/// changes are carried by [`Message::write_to`], which writes `Content-Length` from the body.
/// Returns the camera URLs the message handed out (the viewer may ask for them).
pub fn rewrite_to_client(msg: &mut Message, map: &UrlMap) -> Vec<HandedOut> {
    let mut handed_out = Vec::new();
    if let StartLine::Request { uri, .. } = &mut msg.start {
        *uri = map.to_client_noting(uri, &mut handed_out);
    }
    for (name, value) in msg.headers.iter_mut() {
        // Location: a camera's redirect (3xx) must send the viewer back through the relay.
        if ["Content-Base", "Content-Location", "Location"].iter().any(|h| name.eq_ignore_ascii_case(h)) {
            *value = map_urls(value.trim(), map, &mut handed_out);
        } else if name.eq_ignore_ascii_case("RTP-Info") {
            // `url=...;seq=...;rtptime=...` entries: every absolute URL in the value is mapped
            // (the `url=` ones, and any a malformed value holds elsewhere); the rest is kept.
            *value = map_urls(value, map, &mut handed_out);
        }
    }
    let is_sdp = msg.header("Content-Type").is_some_and(|t| t.to_ascii_lowercase().contains("application/sdp"));
    if is_sdp || msg.body.windows(10).any(|w| w == b"a=control:") {
        if let Ok(sdp) = std::str::from_utf8(&msg.body) {
            let rewritten = rewrite_sdp(sdp, map, &mut handed_out);
            if rewritten != sdp {
                msg.body = bytes::Bytes::from(rewritten);
            }
        }
    }
    handed_out
}

/// Absolute `a=control:` lines rewritten; every other byte, line endings included, unchanged.
fn rewrite_sdp(sdp: &str, map: &UrlMap, handed_out: &mut Vec<HandedOut>) -> String {
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
                out.push_str(&map_urls(url.trim(), map, handed_out));
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

    /// The camera URI for a viewer's, with nothing handed out by the camera.
    fn up(m: &UrlMap, uri: &str) -> Result<String, UriRefusal> {
        m.camera_uri(uri, true, &[])
    }

    #[test]
    fn request_uris_map_to_the_camera_with_track_suffixes() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        let cases = [
            ("rtsp://127.0.0.1:8080/cam1", "rtsp://10.0.0.5:554/Streaming/Channels/101"),
            ("rtsp://localhost/cam1/", "rtsp://10.0.0.5:554/Streaming/Channels/101/"),
            ("rtsp://relay.example:80/cam1/trackID=1", "rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1"),
            ("/cam1/stream=0", "rtsp://10.0.0.5:554/Streaming/Channels/101/stream=0"),
            ("rtsp://x/cam1/a/../trackID=2", "rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=2"),
            ("rtsp://x/cam1/./trackID=2/.", "rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=2/"),
            ("rtsp://x//cam1//trackID=3", "rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=3"),
            ("*", "*"),
        ];
        for (from, to) in cases {
            assert_eq!(up(&m, from).as_deref(), Ok(to), "{from}");
        }
        assert_eq!(m.camera_uri("*", false, &[]), Err(UriRefusal::Malformed), "`*` only for OPTIONS");
    }

    #[test]
    fn a_viewer_never_leaves_the_route_by_path() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        for uri in [
            "rtsp://x/other/path",
            "rtsp://x/cam10",
            "rtsp://x/",
            "/",
            "rtsp://x/cam1/../other",
            "rtsp://x/cam1/%2e%2e/other",
            "rtsp://x/cam1/.%2E/other",
            "/cam1/a/../../other",
            "rtsp://x/cam1//../other",
            "/cam1/../../../../etc",
        ] {
            assert_eq!(up(&m, uri), Err(UriRefusal::OutsideRoute), "{uri}");
        }
        for uri in [
            "trackID=1",
            "http://x/cam1",
            "rtsp://x/cam1/..%2fother",
            "rtsp://x/cam1/%2F..%2F",
            "rtsp://x/cam1/..\\other",
            "rtsp://x/cam1/..;/other",
            "rtsp://x/cam1/a\rDESCRIBE",
            "rtsp://x/cam1/%0d%0a",
            "rtsp://x/cam1/%00",
            "rtsp://x/cam1/%zz",
            "rtsp://x/cam1/%+1",
            "rtsp://x/cam1/\u{e9}",
            "rtsp://x/cam1#frag",
            // A fragment after a query (once passed with the query replaced), or on a path.
            "rtsp://x/cam1?a#frag",
            "/cam1/trackID=1?x#../other",
        ] {
            assert_eq!(up(&m, uri), Err(UriRefusal::Malformed), "{uri}");
        }
    }

    #[test]
    fn the_camera_gets_the_routes_query_and_only_the_routes() {
        let m = map("rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        let route = "rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0";
        for viewer in [
            "rtsp://r/cam1",
            "rtsp://r/cam1?token=x",
            "rtsp://r/cam1?channel=10",
            "rtsp://r/cam1?channel=1&subtype=0&channel=4",
            "rtsp://r/cam1?channel=1&subtype=0",
        ] {
            assert_eq!(up(&m, viewer).as_deref(), Ok(route), "{viewer}");
        }
        let open = map("rtsp://10.0.0.5:554/live");
        assert_eq!(up(&open, "rtsp://r/cam1?camera=2").as_deref(), Ok("rtsp://10.0.0.5:554/live"));
    }

    #[test]
    fn a_query_the_camera_handed_out_is_kept_for_that_url() {
        let m = map("rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        // Dahua's control URLs put the track after the query.
        let control = "rtsp://192.168.1.108:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0";
        let mut describe = Message::response(200, "OK");
        describe.set_header("Content-Type", "application/sdp");
        describe.body = format!("v=0\r\na=control:{control}\r\n").into();
        let handed = rewrite_to_client(&mut describe, &m);
        let client = "rtsp://127.0.0.1:8080/cam1?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0";
        assert!(String::from_utf8_lossy(&describe.body).contains(client));
        assert_eq!(
            m.camera_uri(client, false, &handed).as_deref(),
            Ok("rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif/trackID=0")
        );
        // Another query on the same path is not one the camera handed out.
        assert_eq!(
            m.camera_uri("rtsp://r/cam1?channel=2&subtype=0&unicast=true&proto=Onvif/trackID=0", false, &handed)
                .as_deref(),
            Ok("rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0")
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
        assert_eq!(up(&root, "rtsp://r:8080/").as_deref(), Ok("rtsp://cam/live/"));
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
            let Some(camera) = rtsp_url(&base) else { continue };
            let origin = camera.origin().unwrap_or("");
            let upstream = format!("{origin}{}", camera.path);
            let m = map(&upstream);
            let mut msg = original.clone();
            let handed = rewrite_to_client(&mut msg, &m);
            let out = String::from_utf8_lossy(&msg.to_bytes()).into_owned();
            assert!(!out.contains(origin), "{name}: camera origin leaked:\n{out}");
            for (before, after) in urls(&text).iter().zip(urls(&out)) {
                assert!(after.starts_with("rtsp://127.0.0.1:8080/"), "{name}: {after}");
                let back = m.camera_uri(&after, false, &handed).unwrap();
                assert_eq!(
                    rtsp_url(&back).unwrap().path,
                    rtsp_url(before).unwrap().path,
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
    fn paths_the_camera_handed_out_are_reachable_and_nothing_else() {
        let m = map("rtsp://10.0.0.5:554/Streaming/Channels/101");
        let mut reply = Message::response(200, "OK");
        reply.set_header("Content-Base", "rtsp://10.0.0.5/Streaming/Channels/101/");
        reply.set_header("RTP-Info", "url=rtsp://10.0.0.5/audio/track2;seq=1");
        let handed = rewrite_to_client(&mut reply, &m);
        assert!(handed.contains(&HandedOut { path: "/audio/track2".to_owned(), query: None }), "{handed:?}");
        assert_eq!(reply.header("RTP-Info"), Some("url=rtsp://127.0.0.1:8080/audio/track2;seq=1"));
        let ok = |uri: &str| m.camera_uri(uri, false, &handed);
        assert_eq!(ok("rtsp://r/audio/track2").as_deref(), Ok("rtsp://10.0.0.5:554/audio/track2"));
        assert_eq!(ok("rtsp://r/audio/track2/x").as_deref(), Ok("rtsp://10.0.0.5:554/audio/track2/x"));
        assert_eq!(ok("rtsp://r/audio/track2/../track3"), Err(UriRefusal::OutsideRoute));
        assert_eq!(ok("rtsp://r/audio/track20"), Err(UriRefusal::OutsideRoute));
        assert_eq!(ok("rtsp://r/Streaming/Channels/201"), Err(UriRefusal::OutsideRoute));
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
            let handed = [HandedOut { path: format!("/Streaming/Channels/101{track}"), query: query.clone() }];
            let back = m.camera_uri(&client, false, &handed).unwrap();
            let expected = format!("rtsp://10.0.0.5:554/Streaming/Channels/101{track}{}", query.as_deref().map(|q| format!("?{q}")).unwrap_or_default());
            prop_assert_eq!(back, expected);
        }
    }
}

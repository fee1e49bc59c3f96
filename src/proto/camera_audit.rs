//! An independent reading of what the relay sends a camera, as the most lenient camera
//! firmware would read it: bare CR and bare LF end lines, `Content-Length` delimits bodies,
//! `$` frames are skipped by their length. Used by the property tests and the fuzz target to
//! check that whatever a viewer sends, each message the relay writes is exactly one message
//! to such a camera, addressed where the route allows. Deliberately shares no code with
//! [`super::rtsp`]: a bug there must not hide here.
//!
//! For the same reason it takes URLs apart ([`path_and_query`], [`is_at_or_below`]) on its
//! own, not with [`super::rtsp_url`], [`super::rtsp_headers`] or the rewriter's path rules:
//! it is the independent check of what the relay sends, and sharing the relay's parser would
//! make it agree with the relay's bugs.

/// One request as a lenient camera reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// What one write to the camera holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Interleaved frames only (RTCP receiver reports).
    Frames,
    Request(SeenRequest),
    /// A response (the viewer answering a request of the camera's).
    Response(u16),
}

/// Reads one write to the camera. `Err` says how a lenient camera would see more (or less)
/// than one message in it.
pub fn read_one(bytes: &[u8]) -> Result<Seen, String> {
    if bytes.first() == Some(&b'$') {
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest[0] != b'$' || rest.len() < 4 {
                return Err("bytes after interleaved frames".into());
            }
            let len = 4 + u16::from_be_bytes([rest[2], rest[3]]) as usize;
            if rest.len() < len {
                return Err("truncated interleaved frame".into());
            }
            rest = &rest[len..];
        }
        return Ok(Seen::Frames);
    }
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let body_start = loop {
        if i >= bytes.len() {
            return Err("head never ends".into());
        }
        match bytes[i] {
            b'\r' | b'\n' => {
                lines.push(&bytes[start..i]);
                i += if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
                if lines.last().is_some_and(|l| l.is_empty()) {
                    break i;
                }
            }
            0 => return Err("NUL in head".into()),
            _ => i += 1,
        }
    };
    lines.pop();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let first = text(lines.first().ok_or("empty head")?);
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let line = text(line);
        let (name, value) = line.split_once(':').ok_or_else(|| format!("header line without ':': {line:?}"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("header line a camera may read as something else: {line:?}"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let content_length: usize = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse::<usize>().map_err(|_| format!("bad Content-Length {v:?}")))
        .try_fold(None, |seen: Option<usize>, len| match (seen, len?) {
            (Some(a), b) if a != b => Err("two Content-Lengths".to_owned()),
            (_, b) => Ok(Some(b)),
        })?
        .unwrap_or(0);
    if bytes.len() != body_start + content_length {
        return Err(format!(
            "{} bytes after one message",
            bytes.len() as isize - (body_start + content_length) as isize
        ));
    }
    if let Some(rest) = first.strip_prefix("RTSP/1.0 ") {
        let code = rest.split(' ').next().and_then(|c| c.parse().ok()).ok_or("bad status line")?;
        return Ok(Seen::Response(code));
    }
    let parts: Vec<&str> = first.split(' ').collect();
    match parts.as_slice() {
        [method, uri, "RTSP/1.0"] if !method.is_empty() && !uri.is_empty() => {
            Ok(Seen::Request(SeenRequest { method: (*method).to_owned(), uri: (*uri).to_owned(), headers }))
        }
        _ => Err(format!("bad request line {first:?}")),
    }
}

/// Path and query of an absolute `rtsp://` URI whose origin is `origin`.
pub fn path_and_query<'a>(uri: &'a str, origin: &str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = uri.strip_prefix(origin)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some(rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q))))
}

/// `path` is `base` or below it, with no segment a camera could resolve upwards (`..`, `%2e`).
pub fn is_at_or_below(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    let below = path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'));
    let climbs = path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".." || lower.starts_with("..;")
    });
    below && !climbs && !path.contains('\\') && !path.to_ascii_lowercase().contains("%2f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cr_ends_a_line_and_a_hidden_request_is_seen() {
        let smuggled =
            b"DESCRIBE rtsp://c/s RTSP/1.0\r\nUser-Agent: x\rDESCRIBE rtsp://c/other RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        assert!(read_one(smuggled).is_err());
        let ok = b"DESCRIBE rtsp://c/s RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        assert!(matches!(read_one(ok), Ok(Seen::Request(r)) if r.uri == "rtsp://c/s"));
        assert!(read_one(b"DESCRIBE rtsp://c/s RTSP/1.0\r\nCSeq: 2\r\n\r\nOPTIONS * RTSP/1.0\r\n\r\n").is_err());
        assert_eq!(read_one(b"$\x01\x00\x02ab$\x00\x00\x00"), Ok(Seen::Frames));
    }

    #[test]
    fn paths_are_checked_the_way_a_camera_would_resolve_them() {
        assert!(is_at_or_below("/s/101/trackID=1", "/s/101"));
        assert!(is_at_or_below("/s/101", "/s/101/"));
        assert!(!is_at_or_below("/s/1010", "/s/101"));
        assert!(!is_at_or_below("/s/101/../201", "/s/101"));
        assert!(!is_at_or_below("/s/101/%2E%2e/201", "/s/101"));
        assert!(!is_at_or_below("/s/101/..%2f201", "/s/101"));
    }
}

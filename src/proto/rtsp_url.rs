//! URLs and request targets as RTSP carries them (RFC 2326 §3.2), split the way RFC 3986 §3
//! says: `scheme://authority`, then the path up to `?` or `#`, the query up to `#`, the
//! fragment. Every part of the relay that takes a URL apart (route lookup, the viewer's and the
//! camera's URLs in rewriting, Digest's `uri`, track matching, the demo camera) splits it here,
//! so they cannot disagree on where the path starts.
//!
//! Rules that differ on purpose keep their own named function elsewhere:
//! [`rewrite`](super::rewrite)'s path normalisation must see dot segments and encoded slashes
//! before anything resolves them (confinement); [`route::is_route_spelling`](super::route) judges
//! a path as written; web origins ([`origin`](super::origin)) follow RFC 6454. The camera audit
//! and the load generator parse on their own: they are the independent check of what the relay
//! sends.

/// A URL or request target taken apart, borrowing the text. A target without `scheme://` (an
/// absolute path such as `/cam1?x`, or `*`) has no scheme nor authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtspUrl<'a> {
    text: &'a str,
    /// Where `://` starts, when the text is an absolute URL.
    scheme_end: Option<usize>,
    /// Where the path starts (the authority's end).
    path_start: usize,
    /// Where the fragment's `#` is, or the text's end.
    fragment_start: usize,
    /// Possibly empty (`rtsp://h` has no path).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

impl<'a> RtspUrl<'a> {
    /// Splits `text`. It is absolute when it starts with a scheme (RFC 3986 §3.1: a letter, then
    /// letters, digits, `+`, `-`, `.`) and `://`; anything else is a path and what follows it.
    pub fn parse(text: &'a str) -> RtspUrl<'a> {
        let scheme_end = scheme_end(text);
        let path_start = match scheme_end {
            Some(s) => text[s + 3..].find(['/', '?', '#']).map_or(text.len(), |i| s + 3 + i),
            None => 0,
        };
        let fragment_start = text[path_start..].find('#').map_or(text.len(), |i| path_start + i);
        let (path, query) = match text[path_start..fragment_start].split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (&text[path_start..fragment_start], None),
        };
        let fragment = text.get(fragment_start + 1..).filter(|_| fragment_start < text.len());
        RtspUrl { text, scheme_end, path_start, fragment_start, path, query, fragment }
    }

    /// Whether the text was `scheme://…`.
    pub fn is_absolute(&self) -> bool {
        self.scheme_end.is_some()
    }

    pub fn scheme(&self) -> Option<&'a str> {
        self.scheme_end.map(|s| &self.text[..s])
    }

    /// An RTSP scheme (`rtsp`, `rtsps`, `rtspu`, any case).
    pub fn is_rtsp(&self) -> bool {
        self.scheme().is_some_and(|s| ["rtsp", "rtsps", "rtspu"].iter().any(|r| s.eq_ignore_ascii_case(r)))
    }

    /// `scheme://authority` as written, user info included.
    pub fn origin(&self) -> Option<&'a str> {
        self.scheme_end.map(|_| &self.text[..self.path_start])
    }

    /// The authority as written (`user:pass@host:port`), possibly empty.
    pub fn authority(&self) -> Option<&'a str> {
        self.scheme_end.map(|s| &self.text[s + 3..self.path_start])
    }

    /// `host[:port]`: the authority without user info (credentials in a URL are for whoever
    /// receives it, never to be copied into another).
    pub fn host_port(&self) -> Option<&'a str> {
        self.authority().map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host))
    }

    /// The path, `/` when the URL has none.
    pub fn path_or_root(&self) -> &'a str {
        if self.path.is_empty() { "/" } else { self.path }
    }

    /// Path and query as written (the fragment left out), `/` when both are empty.
    pub fn path_and_query(&self) -> &'a str {
        match &self.text[self.path_start..self.fragment_start] {
            "" => "/",
            pq => pq,
        }
    }
}

/// The index of `://` after a valid scheme at the start of `text`.
fn scheme_end(text: &str) -> Option<usize> {
    let end = text.find("://")?;
    let scheme = &text.as_bytes()[..end];
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parts() {
        let u = RtspUrl::parse("RTSP://u:p@[::1]:554/demo/trackID=0?a=b#f");
        assert_eq!(u.scheme(), Some("RTSP"));
        assert!(u.is_rtsp() && u.is_absolute());
        assert_eq!(u.origin(), Some("RTSP://u:p@[::1]:554"));
        assert_eq!((u.authority(), u.host_port()), (Some("u:p@[::1]:554"), Some("[::1]:554")));
        assert_eq!((u.path, u.query, u.fragment), ("/demo/trackID=0", Some("a=b"), Some("f")));
        assert_eq!(u.path_and_query(), "/demo/trackID=0?a=b");
        let u = RtspUrl::parse("rtsp://h?x");
        assert_eq!((u.path, u.query, u.path_or_root(), u.path_and_query()), ("", Some("x"), "/", "?x"));
        let u = RtspUrl::parse("rtsp://h");
        assert_eq!((u.origin(), u.path_or_root(), u.path_and_query()), (Some("rtsp://h"), "/", "/"));
        let u = RtspUrl::parse("/cam1?t=1#x");
        assert!(!u.is_absolute() && u.host_port().is_none());
        assert_eq!((u.path, u.query, u.fragment), ("/cam1", Some("t=1"), Some("x")));
        // Not a scheme before `://`: a path that happens to hold one.
        let u = RtspUrl::parse("/cam1/x://y");
        assert_eq!((u.is_absolute(), u.path), (false, "/cam1/x://y"));
        assert!(!RtspUrl::parse("1a://h/").is_absolute() && !RtspUrl::parse("://h/").is_absolute());
        assert_eq!(RtspUrl::parse("*").path, "*");
        assert_eq!(RtspUrl::parse("rtsp://h/a#").fragment, Some(""));
    }

    // The splitters this module replaced, as they were, to show that every input they were
    // meant for maps the same (the well-formed URLs below). They disagreed with each other
    // (and with RFC 3986) only on a `#` (a fragment, which RTSP URLs do not carry), on a `?`
    // before the path (`rtsp://h?x/y`: two of them took `/y` for the path), and on text
    // before `://` that is no scheme (`/a://b`); those inputs follow RFC 3986 now.

    /// shared_viewer.rs: `path_and_query`.
    fn old_shared_viewer_path_and_query(url: &str) -> &str {
        match url.find("://") {
            Some(i) => {
                let rest = &url[i + 3..];
                rest.find(['/', '?']).map_or("/", |j| &rest[j..])
            }
            None => url,
        }
    }

    /// viewer_auth.rs: `digest_uri_matches`'s `path_and_query`.
    fn old_viewer_auth_path_and_query(u: &str) -> String {
        match u.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
            None => u.to_owned(),
        }
    }

    /// route.rs: `uri_path`.
    fn old_route_uri_path(target: &str) -> &str {
        let rest = match target.find("://") {
            Some(i) => {
                let after = &target[i + 3..];
                after.find('/').map_or("/", |j| &after[j..])
            }
            None => target,
        };
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        &rest[..end]
    }

    /// rewrite.rs: `split_url` (origin, path, query), rtsp schemes only.
    fn old_rewrite_split_url(url: &str) -> Option<(&str, &str, Option<&str>)> {
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
        Some((&url[..authority_end], path, query))
    }

    /// session.rs: `client_base`'s scheme and authority.
    fn old_session_scheme_authority(uri: &str) -> Option<(&str, &str)> {
        let (scheme, rest) = uri.split_once("://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        Some((scheme, authority.rsplit_once('@').map_or(authority, |(_, host)| host)))
    }

    /// demo_camera/connection.rs: `RequestUrl::parse` (host, path without query).
    fn old_demo_request_url(uri: &str) -> Option<(String, String)> {
        fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
            let head = s.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
        }
        let (authority, rest) =
            if let Some(rest) = strip_prefix_ci(uri, "rtsp://").or_else(|| strip_prefix_ci(uri, "rtsps://")) {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let auth = &rest[..end];
                let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
                if host.is_empty() {
                    return None;
                }
                (host.to_owned(), &rest[end..])
            } else if uri.starts_with('/') {
                ("local".to_owned(), uri)
            } else {
                return None;
            };
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        Some((authority, rest[..end].to_owned()))
    }

    /// RTSP URLs as peers write them: any scheme case, optional user info, a host (name, IPv4
    /// or bracketed IPv6) and port, a path with the characters cameras use, a query; and
    /// absolute paths. No fragment (RTSP URLs carry none).
    fn well_formed() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![Just("rtsp"), Just("RTSP"), Just("rtsps"), Just("rtspu"), Just("http")];
        let userinfo = prop_oneof![Just(""), Just("u@"), Just("admin:p%40ss@"), Just("a:b:c@")];
        let host = prop_oneof![Just("cam"), Just("10.0.0.5"), Just("[::1]"), Just("relay.example"), Just("")];
        let port = prop_oneof![Just(""), Just(":554"), Just(":8080")];
        let path = "(/[A-Za-z0-9=._~%;@:,-]{0,8}){0,4}/?";
        let query = prop::option::of("[A-Za-z0-9=&/?._,;-]{0,12}");
        let absolute = (scheme, userinfo, host, port, path, query.clone()).prop_map(|(s, u, h, p, path, q)| {
            format!("{s}://{u}{h}{p}{path}{}", q.map(|q| format!("?{q}")).unwrap_or_default())
        });
        let relative = ("(/[A-Za-z0-9=._~%;@:,-]{0,8}){1,4}", query)
            .prop_map(|(p, q)| format!("{p}{}", q.map(|q| format!("?{q}")).unwrap_or_default()));
        prop_oneof![absolute, relative]
    }

    proptest! {
        #[test]
        fn every_old_splitter_maps_well_formed_urls_the_same(url in well_formed()) {
            // A path holding `://` (`/a:/` then `/b`) is no absolute URL; the old ones thought so.
            prop_assume!(url.starts_with('/') != url.contains("://"));
            let u = RtspUrl::parse(&url);
            prop_assert_eq!(u.path_and_query(), old_shared_viewer_path_and_query(&url));
            // The two that ended the authority at `/` only: the same unless the path is empty
            // and a query follows (`rtsp://h?x`, where they took `/`).
            if !(u.is_absolute() && u.path.is_empty() && u.query.is_some()) {
                prop_assert_eq!(u.path_and_query(), old_viewer_auth_path_and_query(&url));
                let path = if u.is_absolute() { u.path_or_root() } else { u.path };
                prop_assert_eq!(path, old_route_uri_path(&url));
            }
            let rewrite = u.is_rtsp().then(|| (u.origin().unwrap_or(""), u.path, u.query));
            prop_assert_eq!(rewrite, old_rewrite_split_url(&url));
            prop_assert_eq!(u.scheme().zip(u.host_port()), old_session_scheme_authority(&url));
            let demo_scheme = u.scheme().is_some_and(|s| s.eq_ignore_ascii_case("rtsp") || s.eq_ignore_ascii_case("rtsps"));
            let demo = match u.host_port() {
                Some(h) if demo_scheme && !h.is_empty() => Some((h.to_owned(), u.path.to_owned())),
                Some(_) => None,
                None if url.starts_with('/') => Some(("local".to_owned(), u.path.to_owned())),
                None => None,
            };
            prop_assert_eq!(demo, old_demo_request_url(&url));
        }

        /// Whatever the text, the parts are slices of it in order and put it back together.
        #[test]
        fn parts_rebuild_the_text(text in "[a-zA-Z0-9:/?#@.%\\[\\]=&-]{0,30}") {
            let u = RtspUrl::parse(&text);
            let mut back = u.origin().unwrap_or("").to_owned();
            back.push_str(u.path);
            if let Some(q) = u.query {
                back.push('?');
                back.push_str(q);
            }
            if let Some(f) = u.fragment {
                back.push('#');
                back.push_str(f);
            }
            prop_assert_eq!(back, text);
        }
    }
}

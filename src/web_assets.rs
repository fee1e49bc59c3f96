//! The browser player's files, embedded in the binary, and the HTTP answers that carry them. The
//! shell serves a request for [`ASSET_PREFIX`]`<name>` with [`asset_reply`], a browser navigating
//! to a route (see `proto::websocket::classify`) with [`player_page_reply`], and one navigating to
//! `/` with [`routes_page_reply`] listing the routes that viewer may watch. Pure: no I/O.

/// Where the player's modules live (`proto::websocket::classify` sends requests under it here);
/// configuration refuses routes under it.
pub const ASSET_PREFIX: &str = crate::proto::websocket::PLAYER_PREFIX;

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// File name under [`ASSET_PREFIX`].
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $type:expr),+ $(,)?) => {
        &[$(Asset { name: $name, content_type: $type, body: include_bytes!(concat!("../assets/player/", $name)) }),+]
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of `assets/player/` (a unit test checks that none is missing).
pub static ASSETS: &[Asset] = assets! {
    "index.html" => HTML,
    "routes.html" => HTML,
    "player.css" => CSS,
    "player.js" => JS,
    "rtsp-ws.js" => JS,
    "md5.js" => JS,
    "sdp.js" => JS,
    "rtp.js" => JS,
    "bits.js" => JS,
    "h264.js" => JS,
    "h265.js" => JS,
    "mp4.js" => JS,
    "mse.js" => JS,
};

/// The page's own modules and the WebSocket back to the relay; MSE plays from a blob: URL.
/// No other site may frame the pages (its login form, under a decoy: clickjacking).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// The embedded file a request path names (query ignored), if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let name = path.strip_prefix(ASSET_PREFIX)?;
    ASSETS.iter().find(|a| a.name == name)
}

fn by_name(name: &str) -> &'static Asset {
    ASSETS.iter().find(|a| a.name == name).expect("embedded")
}

/// An HTTP/1.1 answer with a body; `head_only` for HEAD requests. `Connection: close`: the
/// shell answers one request per connection, as for other HTTP.
pub fn http_reply(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    // `X-Frame-Options` for browsers that predate `frame-ancestors`.
    let csp = if content_type == HTML {
        format!("Content-Security-Policy: {CSP}\r\nX-Frame-Options: SAMEORIGIN\r\n")
    } else {
        String::new()
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: rtsp-tunnel-relay\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n{csp}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The answer to `GET /_player/<name>`, or None for a name not embedded (the shell answers 404).
pub fn asset_reply(path: &str, head_only: bool) -> Option<Vec<u8>> {
    asset(path).map(|a| http_reply("200 OK", a.content_type, a.body, head_only))
}

/// The player page (the same for every route: it plays its own URL's path).
pub fn player_page_reply(head_only: bool) -> Vec<u8> {
    http_reply("200 OK", HTML, by_name("index.html").body, head_only)
}

/// Where the route list's URLs point: the address the browser used (its `Host`), and whether
/// it came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct ListedAt<'a> {
    pub authority: &'a str,
    pub tls: bool,
}

/// The route list for `GET /`: `routes` are the paths this viewer may watch.
pub fn routes_page_reply<'a>(routes: impl IntoIterator<Item = &'a str>, at: ListedAt<'_>, head_only: bool) -> Vec<u8> {
    http_reply("200 OK", HTML, routes_page(routes, at).as_bytes(), head_only)
}

/// The route list page: per route, a link to its player and the URLs to copy into an RTSP
/// player (`rtsp://`, tunnelled or plain) or a browser (`http://`); text HTML-escaped, paths
/// percent-encoded.
pub fn routes_page<'a>(routes: impl IntoIterator<Item = &'a str>, at: ListedAt<'_>) -> String {
    let template = std::str::from_utf8(by_name("routes.html").body).expect("UTF-8 template");
    let (rtsp, http) = if at.tls { ("rtsps", "https") } else { ("rtsp", "http") };
    let mut items = String::new();
    for route in routes {
        let path = href(route);
        let url = |scheme: &str| html_escape(&format!("{scheme}://{}{path}", at.authority));
        items.push_str(&format!(
            "<li><a href=\"{}\">{}</a> <code>{}</code> <code>{}</code></li>\n",
            html_escape(&path),
            html_escape(route),
            url(rtsp),
            url(http)
        ));
    }
    if items.is_empty() {
        items.push_str("<li>No camera is open to you here.</li>\n");
    }
    template.replacen("<!--ROUTES-->\n", &items, 1)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A route path as a URL path: bytes outside RFC 3986's unreserved set and '/' percent-encoded
/// (so a route can never turn into a `javascript:` or other-host link).
fn href(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_player_file_is_embedded_with_its_type() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/player");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "assets/player and ASSETS differ");
        for a in ASSETS {
            let want = match a.name.rsplit('.').next() {
                Some("js") => JS,
                Some("html") => HTML,
                Some("css") => CSS,
                other => panic!("unexpected file type {other:?}"),
            };
            assert_eq!(a.content_type, want, "{}", a.name);
        }
    }

    #[test]
    fn every_module_import_names_an_embedded_file() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js") || a.name.ends_with(".html")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for part in text.split("from './").skip(1).chain(text.split("=\"/_player/").skip(1)) {
                let name = &part[..part.find(['\'', '"']).unwrap()];
                assert!(ASSETS.iter().any(|x| x.name == name), "{} imports {name}, not embedded", a.name);
            }
        }
    }

    #[test]
    fn assets_are_found_by_path_only_under_the_prefix() {
        assert_eq!(asset("/_player/player.js").map(|a| a.name), Some("player.js"));
        assert_eq!(asset("/_player/player.js?v=2").map(|a| a.name), Some("player.js"));
        assert_eq!(asset("/_player/../Cargo.toml"), None);
        assert_eq!(asset("/_player/"), None);
        assert_eq!(asset("/player.js"), None);
        let reply = String::from_utf8(asset_reply("/_player/mp4.js", false).unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(reply.contains("\r\nContent-Type: text/javascript; charset=utf-8\r\n"));
        let body = by_name("mp4.js").body;
        assert!(reply.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(reply.as_bytes().ends_with(body));
        let head = asset_reply("/_player/mp4.js", true).unwrap();
        assert!(head.ends_with(b"\r\n\r\n"), "HEAD carries no body");
    }

    #[test]
    fn the_route_list_escapes_paths_and_links_them() {
        let at = ListedAt { authority: "relay.example:8080", tls: false };
        let page = routes_page(["/cam1", "/a<b>&\"c'", "/ünï code"], at);
        assert!(
            page.contains(
                "<li><a href=\"/cam1\">/cam1</a> <code>rtsp://relay.example:8080/cam1</code> \
                 <code>http://relay.example:8080/cam1</code></li>"
            ),
            "{page}"
        );
        assert!(page.contains("<li><a href=\"/a%3Cb%3E%26%22c%27\">/a&lt;b&gt;&amp;&quot;c&#39;</a> "), "{page}");
        assert!(page.contains("<code>rtsp://relay.example:8080/a%3Cb%3E%26%22c%27</code>"), "{page}");
        assert!(page.contains("<a href=\"/%C3%BCn%C3%AF%20code\">/ünï code</a>"), "{page}");
        assert!(!page.contains("<!--ROUTES-->"));
        assert!(routes_page([], at).contains("No camera is open to you here."));
        let tls = routes_page(["/cam1"], ListedAt { authority: "relay", tls: true });
        assert!(tls.contains("<code>rtsps://relay/cam1</code> <code>https://relay/cam1</code>"), "{tls}");
        let reply = String::from_utf8(routes_page_reply(["/cam1"], at, false)).unwrap();
        assert!(reply.contains("\r\nContent-Security-Policy: default-src 'self';"));
        assert!(reply.contains("connect-src 'self' ws: wss:"));
    }

    #[test]
    fn the_player_page_loads_its_module_from_the_prefix() {
        let reply = String::from_utf8(player_page_reply(false)).unwrap();
        assert!(reply.contains("<script type=\"module\" src=\"/_player/player.js\"></script>"));
        assert!(reply.contains("<video id=\"video\" muted autoplay playsinline>"));
    }
}

//! A connection's first bytes (`proto::greeting`): any bytes under any PROXY setting, cut
//! anywhere, never panic and get one verdict at most; nothing is judged after it; a session is
//! counted exactly when the verdict starts one, an address only behind a balancer; the bytes a
//! verdict hands on are never more than were fed.
#![no_main]
use std::net::IpAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::greeting::{Gatekeeper, Greeting, Home, Proxy, Rules, Verdict};
use rtsp_tunnel_relay::proto::http_head::HeadLimits;
use rtsp_tunnel_relay::proto::origin::Origin;
use rtsp_tunnel_relay::proto::route::{Acl, Guard, Route, RouteTable, SharedRoute, Sharing};
use rtsp_tunnel_relay::proto::rtsp::MessageLimits;

struct Gate {
    room: bool,
    home: Home,
    sessions: usize,
    connections: usize,
}

impl Gatekeeper for Gate {
    fn listener_permits(&self, _: usize, _: IpAddr) -> bool {
        self.room
    }
    fn login_blocked(&self, _: IpAddr) -> bool {
        false
    }
    fn open_connection(&mut self, _: IpAddr) -> bool {
        self.connections += usize::from(self.room);
        self.room
    }
    fn open_session(&mut self) -> bool {
        self.sessions += usize::from(self.room);
        self.room
    }
    fn cookie_in_use(&self, cookie: &str) -> bool {
        cookie == "taken"
    }
    fn home_of(&self, _: &Route) -> Home {
        self.home
    }
    fn allowed_origins(&self) -> Vec<Origin> {
        Vec::new()
    }
}

fn route(path: &str, shared: bool) -> Route {
    Route {
        path: path.into(),
        upstream_url: format!("rtsp://127.0.0.1:8554{path}"),
        upstream_addr: "127.0.0.1:8554".parse().unwrap(),
        credentials: None,
        users: None,
        acl: Acl::parse(&[], &["10.0.0.0/8".to_owned()]).unwrap(),
        sharing: if shared {
            Sharing::Shared(SharedRoute { linger: Duration::from_secs(1), always_on: false, gop_cache: false })
        } else {
            Sharing::Passthrough
        },
        resolve_error: None,
        guard: Guard::Open,
        max_viewers: None,
        upstream_link: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((&ncuts, rest)) = rest.split_first() else { return };
    let ncuts = usize::from(ncuts % 5).min(rest.len());
    let (cuts, input) = rest.split_at(ncuts);
    let proxy = match flags & 3 {
        0 => Proxy::Off,
        1 => Proxy::Required { listener: 0 },
        _ => Proxy::Refused,
    };
    let routes = RouteTable::new(vec![route("/cam1", false), route("/shared", true)]);
    let rules = Rules {
        routes: &routes,
        head: HeadLimits { max_header_bytes: 1024, max_cookie_len: 64 },
        messages: MessageLimits { max_head_bytes: 1024, max_body_bytes: 1024 },
        web: flags & 4 != 0,
    };
    let home = match (flags >> 4) & 3 {
        0 => Home::Here,
        1 => Home::Shard(1),
        _ => Home::Stopped,
    };
    let mut gate = Gate { room: flags & 8 != 0, home, sessions: 0, connections: 0 };
    let peer: IpAddr = if flags & 64 != 0 { "10.1.1.1".parse().unwrap() } else { "127.0.0.1".parse().unwrap() };
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) * input.len() / 256).collect();
    points.sort_unstable();
    let mut g = Greeting::new(proxy);
    let mut verdict: Option<Verdict> = None;
    let mut at = 0;
    for end in points.into_iter().chain([input.len()]) {
        let mut v = g.on_bytes(&input[at..end], None, peer, &rules, &mut gate);
        at = end;
        while let Verdict::Admitted { .. } = v {
            assert!(matches!(proxy, Proxy::Required { .. }), "an address admitted without a balancer");
            v = g.on_bytes(&[], None, peer, &rules, &mut gate);
        }
        if v.is_final() {
            assert!(verdict.is_none(), "a second verdict: {v:?}");
            verdict = Some(v);
        }
    }
    let starts_session =
        matches!(verdict, Some(Verdict::TunnelGet { .. } | Verdict::PlainRtsp { .. } | Verdict::WebSocket { .. }));
    // A full relay counts nothing; a refusal may have asked (and been told no).
    assert!(!starts_session || gate.sessions == 1);
    assert!(gate.sessions <= 1 && gate.connections <= 1);
    if !matches!(proxy, Proxy::Required { .. }) {
        assert_eq!(gate.connections, 0, "an address counted without a balancer");
    }
    let handed_on = match &verdict {
        Some(Verdict::TunnelGet { rest, .. } | Verdict::TunnelPost { rest, .. } | Verdict::WebSocket { rest, .. }) => {
            rest.len()
        }
        Some(Verdict::PlainRtsp { bytes, .. }) => bytes.len(),
        Some(Verdict::MoveTo { head, .. }) => head.len(),
        _ => 0,
    };
    assert!(handed_on <= input.len());
});

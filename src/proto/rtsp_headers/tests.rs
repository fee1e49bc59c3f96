use super::*;
use proptest::prelude::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn transport() {
    let t = Transport::parse("RTP/AVP;unicast;client_port=5000-5001, RTP/AVP/TCP ; unicast ; interleaved = 2-3 ,,");
    assert_eq!(t.specs.len(), 2);
    assert_eq!(t.to_string(), "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=2-3");
    let tcp = &t.specs[1];
    assert!(tcp.protocol_is(&["rtp/avp/tcp"]) && tcp.is_interleaved_tcp() && tcp.is_for_playing());
    assert_eq!(tcp.interleaved(), Some((2, 3)));
    assert!(!t.specs[0].is_interleaved_tcp());
    assert_eq!(TransportSpec::interleaved_tcp(4, 5).to_string(), "RTP/AVP/TCP;unicast;interleaved=4-5");
    assert_eq!(
        TransportSpec::interleaved_tcp(0, 1).with("ssrc", Some("0000ABCD".into())).to_string(),
        "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=0000ABCD"
    );
    let record = Transport::parse("RTP/AVP/TCP;mode=\"RECORD\";interleaved=x-1;interleaved=6");
    assert!(!record.specs[0].is_for_playing());
    assert_eq!(record.specs[0].interleaved(), Some((6, 7)), "the first readable one");
    assert_eq!((channel_pair("255"), channel_pair(" 3 - 4 "), channel_pair("1-256")), (None, Some((3, 4)), None));
    // Moved from camera_session's tests with its `interleaved`.
    let interleaved = |v| Transport::parse(v).specs.iter().find_map(TransportSpec::interleaved);
    assert_eq!(interleaved("RTP/AVP/TCP;unicast;interleaved=4-5;ssrc=1"), Some((4, 5)));
    assert_eq!(interleaved("RTP/AVP/TCP;interleaved=6"), Some((6, 7)));
    assert_eq!(interleaved("RTP/AVP;unicast;client_port=1-2"), None);
}

#[test]
fn session() {
    // Moved from camera_session's tests with `parse_session`.
    let p = |v| {
        let h = SessionHeader::parse(v);
        (h.id, h.timeout)
    };
    assert_eq!(p("  708345999;timeout=60"), ("708345999", Some(60 * S)));
    assert_eq!(p("abc; Timeout = 5"), ("abc", Some(5 * S)));
    assert_eq!(p("abc;timeout=0"), ("abc", None));
    assert_eq!(p("abc;timeout=99999999"), ("abc", Some(MAX_SESSION_TIMEOUT)));
    assert_eq!(SessionHeader::id_of(" abc ;timeout=5"), "abc");
    assert_eq!(SessionHeader { id: "A1", timeout: Some(60 * S) }.to_string(), "A1;timeout=60");
    assert_eq!(SessionHeader { id: "A1", timeout: None }.to_string(), "A1");
}

#[test]
fn rtp_info() {
    // Moved from camera_session's tests with `parse_rtp_info`.
    let e = RtpInfo::parse("url=rtsp://c/a?x=1,2;seq=5;rtptime=6, url=trackID=2;seq=7").entries;
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].url.as_str(), e[0].seq, e[0].rtptime), ("rtsp://c/a?x=1,2", Some(5), Some(6)));
    assert_eq!((e[1].url.as_str(), e[1].seq, e[1].rtptime), ("trackID=2", Some(7), None));
    let info = RtpInfo { entries: e };
    assert_eq!(info.to_string(), "url=rtsp://c/a?x=1,2;seq=5;rtptime=6,url=trackID=2;seq=7");
}

#[test]
fn public() {
    let p = Public::parse("OPTIONS, DESCRIBE,get_parameter ,");
    assert_eq!(p.methods, ["OPTIONS", "DESCRIBE", "get_parameter"]);
    assert!(p.allows("GET_PARAMETER") && !p.allows("SET_PARAMETER"));
    assert_eq!(Public::of(&["OPTIONS", "PLAY"]).to_string(), "OPTIONS, PLAY");
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/._+-]{1,10}"
}

fn transport_spec() -> impl Strategy<Value = TransportSpec> {
    let param = (token(), prop::option::of("[A-Za-z0-9/._+\"-]{0,10}"));
    (token(), prop::collection::vec(param, 0..5)).prop_map(|(protocol, params)| TransportSpec { protocol, params })
}

proptest! {
    /// A header the relay writes parses back to the value it was written from, and a value
    /// parsed from any text formats to text that parses to it again.
    #[test]
    fn transport_round_trips(specs in prop::collection::vec(transport_spec(), 0..4), text in "[A-Za-z0-9/;,= _\"-]{0,40}") {
        let t = Transport { specs };
        prop_assert_eq!(Transport::parse(&t.to_string()), t);
        let parsed = Transport::parse(&text);
        prop_assert_eq!(Transport::parse(&parsed.to_string()), parsed);
    }

    #[test]
    fn session_round_trips(id in "[A-Za-z0-9$._+-]{1,20}", timeout in prop::option::of(1u64..=86_400), text in "[A-Za-z0-9;=_ -]{0,30}") {
        let h = SessionHeader { id: &id, timeout: timeout.map(Duration::from_secs) };
        let written = h.to_string();
        prop_assert_eq!(SessionHeader::parse(&written), h);
        let parsed = SessionHeader::parse(&text);
        let again = parsed.to_string();
        prop_assert_eq!(SessionHeader::parse(&again), parsed);
    }

    #[test]
    fn rtp_info_round_trips(
        entries in prop::collection::vec(("rtsp://[a-z0-9.:]{1,12}(/[A-Za-z0-9=?&,._-]{0,8}){0,3}", prop::option::of(any::<u16>()), prop::option::of(any::<u32>())), 0..4),
    ) {
        let entries: Vec<RtpInfoEntry> = entries.into_iter().map(|(url, seq, rtptime)| RtpInfoEntry { url, seq, rtptime }).collect();
        // A URL holding `,url=` would read as two entries: no peer writes one.
        prop_assume!(entries.iter().all(|e| !e.url.to_ascii_lowercase().contains(",url=")));
        let info = RtpInfo { entries };
        prop_assert_eq!(RtpInfo::parse(&info.to_string()), info);
    }

    #[test]
    fn public_round_trips(methods in prop::collection::vec("[A-Z_]{1,12}", 0..8)) {
        let p = Public { methods: methods.iter().map(String::as_str).collect() };
        let written = p.to_string();
        prop_assert_eq!(Public::parse(&written), p);
    }
}

// The hand-written readers these types replaced, as they were, compared on the headers peers
// write (canonical spacing: no blanks around `;`, `=` and `,`; a blank after `,` is allowed).
// They differed from the typed reading only on blanks inside a parameter (`mode = record`,
// which some ignored) and on `/tcp` or `interleaved=` appearing outside a protocol or a
// parameter name (inside a value).

mod old {
    /// shared_viewer.rs: `choose_channels`.
    pub fn shared_viewer_choose_channels(transport: &str, taken: &[u8]) -> Option<(u8, u8)> {
        let spec = transport.split(',').find(|spec| {
            let mut params = spec.split(';').map(str::trim);
            let proto = params.next().unwrap_or("");
            let tcp = proto.eq_ignore_ascii_case("RTP/AVP/TCP") || proto.eq_ignore_ascii_case("RTP/AVPF/TCP");
            tcp && params.all(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let play_mode = !k.eq_ignore_ascii_case("mode") || v.trim_matches('"').eq_ignore_ascii_case("play");
                !k.eq_ignore_ascii_case("multicast") && play_mode
            })
        })?;
        let asked = spec.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            if !k.eq_ignore_ascii_case("interleaved") {
                return None;
            }
            match v.split_once('-') {
                Some((a, b)) => Some((a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?)),
                None => {
                    let a: u8 = v.trim().parse().ok()?;
                    Some((a, a.checked_add(1)?))
                }
            }
        });
        match asked {
            Some((a, b)) if a != b && !taken.contains(&a) && !taken.contains(&b) => Some((a, b)),
            _ => (0..=127u8).map(|k| (2 * k, 2 * k + 1)).find(|(a, b)| !taken.contains(a) && !taken.contains(b)),
        }
    }

    /// demo_camera/connection.rs: `choose_tcp_transport`.
    pub fn demo_choose_tcp_transport(header: &str) -> Option<(u8, u8)> {
        header.split(',').find_map(|spec| {
            let mut params = spec.split(';').map(str::trim);
            let proto = params.next()?;
            if !proto.eq_ignore_ascii_case("RTP/AVP/TCP") {
                return None;
            }
            let mut channels = (0u8, 1u8);
            for p in params {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                match name.to_ascii_lowercase().as_str() {
                    "multicast" => return None,
                    "mode" if !value.trim_matches('"').eq_ignore_ascii_case("play") => return None,
                    "interleaved" => {
                        let (a, b) = match value.split_once('-') {
                            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                            None => {
                                let a: u8 = value.trim().parse().ok()?;
                                (a, a.checked_add(1)?)
                            }
                        };
                        if a == b {
                            return None;
                        }
                        channels = (a, b);
                    }
                    _ => {}
                }
            }
            Some(channels)
        })
    }

    /// camera_session.rs: `is_interleaved` and `interleaved`.
    pub fn camera_is_interleaved(transport: &str) -> bool {
        let t = transport.to_ascii_lowercase();
        t.contains("/tcp") || t.contains("interleaved=")
    }

    pub fn camera_interleaved(transport: &str) -> Option<(u8, u8)> {
        transport.split([';', ',']).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("interleaved") {
                return None;
            }
            match v.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => {
                    let a: u8 = v.trim().parse().ok()?;
                    Some((a, a.checked_add(1)?))
                }
            }
        })
    }

    /// session.rs: `steer_to_interleaved`'s filter (None: no TCP alternative).
    pub fn session_steer(transport: &str) -> Option<String> {
        let tcp: Vec<&str> = transport
            .split(',')
            .map(str::trim)
            .filter(|spec| {
                let lower = spec.to_ascii_lowercase();
                lower.contains("/tcp") || lower.contains("interleaved=")
            })
            .collect();
        (!tcp.is_empty()).then(|| tcp.join(","))
    }

    /// camera_session.rs's Public check, shared_viewer.rs's and the demo camera's Session id.
    pub fn lists_get_parameter(public: &str) -> bool {
        public.split(',').any(|m| m.trim().eq_ignore_ascii_case("GET_PARAMETER"))
    }

    pub fn session_id(v: &str) -> &str {
        v.split(';').next().unwrap_or("").trim()
    }
}

/// The relay's choices with the typed header, written as the callers now write them.
mod new {
    use super::super::*;

    pub fn shared_viewer_choose_channels(transport: &str, taken: &[u8]) -> Option<(u8, u8)> {
        crate::proto::shared_viewer::choose_channels(transport, taken)
    }

    pub fn demo_choose_tcp_transport(header: &str) -> Option<(u8, u8)> {
        crate::demo_camera::connection::choose_tcp_transport(header)
    }

    pub fn camera_channels(transport: &str) -> Option<Option<(u8, u8)>> {
        let t = Transport::parse(transport);
        t.specs
            .iter()
            .any(TransportSpec::is_interleaved_tcp)
            .then(|| t.specs.iter().find_map(TransportSpec::interleaved))
    }

    pub fn session_steer(transport: &str) -> Option<String> {
        let mut t = Transport::parse(transport);
        t.specs.retain(TransportSpec::is_interleaved_tcp);
        (!t.specs.is_empty()).then(|| t.to_string())
    }
}

/// Transport values as clients and cameras write them.
fn peer_transport() -> impl Strategy<Value = String> {
    let protocol = prop_oneof![
        Just("RTP/AVP/TCP"),
        Just("rtp/avp/tcp"),
        Just("RTP/AVPF/TCP"),
        Just("RTP/AVP"),
        Just("RTP/AVP/UDP"),
        Just("RTP/SAVP"),
        Just("x"),
        Just(""),
    ];
    let param = prop_oneof![
        Just("unicast".to_owned()),
        Just("multicast".to_owned()),
        Just("mode=play".to_owned()),
        Just("mode=\"PLAY\"".to_owned()),
        Just("mode=record".to_owned()),
        Just("mode=\"RECORD\"".to_owned()),
        Just("client_port=5000-5001".to_owned()),
        Just("ssrc=0A1B2C3D".to_owned()),
        Just("ttl=1".to_owned()),
        "interleaved=[0-9]{1,3}(-[0-9]{1,3})?",
        "INTERLEAVED=[0-9x]{1,3}",
    ];
    let spec = (protocol, prop::collection::vec(param, 0..4)).prop_map(|(p, params)| {
        let mut s = p.to_owned();
        for x in params {
            s.push(';');
            s.push_str(&x);
        }
        s
    });
    (prop::collection::vec(spec, 1..4), any::<bool>())
        .prop_map(|(specs, spaced)| specs.join(if spaced { ", " } else { "," }))
}

proptest! {
    #[test]
    fn typed_transport_chooses_as_the_old_readers_did(t in peer_transport(), taken in prop::collection::vec(0u8..8, 0..4)) {
        prop_assert_eq!(new::shared_viewer_choose_channels(&t, &taken), old::shared_viewer_choose_channels(&t, &taken));
        prop_assert_eq!(new::demo_choose_tcp_transport(&t), old::demo_choose_tcp_transport(&t));
        let old_camera = old::camera_is_interleaved(&t).then(|| old::camera_interleaved(&t));
        prop_assert_eq!(new::camera_channels(&t), old_camera);
        prop_assert_eq!(new::session_steer(&t), old::session_steer(&t));
    }

    #[test]
    fn typed_session_and_public_read_as_the_old_readers_did(v in "[A-Za-z0-9;=, _-]{0,30}") {
        prop_assert_eq!(SessionHeader::id_of(&v), old::session_id(&v));
        prop_assert_eq!(SessionHeader::parse(&v).id, old::session_id(&v));
        prop_assert_eq!(Public::parse(&v).allows("GET_PARAMETER"), old::lists_get_parameter(&v));
    }
}

//! A small SDP reader (RFC 8866) for what a shared camera session needs from a camera's
//! DESCRIBE: each `m=` section's control URL, payload type, encoding, clock rate and the
//! parameter sets the camera announces out of band (`sprop-parameter-sets`, `sprop-vps/sps/pps`).
//!
//! It is lenient like the cameras it reads (LF or CRLF lines, unknown attributes, fmtp values
//! with spaces) and never fails: a description it cannot use has no usable tracks.

use base64::Engine;
use bytes::Bytes;

use super::keyframe::{Classifier, VideoCodec};

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpTrack {
    /// `video`, `audio`, `application`, ...
    pub media: String,
    /// `RTP/AVP`, ...
    pub protocol: String,
    /// The first format of the `m=` line.
    pub payload_type: Option<u8>,
    /// `a=control:` as written (relative or absolute).
    pub control: Option<String>,
    /// From `a=rtpmap:` (or the static payload type table): `H264`, `PCMA`, `MPEG4-GENERIC`.
    pub encoding: Option<String>,
    pub clock_rate: Option<u32>,
    /// `a=fmtp:` parameters of the payload type, as written.
    pub fmtp: Option<String>,
}

impl SdpTrack {
    /// The video codec, when the relay can find keyframes in it.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        VideoCodec::from_encoding(self.encoding.as_deref()?)
    }

    /// How to read this track's packets, for H.264/H.265 tracks.
    pub fn classifier(&self) -> Option<Classifier> {
        let codec = self.video_codec()?;
        let donl = self.fmtp_param("sprop-max-don-diff").and_then(|v| v.parse::<u32>().ok()).is_some_and(|d| d > 0);
        Some(Classifier { codec, donl })
    }

    /// One `a=fmtp:` parameter (`name=value`, names compared without case).
    pub fn fmtp_param(&self, name: &str) -> Option<&str> {
        self.fmtp.as_deref()?.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The parameter sets announced in the SDP, decoded, in decoding order (H.264: SPS, PPS as
    /// listed; H.265: VPS, SPS, PPS). Entries that are not base64 are skipped.
    pub fn parameter_sets(&self) -> Vec<Bytes> {
        let names: &[&str] = match self.video_codec() {
            Some(VideoCodec::H264) => &["sprop-parameter-sets"],
            Some(VideoCodec::H265) => &["sprop-vps", "sprop-sps", "sprop-pps"],
            None => return Vec::new(),
        };
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        names
            .iter()
            .filter_map(|n| self.fmtp_param(n))
            .flat_map(|v| v.split(','))
            .filter_map(|b64| lenient.decode(b64.trim()).ok())
            .filter(|nal| !nal.is_empty())
            .map(Bytes::from)
            .collect()
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sdp {
    /// The session-level `a=control:` (the aggregate URL; often `*`).
    pub control: Option<String>,
    pub tracks: Vec<SdpTrack>,
}

/// Payload types with a static meaning (RFC 3551 §6) that cameras use without `a=rtpmap`.
fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        14 => ("MPA", 90000),
        26 => ("JPEG", 90000),
        32 => ("MPV", 90000),
        33 => ("MP2T", 90000),
        _ => return None,
    })
}

impl Sdp {
    pub fn parse(text: &str) -> Sdp {
        let mut sdp = Sdp::default();
        // rtpmap/fmtp lines name a payload type; only the section's first format is kept.
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(m) = line.strip_prefix("m=") {
                let mut parts = m.split_ascii_whitespace();
                let media = parts.next().unwrap_or("").to_owned();
                let _port = parts.next();
                let protocol = parts.next().unwrap_or("").to_owned();
                let payload_type = parts.next().and_then(|f| f.parse().ok());
                let (encoding, clock_rate) = match payload_type.and_then(static_payload) {
                    Some((e, r)) => (Some(e.to_owned()), Some(r)),
                    None => (None, None),
                };
                sdp.tracks.push(SdpTrack { media, protocol, payload_type, encoding, clock_rate, ..Default::default() });
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else { continue };
            let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
            let Some(track) = sdp.tracks.last_mut() else {
                if name == "control" {
                    sdp.control = Some(value.trim().to_owned());
                }
                continue;
            };
            match name {
                "control" => track.control = Some(value.trim().to_owned()),
                "rtpmap" | "fmtp" => {
                    let (pt, rest) = value.trim().split_once([' ', '\t']).unwrap_or((value.trim(), ""));
                    if pt.parse::<u8>().ok() != track.payload_type {
                        continue;
                    }
                    if name == "fmtp" {
                        track.fmtp = Some(rest.trim().to_owned());
                    } else {
                        // encoding/clock rate[/channels]
                        let mut it = rest.trim().split('/');
                        track.encoding = it.next().map(str::to_owned).filter(|e| !e.is_empty());
                        track.clock_rate = it.next().and_then(|r| r.trim().parse().ok());
                    }
                }
                _ => {}
            }
        }
        sdp
    }
}

/// Resolves a control attribute against the base URL the way cameras expect (and FFmpeg and
/// live555 do): `*` or nothing is the base itself, an absolute URL stands alone, anything else is
/// appended after a `/` (not RFC 3986 resolution, which would replace the last path segment of a
/// base like `rtsp://cam/H264?channel=1` that cameras mean as a directory).
pub fn join_control(base: &str, control: Option<&str>) -> String {
    match control.map(str::trim) {
        None | Some("") | Some("*") => base.to_owned(),
        Some(c) if c.contains("://") => c.to_owned(),
        Some(c) => {
            let c = c.trim_start_matches('/');
            if base.ends_with('/') { format!("{base}{c}") } else { format!("{base}/{c}") }
        }
    }
}

/// `text` with the `m=` sections whose index is not `keep`n removed (the session part and the
/// kept sections byte for byte, line endings included).
pub fn keep_sections(text: &str, keep: impl Fn(usize) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut section: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        if line.starts_with("m=") {
            section = Some(section.map_or(0, |s| s + 1));
        }
        if section.is_none_or(&keep) {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtsp::{MessageLimits, parse_message};

    fn fixture_sdp(name: &str) -> Sdp {
        let bytes = crate::test_fixtures::bytes(&format!("cameras/{name}"));
        let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
        Sdp::parse(std::str::from_utf8(&m.body).unwrap())
    }

    #[test]
    fn hikvision_h264_and_onvif_metadata() {
        let sdp = fixture_sdp("hikvision_describe.txt");
        assert_eq!(
            sdp.control.as_deref(),
            Some("rtsp://192.168.5.106:554/Streaming/Channels/101/?transportmode=unicast&profile=Profile_1")
        );
        assert_eq!(sdp.tracks.len(), 2);
        let v = &sdp.tracks[0];
        assert_eq!((v.media.as_str(), v.payload_type, v.clock_rate), ("video", Some(96), Some(90000)));
        assert_eq!(v.video_codec(), Some(VideoCodec::H264));
        let ps = v.parameter_sets();
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0][0] & 0x1f, ps[1][0] & 0x1f), (7, 8), "SPS then PPS");
        let m = &sdp.tracks[1];
        assert_eq!((m.encoding.as_deref(), m.video_codec()), (Some("vnd.onvif.metadata"), None));
        assert!(m.control.as_deref().unwrap().ends_with("trackID=3?transportmode=unicast&profile=Profile_1"));
    }

    #[test]
    fn dahua_h265_parameter_sets_in_vps_sps_pps_order() {
        let sdp = fixture_sdp("dahua_describe_h265_pcma.txt");
        assert_eq!(sdp.control.as_deref(), Some("*"));
        let v = &sdp.tracks[0];
        assert_eq!(v.video_codec(), Some(VideoCodec::H265));
        assert_eq!(v.classifier(), Some(Classifier { codec: VideoCodec::H265, donl: false }));
        let types: Vec<u8> = v.parameter_sets().iter().map(|n| (n[0] >> 1) & 0x3f).collect();
        assert_eq!(types, vec![32, 33, 34]);
        let a = &sdp.tracks[1];
        assert_eq!(
            (a.encoding.as_deref(), a.clock_rate, a.control.as_deref()),
            (Some("PCMA"), Some(8000), Some("trackID=1"))
        );
    }

    #[test]
    fn every_camera_description_has_tracks_with_controls() {
        for (name, bytes) in crate::test_fixtures::dir("cameras") {
            if !name.contains("describe") {
                continue;
            }
            let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
            let sdp = Sdp::parse(std::str::from_utf8(&m.body).unwrap());
            assert!(!sdp.tracks.is_empty(), "{name}");
            for t in &sdp.tracks {
                assert!(t.payload_type.is_some() && t.encoding.is_some(), "{name}: {t:?}");
                if t.video_codec().is_some() {
                    assert_eq!(t.clock_rate, Some(90000), "{name}");
                }
            }
        }
    }

    #[test]
    fn static_payload_types_without_rtpmap_and_other_payload_types_ignored() {
        let sdp = Sdp::parse(
            "v=0\nm=audio 0 RTP/AVP 0\na=control:a\nm=video 0 RTP/AVP 96 97\na=rtpmap:97 H265/90000\na=rtpmap:96 H264/90000\na=fmtp:97 x=1\n",
        );
        assert_eq!((sdp.tracks[0].encoding.as_deref(), sdp.tracks[0].clock_rate), (Some("PCMU"), Some(8000)));
        assert_eq!(sdp.tracks[1].video_codec(), Some(VideoCodec::H264));
        assert_eq!(sdp.tracks[1].fmtp, None);
    }

    #[test]
    fn controls_join_like_cameras_expect() {
        let base = "rtsp://cam/cam/realmonitor?channel=1&subtype=2/";
        assert_eq!(join_control(base, Some("trackID=0")), "rtsp://cam/cam/realmonitor?channel=1&subtype=2/trackID=0");
        assert_eq!(join_control("rtsp://cam:5050/H264?ch=1", Some("video")), "rtsp://cam:5050/H264?ch=1/video");
        assert_eq!(join_control("rtsp://cam/s/", Some("*")), "rtsp://cam/s/");
        assert_eq!(join_control("rtsp://cam/s", None), "rtsp://cam/s");
        assert_eq!(join_control("rtsp://cam/s", Some("rtsp://other/x")), "rtsp://other/x");
    }

    #[test]
    fn keep_sections_drops_whole_m_sections() {
        let text =
            "v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=control:v\r\nm=audio 0 RTP/AVP 8\r\na=control:a\r\n";
        assert_eq!(keep_sections(text, |_| true), text);
        assert_eq!(keep_sections(text, |i| i == 0), "v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=control:v\r\n");
        assert_eq!(keep_sections(text, |i| i == 1), "v=0\r\na=control:*\r\nm=audio 0 RTP/AVP 8\r\na=control:a\r\n");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_read_without_panicking(text in "(m=|a=|v=|[a-z0-9 :=/;,.*\\r\\n-]){0,40}", keep: u64) {
            let sdp = Sdp::parse(&text);
            for t in &sdp.tracks {
                let _ = (t.parameter_sets(), t.classifier(), t.fmtp_param("x"));
            }
            let kept = keep_sections(&text, |i| keep >> (i % 64) & 1 == 1);
            proptest::prop_assert!(kept.len() <= text.len());
        }
    }

    #[test]
    fn donl_from_fmtp() {
        let sdp = Sdp::parse("m=video 0 RTP/AVP 96\na=rtpmap:96 H265/90000\na=fmtp:96 sprop-max-don-diff=2\n");
        assert!(sdp.tracks[0].classifier().unwrap().donl);
    }
}

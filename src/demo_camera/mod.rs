//! The built-in synthetic camera: a small RTSP/1.0 server (TCP interleaved transport only) that
//! plays an embedded H.264 clip in an endless loop, in real time, at `rtsp://HOST:PORT/demo`.
//!
//! It lets `rtsp-tunnel-relay` with no arguments show a picture at once, and gives tests a
//! standards-following camera to relay. Layout:
//! - [`h264`]: Annex B splitting, access units, SDP parameters of the clip.
//! - [`rtp`]: RFC 6184 packetisation and RTCP sender reports.
//! - [`connection`]: the RTSP dialogue and media schedule of one client, without I/O.
//! - [`server`]: the listener and one thread per client moving bytes for [`connection`].

pub mod connection;
pub mod h264;
pub mod rtp;
pub mod server;

pub use server::DemoCamera;

/// The embedded clip: 4 s of 640x360 25 fps Constrained Baseline H.264, a keyframe every second
/// (see `assets/README.md` for how it was made).
pub const CLIP_H264: &[u8] = include_bytes!("../../assets/demo.h264");

/// The embedded clip, parsed once.
pub fn clip() -> Result<&'static h264::Clip<'static>, h264::H264Error> {
    static CLIP: std::sync::OnceLock<Result<h264::Clip<'static>, h264::H264Error>> = std::sync::OnceLock::new();
    CLIP.get_or_init(|| h264::Clip::parse(CLIP_H264)).as_ref().map_err(Clone::clone)
}

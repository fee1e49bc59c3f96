//! The sans-IO protocol core: every type here is fed bytes (and the current time, where it
//! matters) and hands back bytes and actions. Nothing here opens a socket or reads a clock.

pub mod api_token;
pub mod base64_stream;
#[cfg(any(test, fuzzing))]
pub mod camera_audit;
pub mod camera_demand;
pub mod camera_health;
pub mod camera_host_sessions;
pub mod camera_request;
pub mod camera_session;
pub mod camera_source;
pub mod camera_tunnel;
pub mod digest;
pub mod external_auth;
pub mod fanout_policy;
pub mod frame_split;
pub mod gop_budget;
pub mod gop_cache;
pub mod greeting;
pub mod http_head;
pub mod interleaved;
pub mod keyframe;
pub mod origin;
pub mod outcome;
pub mod permissions;
pub mod proxy_header;
pub mod rewrite;
pub mod rng;
pub mod room;
pub mod route;
pub mod rtp_continuity;
pub mod rtsp;
pub mod rtsp_headers;
pub mod rtsp_url;
pub mod sdp;
pub mod session;
pub mod shared_fanout;
pub mod shared_route;
pub mod shared_viewer;
pub mod tunnel;
pub mod upstream_auth;
pub mod upstream_link;
pub mod viewer_auth;
pub mod viewer_caps;
pub mod websocket;
